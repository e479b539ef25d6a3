"""Expressions and control (issue 11, item 3): functions, repeat counts from names, `if`,
`residual if`, `in_channels` and `for` tables; each with its located errors."""

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import skdsl
from skdsl.lang import expand
from skdsl import testing
from skdsl.testing.constructs import KINDS, rewrites

ROOT = Path(__file__).resolve().parents[2]

NETWORK = """\
{params}
network n:
    input 3x16x16
    classes 10
    stage s:
{body}
"""


def build(body: str, params: str = "", blocks: str = "") -> skdsl.Network:
    lines = "\n".join(f"        {line}" for line in body.splitlines())
    return skdsl.parse(blocks + NETWORK.format(params=params, body=lines))


def widths(network_or_block) -> list[int]:
    """The output widths of the convs of a block, or of a network's first stage."""
    body = getattr(network_or_block, "body", None) or network_or_block.stages[0].body
    return [item.out_channels for item in body if item.kind == "conv" and item.out_channels]


def error_of(text: str) -> skdsl.SpecError:
    with pytest.raises(skdsl.SpecError) as caught:
        skdsl.parse(text)
    return caught.value


# -- functions -------------------------------------------------------------------------------


def timm_make_divisible(v, divisor, min_value=None, round_limit=.9):
    """timm.layers.helpers.make_divisible, copied as the reference."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


@given(st.floats(0.01, 5000, allow_nan=False), st.integers(1, 64))
def test_make_divisible_is_timms(value, divisor):
    assert expand.make_divisible(value, divisor) == timm_make_divisible(value, divisor)


def test_functions_make_widths_of_a_width_multiplier():
    network = build("conv 3x3, int(64 * k)\nconv 3x3, round(k * 37)\n"
                    "conv 1x1, make_divisible(64 * k, 8)\nconv 1x1, make_divisible(3, 8, 4)\n"
                    "conv 1x1, 70 // 4 * 4", params="param k = 0.35")
    assert widths(network) == [22, 13, 24, 4, 68]


def test_an_override_of_the_multiplier_changes_the_widths():
    text = NETWORK.format(params="param k = 1.0", body="        conv 7x7, int(64*k), stride 2")
    assert widths(skdsl.parse(text)) == [64]
    assert widths(skdsl.parse(text, overrides={"k": 1.5})) == [96]


def test_a_fractional_width_suggests_the_functions():
    error = error_of(NETWORK.format(params="param k = 1.0", body="        conv 7x7, 64*k"))
    assert error.code == "SK203" and "got 64.0" in error.message
    assert "int(" in error.hint and "round(" in error.hint and "make_divisible(" in error.hint
    assert (error.span.line, error.span.column, error.span.end_column) == (6, 19, 23)
    # A wrong integer gets no such hint: rounding would not help.
    assert error_of(NETWORK.format(params="", body="        conv 7x7, 0")).hint is None


@pytest.mark.parametrize("call, code, column, words", [
    ("floor(2.5)", "SK230", 19, "unknown function 'floor'"),
    ("make_divisable(20, 8)", "SK230", 19, "unknown function 'make_divisable'"),
    ("int()", "SK204", 19, "int() needs 1 argument, got 0"),
    ("round(2.5, 1)", "SK207", 30, "too many arguments for round()"),
    ("make_divisible(20)", "SK204", 19, "make_divisible() needs 2 arguments"),
    ("make_divisible(20, 0)", "SK203", 38, "make_divisible's divisor must be a positive"),
    ("int(relu)", "SK201", 23, "unknown name 'relu'"),
    ("int(1e300)", "SK213", 19, "too large"),
])
def test_function_mistakes_are_located(call, code, column, words):
    error = error_of(NETWORK.format(params="", body=f"        conv 3x3, {call}"))
    assert error.code == code and words in error.message
    assert error.span.column == column


def test_an_unknown_function_suggests_the_near_one():
    error = error_of(NETWORK.format(params="", body="        conv 3x3, make_divisable(20, 8)"))
    assert "make_divisible" in error.hint


# -- repeat counts from names -------------------------------------------------------------------

PAIR = "block pair(c):\n    conv 3x3, c\n    conv 3x3, c\n"
TOWER = PAIR + "block tower(c, n):\n    pair(c) x n\n"


def test_repeat_counts_read_params_and_formals():
    network = skdsl.parse(TOWER + NETWORK.format(
        params="param depth = 3", body="        pair(8) x depth\n        tower(8, depth - 1)"))
    names = [item.name for item in network.stages[0].body]
    assert names == ["block1", "block2", "block3", "block4"]
    assert [item.name for item in network.stages[0].body[3].body] == ["block1", "block2"]
    staged = skdsl.parse(PAIR + "param depth = 2\nnetwork n:\n    input 3x8x8\n"
                         "    stage s x depth: pair(8)\n", overrides={"depth": 4})
    assert len(staged.stages[0].body) == 4


@pytest.mark.parametrize("depth, code, words", [
    ("0", "SK203", "a repeat count must be a positive integer, got 0"),
    ("2.5", "SK203", "got 2.5"),
    ("20000", "SK214", "repeat count 20,000 is over the limit of 10,000"),
    ("relu", "SK201", "unknown name 'relu'"),
])
def test_a_bad_repeat_count_from_a_param_is_located_at_its_value(depth, code, words):
    error = error_of(PAIR + NETWORK.format(params=f"param depth = {depth}",
                                           body="        pair(8) x depth"))
    assert error.code == code and words in error.message
    assert error.span.line == 4  # the param's value chose it


def test_an_unknown_repeat_name_suggests_the_known_ones():
    error = error_of(PAIR + NETWORK.format(params="param depth = 2", body="        pair(8) x dept"))
    assert error.code == "SK201" and error.hint == "did you mean 'depth'?"
    assert (error.span.line, error.span.column, error.span.end_column) == (9, 19, 23)


# -- if and residual if -------------------------------------------------------------------------

UNIT = """\
block unit(c_in, c, stride=1, t=6):
    residual act none if stride == 1 and c_in == c:
        if t != 1:
            conv 1x1, c_in * t
        dwconv 3x3, stride stride
        conv 1x1, c, act none
"""


def test_residual_if_and_if_choose_the_statements():
    network = skdsl.parse(UNIT + NETWORK.format(params="", body="        conv 3x3, 16\n"
                                                "        unit(16, 16)\n        unit(16, 24, t=1)"))
    kept, plain = network.stages[0].body[1].body, network.stages[0].body[2].body
    assert [item.kind for item in kept] == ["residual"]
    assert [item.kind for item in kept[0].body] == ["conv", "conv", "conv"]
    assert [item.name for item in plain] == ["conv1", "conv2"]  # no expansion, no residual
    assert skdsl.analyze(network).params > 0


def test_else_and_the_operators():
    blocks = ("block b(c, mode=relu):\n"
              "    if mode == RELU and not c < 8 and c != 9 or c >= 100:\n"
              "        conv 1x1, c\n"
              "    else:\n"
              "        conv 1x1, c + 1\n"
              "        conv 1x1, c + 2\n")
    network = skdsl.parse(blocks + NETWORK.format(
        params="", body="        b(8)\n        b(4)\n        b(9, mode=silu)"))
    assert [widths(block) for block in network.stages[0].body] == [[8], [5, 6], [10, 11]]


@settings(max_examples=60, deadline=None)
@given(testing.conditions())
def test_conditions_agree_with_python(drawn):
    condition, values, truth = drawn
    blocks = f"block t(a, b):\n    if {condition}:\n        conv 1x1, 8\n    else:\n        gap\n"
    network = skdsl.parse(blocks + NETWORK.format(params="", body="        t({a}, {b})".format(
        **values)))
    assert (network.stages[0].body[0].body[0].kind == "conv") == truth


@settings(max_examples=60, deadline=None)
@given(testing.width_expressions())
def test_width_expressions_give_the_width_a_reader_computes(drawn):
    text, width = drawn
    assert widths(build(f"conv 1x1, {text}")) == [width]


@pytest.mark.parametrize("condition, code, words", [
    ("strde == 1", "SK201", "unknown name 'strde'"),
    ("stride", "SK231", "a condition is true or false, got 'relu'"),
    ("stride < 2", "SK201", "unknown name 'relu'"),  # a word where a number is compared
    ("0.5", "SK231", "got 0.5"),
])
def test_condition_mistakes_are_located(condition, code, words):
    blocks = f"block u(stride=1):\n    if {condition}:\n        conv 1x1, 8\n"
    error = error_of(blocks + NETWORK.format(params="", body="        u(stride=relu)"))
    assert error.code == code and words in error.message


def test_a_block_no_network_calls_still_checks_what_does_not_depend_on_formals():
    text = ("block u(c):\n    if c == 1:\n        conv 1x1, c\n    if 1 == 1:\n"
            "        conv 1x1, 8, stride 0\n" + NETWORK.format(params="", body="        gap"))
    error = error_of(text)
    assert error.code == "SK203" and error.span.line == 5
    fine = text.replace("stride 0", "stride 1")
    assert skdsl.parse(fine).stages[0].body[0].kind == "global_pool"


def test_an_else_needs_an_if():
    error = error_of(NETWORK.format(params="", body="        else:\n            gap"))
    assert error.code == "SK212" and "without an `if`" in error.message
    assert (error.span.line, error.span.column) == (6, 9)


# -- in_channels ----------------------------------------------------------------------------------

INVERTED = """\
block inverted(c, stride=1, t=6):
    residual act none if stride == 1 and in_channels == c:
        if t != 1:
            conv 1x1, in_channels * t, act relu6
        dwconv 3x3, stride stride, act relu6
        conv 1x1, c, act none
block pair(c):
    inverted(c, stride=2)
    inverted(c) x 2
"""


def test_in_channels_is_the_input_of_each_call_and_of_each_repeat():
    network = skdsl.parse(INVERTED + NETWORK.format(params="", body=(
        "        conv 3x3, 8\n        inverted(8, t=1)\n        inverted(16, stride=2) x3\n"
        "        pair(24)")))
    body = network.stages[0].body
    assert [item.kind for item in body[1].body] == ["residual"]
    first, second, third = body[2:5]
    assert widths(first) == [48, 16]  # read 8 channels: no residual
    assert [item.kind for item in second.body] == ["residual"]
    assert widths(second.body[0]) == widths(third.body[0]) == [96, 16]  # read 16
    nested = body[5].body
    assert widths(nested[0]) == [96, 24] and widths(nested[1].body[0]) == [144, 24]
    report = skdsl.analyze(network)
    assert report.nodes["s.block5.block2.conv1.conv"].params == 24 * 144


def test_a_formal_named_in_channels_takes_precedence():
    blocks = "block u(in_channels):\n    conv 1x1, in_channels\n"
    network = skdsl.parse(blocks + NETWORK.format(params="", body="        u(5)"))
    assert widths(network.stages[0].body[0]) == [5]


def test_in_channels_inside_a_branch_is_a_located_error():
    blocks = "block widen(t):\n    conv 1x1, in_channels * t\n"
    error = error_of(blocks + NETWORK.format(params="", body="        conv 3x3, 8\n"
                                             "        branch b: widen(2)"))
    assert error.code == "SK232" and (error.span.line, error.span.column) == (2, 15)


def test_a_spaced_literal_repeat_reads_as_the_count():
    network = skdsl.parse(PAIR + NETWORK.format(params="", body="        pair(8) x 2"))
    assert len(network.stages[0].body) == 2


# -- for over a table ---------------------------------------------------------------------------


def test_for_unrolls_its_body_once_per_row_in_the_enclosing_scope():
    blocks = ("block stack(w):\n    for c, n, s in [\n            (w, 1, 1),\n"
              "            (w * 2, 2, 2),\n        ]:\n        if s == 2:\n"
              "            conv 1x1, c\n        pair(c) x n\n")
    network = skdsl.parse(PAIR + blocks + NETWORK.format(params="", body="        stack(8)"))
    body = network.stages[0].body[0].body
    assert [item.name for item in body] == ["block1", "conv", "block2", "block3"]
    assert [widths(item) if item.kind == "block" else item.out_channels for item in body] == [
        [8, 8], 16, [16, 16], [16, 16]]


def test_a_for_table_row_of_the_wrong_length_is_located():
    error = error_of(NETWORK.format(params="", body="        for c, s in (16, 1), (32, 2, 1):\n"
                                    "            conv 3x3, c, stride s"))
    assert error.code == "SK233" and (error.span.line, error.span.column) == (6, 30)
    twice = error_of(NETWORK.format(params="", body="        for c, c in (16, 1):\n"
                                    "            conv 3x3, c"))
    assert twice.code == "SK205" and twice.span.column == 16


def test_a_for_value_error_points_at_the_table():
    error = error_of(NETWORK.format(params="", body="        for c in (16), (0):\n"
                                    "            conv 3x3, c"))
    assert error.code == "SK203" and (error.span.line, error.span.column) == (6, 25)


def test_mobilenet_v2_from_its_table_has_torchvisions_parameter_count():
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    start = text.rindex("```sk\n", 0, text.index("network mobilenet_v2")) + len("```sk\n")
    report = skdsl.analyze(skdsl.parse(text[start:text.index("```", start)]))
    assert report.params == 3_504_872  # torchvision.models.mobilenet_v2().parameters()


def test_for_around_stages_names_them_from_the_table():
    text = (PAIR + "network n:\n    input 3x16x16\n    classes 10\n"
            "    stage stem: conv 3x3, 8\n"
            "    for name, c, n in (body1, 8, 1), (body2, 16, 2):\n"
            "        stage name x n: pair(c)\n"
            "    stage head:\n        gap\n        fc classes\n")
    network = skdsl.parse(text)
    assert [stage.name for stage in network.stages] == ["stem", "body1", "body2", "head"]
    assert [len(stage.body) for stage in network.stages[1:3]] == [1, 2]
    assert widths(network.stages[2].body[1]) == [16, 16]
    numbered = error_of(text.replace("(body1, 8, 1)", "(7, 8, 1)"))
    assert numbered.code == "SK203" and "a stage's name is a word" in numbered.message
    assert (numbered.span.line, numbered.span.column) == (8, 24)
    twice = error_of(text.replace("(body2, 16, 2)", "(body1, 16, 2)"))
    assert twice.code == "SK205" and "two stages are named 'body1'" in twice.message


# -- every construct means its plain spelling (skdsl.testing.constructs) ------------------------


def counts(text: str):
    report = skdsl.analyze(skdsl.parse(text))
    return (report.params, report.mult_adds, report.output), [layer.name for layer in report.layers]


@pytest.mark.parametrize("kind", KINDS)
def test_each_construct_counts_as_its_plain_spelling(kind):
    @settings(max_examples=12, deadline=None, database=None)
    @given(rewrites(kinds=(kind,)))
    def check(drawn):
        (numbers, names), (plain_numbers, plain_names) = counts(drawn.text), counts(drawn.plain)
        assert numbers == plain_numbers
        assert names == plain_names or not drawn.same_names

    check()


@pytest.mark.parametrize("kind", KINDS)
def test_each_construct_compiles_exactly_and_computes_its_plain_spelling(kind):
    torch = pytest.importorskip("torch")

    @settings(max_examples=2, deadline=None, database=None)
    @given(rewrites(kinds=(kind,)))
    def check(drawn):
        testing.assert_compiles_exactly(drawn.text)  # counts == the compiled module
        outputs = []
        for text in (drawn.text, drawn.plain):
            network = skdsl.parse(text)
            torch.manual_seed(0)  # the same weights for both, created in the same order
            model = skdsl.compile(network).eval()
            image = torch.randn(1, *network.input, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                outputs.append(model(image))
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-6)

    check()


def test_an_unknown_construct_is_refused():
    with pytest.raises(ValueError, match="unknown construct elif"):
        rewrites(kinds=("if", "elif"))
