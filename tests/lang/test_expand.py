"""Expansion: imports, parameters, templates, repeats, names and values that remember their text."""

import pytest

import skdsl
from skdsl.core import spec as S
from skdsl.base.errors import SpecError

HEADER = "network n:\n    input 3x32x32\n    classes 10\n"


def expand(text, **overrides) -> S.Network:
    return skdsl.parse(text, "t.sk", overrides or None)


def error_of(text, **overrides) -> SpecError:
    with pytest.raises(SpecError) as caught:
        expand(text, **overrides)
    return caught.value


def test_sknet50_expands_to_the_papers_structure():
    spec = skdsl.load("specs/sknet50.sk")
    assert [s.name for s in spec.stages] == ["conv1", "conv2", "conv3", "conv4", "conv5", "head"]
    conv3 = spec.stages[2].body
    assert [b.name for b in conv3] == ["block1", "block2", "block3", "block4"]
    assert conv3[0].arguments["stride"] == 2 and conv3[1].arguments["stride"] == 1
    unit = conv3[0].body[0]
    assert isinstance(unit, S.Residual)
    assert [item.name for item in unit.body] == ["conv1", "sk", "conv2"]
    sk = unit.body[1]
    assert (sk.out_channels, sk.stride, sk.attention_width) == (256, 2, 32)
    assert [(b.kernel, b.dilation, b.groups) for b in sk.branches] == [((3, 3), 1, 32),
                                                                      ((3, 3), 2, 32)]
    assert spec.paper.params_millions == pytest.approx(27.5) and spec.paper.gflops == 4.47


def test_stage_repeat_equals_call_repeat():
    a = expand('use "std/resnext.sk"\n' + HEADER + "    stage s x3: resnext_unit(16, 32, G=4)\n")
    b = expand('use "std/resnext.sk"\n' + HEADER + "    stage s: resnext_unit(16, 32, G=4) x3\n")
    assert a.model_dump() == b.model_dump()


def test_defaults_may_use_earlier_arguments_and_file_parameters():
    spec = expand("param base = 4\nblock unit(width, out=width*base):\n    conv 1x1, out\n"
                  + HEADER + "    stage s: unit(8)\n")
    assert spec.stages[0].body[0].body[0].out_channels == 32
    assert spec.parameters == {"base": 4}


def test_overrides_replace_declared_parameters():
    text = "param M = 2\n" + HEADER + "    stage s: SUM[M=M, G=1], 8\n"
    assert len(expand(text, M=3).stages[0].body[0].branches) == 3
    assert len(expand(text, M="4").stages[0].body[0].branches) == 4
    assert error_of(text, N=3).code == "SK210"
    assert error_of(text, N=3).message.startswith("overrides N: this spec declares no parameter")
    assert "did you mean 'M'" in error_of(text, m=3).hint
    assert error_of(text, M="three").code == "SK210"


def test_names_are_numbered_only_when_a_kind_repeats():
    spec = expand(HEADER + "    stage s:\n        conv 3x3, 8\n        maxpool 2x2\n"
                  "        conv 3x3, 8\n        SE[r=2]\n        fc 10\n")
    assert [i.name for i in spec.stages[0].body] == ["conv1", "pool", "conv2", "se", "fc"]


def test_residual_is_transparent_for_names():
    spec = expand(HEADER + "    stage s:\n        residual:\n            conv 3x3, 8\n"
                  "        residual:\n            conv 3x3, 8\n")
    first, second = spec.stages[0].body
    assert (first.body[0].name, second.body[0].name) == ("conv1", "conv2")
    assert (first.add_name, second.add_name, first.act_name) == ("add1", "add2", "act1")


def test_labels_name_layers_and_repeated_labels_are_numbered():
    spec = expand("block u(c):\n    conv 1x1, c\n" + HEADER +
                  "    stage s:\n        stem = conv 3x3, 8\n        down = u(8) x2\n")
    assert [i.name for i in spec.stages[0].body] == ["stem", "down1", "down2"]


def test_explicit_sk_branches_and_defaults():
    spec = expand(HEADER + "    stage s:\n        SK[G=4, r=2, L=4, d=3], 8, stride 2:\n"
                  "            3x3\n            5x5, G=8, D=1\n")
    sk = spec.stages[0].body[0]
    assert [(b.kernel, b.groups) for b in sk.branches] == [((3, 3), 4), ((5, 5), 8)]
    assert (sk.reduction_ratio, sk.min_attention_width, sk.attention_width) == (2, 4, 3)


def test_imports_relative_and_standard(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.sk").write_text('use "std/resnext.sk"\nblock twice(c):\n'
                                                "    resnext_unit(c, c, G=4) x2\n")
    (tmp_path / "net.sk").write_text('use "lib/blocks.sk"\n' + HEADER + "    stage s: twice(16)\n")
    spec = skdsl.load(tmp_path / "net.sk")
    assert [b.name for b in spec.stages[0].body[0].body] == ["block1", "block2"]


def test_import_cycle_is_reported(tmp_path):
    (tmp_path / "a.sk").write_text('use "b.sk"\n' + HEADER + "    stage s: bn\n")
    (tmp_path / "b.sk").write_text('use "a.sk"\n')
    with pytest.raises(SpecError) as caught:
        skdsl.load(tmp_path / "a.sk")
    assert caught.value.code == "SK113" and "a.sk -> " in caught.value.message


def test_values_point_at_the_text_that_chose_them():
    spec = expand("block unit(width):\n    conv 3x3, width, G=32\n" + HEADER +
                  "    stage s:\n        conv 3x3, 64\n        unit(100)\n")
    with pytest.raises(SpecError) as caught:
        skdsl.lower(spec)
    error = caught.value
    assert error.code == "SK301"
    assert (error.span.line, error.span.column) == (8, 14)  # the 100 of the call
    assert "in: s.block1.conv, written at t.sk:2:5" in error.notes
    assert "in block unit, called at t.sk:8:9" in error.notes


@pytest.mark.parametrize("body, code, message", [
    ("    stage s: conv 3x3, 0\n", "SK203", "its output channels must be a positive integer, got 0"),
    ("    stage s: conv 3x3, 8, G=dw\n", None, None),
    ("    stage s: dropout 1.5\n", "SK203", "dropout probability must be at least 0 and below 1, got 1.5"),
    ("    stage s: conv 3x3, 8, bias maybe\n", "SK203", "unknown bias 'maybe'"),
    ("    stage s: conv 3x3, 8, stride 2, s 2\n", "SK205", "stride is given twice"),
    ("    stage s: foo(1)\n", "SK201", "unknown block 'foo'"),
    ("    stage s: SUM[r=2], 8\n", "SK202", "SUM has no option 'r'"),
    ("    stage s: SK[M=3], 8:\n        3x3\n        3x3, D=2\n", "SK203", "M=3 but 2 branches are listed"),
    ("    stage s: bn:\n        3x3\n", "SK212", "only SK and SUM take a list of branches, not bn"),
    ("    stage s: add a\n", "SK204", "add combines two or more named tensors"),
    ("    stage s: conv 3x3, 8, 9\n", "SK207", "too many arguments for conv"),
    ("    stage s x2:\n        bn\n        bn\n", "SK212", "a stage's repeat count applies to one block call"),
    ("    stage s: conv 3x3, 5 % 0\n", "SK206", "division by zero"),
    ("    stage s: split 3 -> a, b\n", "SK307", "split 3 makes 3 parts but names 2"),
])
def test_value_mistakes(body, code, message):
    if code is None:
        expand(HEADER + body)
        return
    error = error_of(HEADER + body)
    assert (error.code, error.message) == (code, message)
    assert error.span is not None


def test_block_signature_mistakes():
    text = "block unit(width, out):\n    conv 1x1, out\n" + HEADER
    assert error_of(text + "    stage s: unit(8)\n").message == "block unit needs its argument 'out'"
    assert error_of(text + "    stage s: unit(8, outt=8)\n").hint == "did you mean 'out'?"
    assert error_of(text + "    stage s: unit(8, 8, 8)\n").code == "SK207"
    assert error_of("block b(c):\n    b(c)\n" + HEADER + "    stage s: b(1)\n").code == "SK208"


def test_network_header_mistakes():
    assert error_of("network n:\n    stage s: bn\n").message == "network n has no input shape"
    assert error_of("network n:\n    input 3x32\n    stage s: bn\n").code == "SK203"
    assert error_of("block b(c):\n    bn\n").code == "SK209"
    assert error_of(HEADER + "    stage s: bn\n" + HEADER + "    stage s: bn\n").code == "SK209"


def test_json_round_trip_keeps_the_counts():
    spec = skdsl.load("specs/senet50.sk")
    again = S.Network.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert skdsl.analyze(again).total == skdsl.analyze(spec).total


def test_schema_is_exportable():
    schema = S.json_schema()
    assert schema["title"] == "Network" and "SelectiveKernel" in schema["$defs"]


# -- imports stay inside the spec's folder and std/, and are resolved before the cycle check ----

STAGE = "    stage s: bn\n"


def load_error(path, **options) -> SpecError:
    from skdsl.lang.expand import expand as expand_tree, parse_file

    with pytest.raises(SpecError) as caught:
        expand_tree(parse_file(path), **options)
    return caught.value


def test_a_cycle_through_a_subfolder_is_reported(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "main.sk").write_text('use "sub/x.sk"\n' + HEADER + STAGE)
    (tmp_path / "sub" / "x.sk").write_text('use "../main.sk"\n')
    error = load_error(tmp_path / "main.sk")
    assert error.code == "SK113" and error.message.endswith(f"sub/x.sk -> {tmp_path}/main.sk")


@pytest.mark.parametrize("path, words", [
    ("/etc/passwd", "it is outside the spec's folder"),
    ("../outside.sk", "it is outside the spec's folder"),
    ("std/../../../../../../../etc/passwd", "it leaves the standard library"),
])
def test_imports_outside_the_folder_and_std_are_refused_unread(tmp_path, path, words):
    (tmp_path / "spec").mkdir()
    (tmp_path / "outside.sk").write_text("root:x:0:0:secret\n")
    (tmp_path / "spec" / "main.sk").write_text(f'use "{path}"\n' + HEADER + STAGE)
    error = load_error(tmp_path / "spec" / "main.sk")
    assert error.code == "SK117" and words in error.message
    assert "root:" not in error.render() and error.span.line == 1


def test_the_caller_may_allow_imports_from_outside(tmp_path):
    (tmp_path / "spec").mkdir()
    (tmp_path / "lib.sk").write_text("block b(c):\n    conv 1x1, c\n")
    (tmp_path / "spec" / "main.sk").write_text('use "../lib.sk"\n' + HEADER + "    stage s: b(8)\n")
    assert load_error(tmp_path / "spec" / "main.sk").code == "SK117"
    from skdsl.lang.expand import expand as expand_tree, parse_file

    spec = expand_tree(parse_file(tmp_path / "spec" / "main.sk"), allow_imports_outside=True)
    assert spec.stages[0].body[0].template == "b"


@pytest.mark.parametrize("path, code", [("a" * 1001, "SK120"), ("a" * 300 + ".sk", "SK120"),
                                        ("sub", "SK111")])
def test_long_paths_and_folders_in_use_are_located(tmp_path, path, code):
    (tmp_path / "sub").mkdir()
    (tmp_path / "main.sk").write_text(f'use "{path}"\n' + HEADER + STAGE)
    error = load_error(tmp_path / "main.sk")
    assert error.code == code and error.span.line == 1


def test_an_imported_file_may_not_hold_a_network(tmp_path):
    (tmp_path / "lib.sk").write_text(HEADER + STAGE)
    (tmp_path / "main.sk").write_text('use "lib.sk"\n' + HEADER + STAGE)
    error = load_error(tmp_path / "main.sk")
    assert error.code == "SK209" and "is imported, so it may not hold a network" in error.message
    assert error.span.file.endswith("lib.sk")


def test_a_file_imported_twice_is_read_once(tmp_path):
    (tmp_path / "a.sk").write_text('use "c.sk"\n')
    (tmp_path / "b.sk").write_text('use "c.sk"\n')
    (tmp_path / "c.sk").write_text("block c(w):\n    conv 1x1, w\n")
    (tmp_path / "main.sk").write_text('use "a.sk"\nuse "b.sk"\n' + HEADER + "    stage s: c(8)\n")
    assert skdsl.load(tmp_path / "main.sk").stages[0].body[0].template == "c"


# -- values and sizes past the language's limits ---------------------------------------------


@pytest.mark.parametrize("text, code, words", [
    ("param p = 4294967296 * 4294967296 * 4\n" + HEADER + STAGE, "SK213", "too large"),
    ("param p = 1e300 * 1e300\n" + HEADER + STAGE, "SK213", "too large to represent"),
    (HEADER + "    stage s: " + "residual: " * 900 + "bn\n", "SK119",
     "more than 64 levels of residuals, branches and block calls"),
    ("block b(c):\n    conv 1x1, c\n    conv 1x1, c\nblock a(c):\n    b(c) x1000\n" + HEADER +
     "    stage s: a(8) x100\n", "SK215", "more than 20,000 layers"),
    (HEADER + "    stage s:\n        branch a from input:\n" + "            bn\n" * 100 +
     "".join(f"        branch b{i} from input shares a\n" for i in range(200)), "SK215",
     "more than 20,000 layers"),
], ids=["integer", "float", "residuals", "repeats", "shares"])
def test_limits_of_expansion_are_located_errors(text, code, words):
    error = error_of(text)
    assert error.code == code and words in error.message and error.span is not None


def test_a_chain_of_block_calls_meets_the_nesting_limit():
    blocks = "".join(f"block b{i}(c):\n    b{i + 1}(c)\n" for i in range(100))
    error = error_of(blocks + "block b100(c):\n    bn\n" + HEADER + "    stage s: b0(8)\n")
    assert error.code == "SK119"


def test_a_20000_term_sum_evaluates():
    spec = expand("param p = (" + "\n    + ".join(["1"] * 20_000) + ")\n" + HEADER + STAGE)
    assert spec.parameters["p"] == 20_000


# -- a block no network calls is still checked ------------------------------------------------


@pytest.mark.parametrize("line, words", [
    ("conv 3x3, 8, stride 0", "stride must be a positive integer, got 0"),
    ("conv 0x3, 8", "kernel must be a size such as 3x3"),
    ("act softmax", "unknown activation 'softmax'"),
    ("residual:\n        shortcut:\n            conv 1x1, 8, act nope", "unknown act 'nope'"),
])
def test_an_uncalled_blocks_literal_values_are_checked(line, words):
    error = error_of(f"block unused(c):\n    conv 1x1, c\n    {line}\n" + HEADER + STAGE)
    assert words in error.message and "in block unused, which no network calls" in error.notes


def test_an_uncalled_block_may_leave_formals_to_its_calls():
    spec = expand("block unused(c, s=1):\n    residual:\n        conv 3x3, c, stride s\n"
                  "        shortcut:\n            conv 1x1, c, stride s\n" + HEADER + STAGE)
    assert spec.stages[0].body[0].name == "bn"


def test_word_errors_read_as_sentences():
    assert error_of(HEADER + "    stage s: act softmax\n").message == "unknown activation 'softmax'"
    assert (error_of(HEADER + "    stage s: channelpool mean\n").message
            == "unknown channelpool mode 'mean'")
