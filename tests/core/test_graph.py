"""Lowering: one node per primitive op, shapes on every edge, names, projections and tensors."""

from pathlib import Path

import pytest

import skdsl
from skdsl.core import spec as S
from skdsl.base.errors import SpecError
from skdsl import testing as T
from skdsl.core.graph import (_Instance, _largest_divisor, _projection_stride, conv_output_size,
                         lower_table, output_shape)

HEADER = "network n:\n    input 3x32x32\n    classes 10\n"


def lower(body: str):
    return skdsl.lower(skdsl.parse(HEADER + body))


def test_sk_unit_lowers_to_the_papers_operations():
    graph = skdsl.lower(skdsl.load("specs/sknet50.sk"))
    names = [n for n in graph if n.startswith("conv3.block2.sk.")]
    assert names == [
        "conv3.block2.sk.branch1.conv", "conv3.block2.sk.branch1.bn", "conv3.block2.sk.branch1.act",
        "conv3.block2.sk.branch2.conv", "conv3.block2.sk.branch2.bn", "conv3.block2.sk.branch2.act",
        "conv3.block2.sk.fuse", "conv3.block2.sk.pool", "conv3.block2.sk.reduce.conv",
        "conv3.block2.sk.reduce.bn", "conv3.block2.sk.reduce.act", "conv3.block2.sk.logits",
        "conv3.block2.sk.select"]
    branch2 = graph.nodes["conv3.block2.sk.branch2.conv"]
    assert (branch2["dilation"], branch2["padding"], branch2["groups"]) == (2, (2, 2), 32)
    assert graph.nodes["conv3.block2.sk.reduce.conv"]["out_channels"] == 32  # d = max(256/16, 32)
    assert graph.nodes["conv5.block1.sk.reduce.conv"]["out_channels"] == 64  # 1024/16
    assert graph.nodes["conv3.block2.sk.logits"]["out_channels"] == 2 * 256
    select = graph.nodes["conv3.block2.sk.select"]
    assert [src for src, _ in select["inputs"]] == [
        "conv3.block2.sk.logits", "conv3.block2.sk.branch1.act", "conv3.block2.sk.branch2.act"]


def test_the_first_block_of_a_stage_takes_the_stride_and_a_projection():
    graph = skdsl.lower(skdsl.load("specs/sknet50.sk"))
    assert graph.nodes["conv3.block1.sk.branch1.conv"]["stride"] == 2
    assert graph.nodes["conv3.block2.sk.branch1.conv"]["stride"] == 1
    shortcut = graph.nodes["conv3.block1.shortcut.conv"]
    assert (shortcut["kernel"], shortcut["stride"], shortcut["out_channels"]) == ((1, 1), 2, 512)
    assert "conv3.block1.shortcut.bn" in graph and "conv3.block1.shortcut.act" not in graph
    assert "conv3.block2.shortcut.conv" not in graph  # identity
    assert "conv2.block1.shortcut.conv" in graph  # 64 -> 256 channels at stride 1


def test_every_edge_carries_its_shape():
    graph = skdsl.lower(skdsl.load("specs/resnext50_32x4d.sk"))
    for src, dst, data in graph.edges(data=True):
        assert data["shape"] == graph.nodes[src]["out_shapes"][data["port"]]
        assert data["shape"] in graph.nodes[dst]["in_shapes"]
    assert output_shape(graph) == (1000,)


def test_shufflenet_unit_with_split_branch_concat_and_shuffle():
    graph = lower(
        "    stage s:\n        conv 1x1, 32\n        split 2 -> left, right\n"
        "        branch right from right:\n            conv 1x1, 16\n"
        "            dwconv 3x3, act none\n            conv 1x1, 16\n"
        "        concat left, right\n        shuffle 2\n")
    split = graph.nodes["s.split"]
    assert split["out_shapes"] == ((16, 32, 32), (16, 32, 32))
    assert graph.nodes["s.right.conv1.conv"]["in_channels"] == 16
    assert graph.nodes["s.right.conv2.conv"]["groups"] == 16  # the depthwise 3×3
    assert "s.right.conv2.act" not in graph
    concat = graph.nodes["s.concat"]
    assert concat["inputs"] == (("s.split", 0), ("s.right.conv3.act", 0))
    assert concat["out_shapes"] == ((32, 32, 32),)
    assert graph.nodes["s.shuffle"]["groups"] == 2


def test_layer_outputs_can_be_named_in_merges():
    graph = lower("    stage s:\n        a = conv 3x3, 8\n        b = conv 3x3, 8\n        add a, b\n")
    assert graph.nodes["s.add"]["inputs"] == (("s.a.act", 0), ("s.b.act", 0))


def test_se_gate_broadcasts_over_the_map():
    graph = lower("    stage s:\n        conv 3x3, 32\n        SE[r=4]\n")
    assert graph.nodes["s.se.reduce"]["out_channels"] == 8
    assert graph.nodes["s.se.reduce"]["bias"] is True
    assert graph.nodes["s.se.scale"]["in_shapes"] == ((32, 32, 32), (32, 1, 1))


def test_sum_variant_has_no_attention():
    graph = lower("    stage s: SUM[M=3, G=1], 8\n")
    assert "s.sk.fuse" in graph and "s.sk.select" not in graph and "s.sk.pool" not in graph
    assert [graph.nodes[f"s.sk.branch{m}.conv"]["dilation"] for m in (1, 2, 3)] == [1, 2, 3]


def test_explicit_shortcut_and_post_activation():
    graph = lower("    stage s:\n        residual act none:\n            conv 3x3, 8, stride 2\n"
                  "            shortcut:\n                avgpool 2x2\n"
                  "                conv 1x1, 8, act none\n")
    assert graph.nodes["s.shortcut.pool"]["op"] == "avg_pool"
    assert "s.act" not in graph
    assert graph.nodes["s.add"]["out_shapes"] == ((8, 16, 16),)


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, ceil, expected", [
    (224, 7, 2, 3, 1, False, 112), (112, 3, 2, 1, 1, False, 56), (56, 3, 1, 2, 2, False, 56),
    (7, 3, 2, 1, 1, False, 4), (112, 3, 2, 0, 1, True, 56), (5, 2, 2, 0, 1, True, 3),
    (4, 3, 1, 0, 1, False, 2), (2, 3, 1, 0, 1, False, 0),
])
def test_output_size_formula(size, kernel, stride, padding, dilation, ceil, expected):
    assert conv_output_size(size, kernel, stride, padding, dilation, ceil) == expected


def test_input_shape_override():
    graph = skdsl.lower(skdsl.parse(HEADER + "    stage s: conv 3x3, 8, stride 2\n"), (3, 64, 48))
    assert output_shape(graph) == (8, 32, 24)


@pytest.mark.parametrize("body, code", [
    ("    stage s: conv 3x3, 10, G=4\n", "SK301"),
    ("    stage s:\n        conv 3x3, 8, stride 2\n        SK[G=3], 9\n", "SK301"),
    ("    stage s: conv 33x33, 8, pad 0\n", "SK302"),
    ("    stage s:\n        fc 10\n        maxpool 2x2\n", "SK304"),
    ("    stage s:\n        conv 1x1, 6\n        shuffle 4\n", "SK301"),
    ("    stage s:\n        conv 1x1, 8\n        split 3, 4 -> a, b\n", "SK307"),
    ("    stage s:\n        branch a: conv 1x1, 8\n        concat a, c\n", "SK306"),
    ("    stage s:\n        branch a: conv 1x1, 8\n        branch b: conv 1x1, 8, stride 2\n"
     "        concat a, b\n", "SK303"),
    ("    stage s:\n        maxpool 2x2, pad 2\n", "SK203"),
])
def test_shape_mistakes_are_located(body, code):
    with pytest.raises(SpecError) as caught:
        lower(body)
    assert caught.value.code == code
    assert caught.value.span is not None and caught.value.span.file == "<string>"
    assert any(note.startswith("in: s") for note in caught.value.notes)


# -- repeated blocks are lowered once and placed again ------------------------------------------


def test_repeated_blocks_are_lowered_once_and_spelled_out_the_same():
    spec = skdsl.load(Path(__file__).resolve().parents[2] / "specs" / "sknet101.sk")
    table, plain = lower_table(spec), lower_table(spec, reuse=False)
    instances = [s for s in table.segments if isinstance(s, _Instance)]
    assert len(instances) == 33  # 3 + 4 + 23 + 3 units
    assert len({id(instance.unit) for instance in instances}) == 8  # first and rest, per stage
    assert list(table.nodes.items()) == list(plain.nodes.items())
    assert table.edges == plain.edges and table.graph == plain.graph
    assert output_shape(table) == output_shape(plain) == (1000,)


REPEATED = HEADER.replace("3x32x32", "4x8x8") + """\
    stage s:
        unit(4) x3
"""
UNIT = "block unit(c):\n    conv 1x1, c\n\n"


def _with_extra_item(extra):
    """A spec the language would refuse (its names clash), built from models as an API user
    could: the lowering has to catch it whether or not it reuses the repeated block."""
    spec = skdsl.parse(UNIT + REPEATED)
    stage = spec.stages[0]
    body = [*stage.body, extra]
    return spec.model_copy(update={"stages": [stage.model_copy(update={"body": body})]})


def _conv(name):
    return S.Conv(name=name, kernel=(1, 1), out_channels=4)


@pytest.mark.parametrize("extra, clash", [
    (S.Branch(name="block2", body=[_conv("conv")]), "s.block2.conv.conv"),  # a placed block
    (S.Branch(name="block1", body=[_conv("conv")]), "s.block1.conv.conv"),  # the lowered one
    (_conv("block3"), "s.block3.conv"),  # around a node of a placed block
    (S.Branch(name="block2", body=[_conv("other")]), None),  # beside its nodes: allowed
    (_conv("block4"), None),
])
def test_names_clash_with_placed_blocks_as_with_lowered_ones(extra, clash):
    spec = _with_extra_item(extra)
    for reuse in (True, False):
        if clash is None:
            assert len(lower_table(spec, reuse=reuse).nodes) == 13
            continue
        with pytest.raises(SpecError) as caught:
            lower_table(spec, reuse=reuse)
        assert caught.value.code == "SK205" and f"'{clash}'" in caught.value.message


# -- every multi-input op checks its inputs' shapes -------------------------------------------------

UNEQUAL_SK = """\
network t:
    input 32x16x16
    stage s:
        SK[G=1, r=4, L=8], 32:
            3x3
            2x2
"""


@pytest.mark.parametrize("word", ["SK", "SUM"])
def test_sk_branches_of_different_sizes_are_located_not_miscounted(word):
    """Issue 14: a 2×2 branch, padded by (2−1)//2 = 0, gave 15×15 beside the 3×3's 16×16; the
    analysis counted it and the compiled module crashed in forward."""
    text = UNEQUAL_SK.replace("SK[G=1, r=4, L=8]", "SUM[G=1]" if word == "SUM" else "SK[G=1, r=4, L=8]")
    with pytest.raises(SpecError) as caught:
        skdsl.analyze(skdsl.parse(text))
    error = caught.value
    assert error.code == "SK309" and (error.span.line, error.span.column) == (6, 13)
    assert error.message == ("the branches of s.sk give different shapes: branch1 (3x3) "
                             "32×16×16, branch2 (2x2) 32×15×15")
    assert error.hint.endswith("write branch2 as 3x3 (or 2x2, D=2)")


@pytest.mark.parametrize("branches, culprit, fix", [
    (["2x2", "3x3", "5x5"], "branch1 (2x2)", "write branch1 as 3x3 (or 2x2, D=2)"),
    (["3x3", "1x2, D=3"], "branch2 (1x2, D=3)", "write branch2 as 1x3, D=3 (or 1x2, D=6)"),
    # the size a 3×3 keeps is the one to reach, even against a majority
    (["2x2", "2x2", "3x3"], "branch1 (2x2)", "write branch1 as 3x3 (or 2x2, D=2)"),
    (["2x2", "1x2, D=3"], "branch2 (1x2, D=3)", "give every branch an odd kernel, or an even "
                                                "dilation"),
])
def test_the_hint_names_the_branch_that_differs_and_a_fix(branches, culprit, fix):
    lines = "".join(f"            {branch}\n" for branch in branches)
    text = UNEQUAL_SK.split("            3x3")[0] + lines
    with pytest.raises(SpecError) as caught:
        skdsl.analyze(skdsl.parse(text))
    assert culprit in caught.value.message and caught.value.hint.endswith(fix)


def test_even_branches_that_keep_one_size_are_fine():
    """At stride 2 on an even size, 2×2 (no padding) and 3×3 (padding 1) both halve it."""
    text = UNEQUAL_SK.replace("SK[G=1, r=4, L=8]", "SK[G=1, r=4, L=8, stride=2]")
    assert skdsl.analyze(skdsl.parse(text)).output == (32, 8, 8)


REUSED_SK = """\
block unit(c, stride=1):
    SK[G=1, r=4, L=8, stride=stride], c:
        3x3
        2x2

network t:
    input 8x12x12
"""


@pytest.mark.parametrize("stages", [
    "    stage a: unit(8, stride=2)\n    stage b: unit(8, stride=2)\n    stage c: unit(8, stride=2)\n",
    "    stage s: unit(8, stride=2) x3\n",
])
def test_sk_branch_errors_are_the_same_whether_blocks_are_reused(stages):
    """A block lowered once is placed again only on the input shape it was checked on."""
    network = skdsl.parse(REUSED_SK + stages, file="t.sk")
    errors = []
    for reuse in (True, False):
        with pytest.raises(SpecError) as caught:
            lower_table(network, reuse=reuse)
        errors.append(caught.value)
    assert errors[0].code == "SK309" and errors[0].render() == errors[1].render()


def test_concat_of_two_sizes_has_a_hint():
    with pytest.raises(SpecError) as caught:
        lower("    stage s:\n        branch a: conv 1x1, 8\n        branch b: conv 1x1, 8, stride 2\n"
              "        concat a, b\n")
    assert caught.value.code == "SK303" and "stride" in caught.value.hint


# -- absurd sizes stay quick ----------------------------------------------------------------------

HUGE = "network n:\n    input 3x2147483647x2147483647\n    stage s:\n"


def test_projection_stride_on_a_huge_input_is_solved_not_searched():
    """Issue 14: the projection's stride was searched over range(H): 2³¹ steps here."""
    body = "        residual:\n            conv 3x3, 16, pad 0\n"
    with T.time_limit(5), pytest.raises(SpecError) as caught:
        lower_table(skdsl.parse(HUGE + body))
    assert caught.value.code == "SK305"
    graph = lower_table(skdsl.parse(HUGE + "        residual: conv 3x3, 16, stride 3\n"))
    assert graph.nodes["s.shortcut.conv"]["stride"] == 3


def test_projection_stride_is_the_smallest_that_maps_the_sizes():
    for height in range(1, 20):
        for width in (1, 2, 7, 12):
            for target in {(conv_output_size(height, 1, s, 0), conv_output_size(width, 1, s, 0))
                           for s in range(1, 25)} | {(height + 1, width), (2, 2)}:
                searched = next((s for s in range(1, 50) if
                                 (conv_output_size(height, 1, s, 0),
                                  conv_output_size(width, 1, s, 0)) == target), None)
                assert _projection_stride((height, width), target) == searched, (height, width,
                                                                                 target)


def test_divisor_hint_for_a_huge_prime_width_is_quick():
    """2³¹−1 is prime: counting down from G for a divisor took 2³¹ steps."""
    body = "        conv 1x1, 2147483646\n        conv 1x1, 2147483647, G=2147483646\n"
    with T.time_limit(5), pytest.raises(SpecError) as caught:
        lower_table(skdsl.parse(HUGE.replace("2147483647x2147483647", "8x8") + body))
    assert caught.value.code == "SK301" and caught.value.hint.endswith("(such as 1)")
    assert _largest_divisor(128, 30) == 16 and _largest_divisor(15, 2) == 1
    huge = 3 * 2**80  # a concat's channels can pass 2³¹: the search is capped, still a divisor
    assert huge % _largest_divisor(huge, 10**6) == 0 and _largest_divisor(huge, 10**6) <= 10**6


@pytest.mark.parametrize("shape, says", [
    ((3, 32.5, 32), "expected three whole numbers"),
    ("3x32x32", "expected three whole numbers"),
    ((3, 32), "expected three whole numbers"),
    ((3, True, 32), "expected three whole numbers"),
    ((3, 0, 32), "every size must be from 1 to 2,147,483,647"),
    ((3, 2**31, 32), "every size must be from 1 to 2,147,483,647"),
    ((3, 10**5000, 32), "(a number of over 4,300 digits)"),
])
def test_an_input_shape_is_checked_where_it_enters(shape, says):
    from skdsl.core.graph import InputShapeError

    spec = skdsl.parse(HUGE.replace("3x2147483647x2147483647", "3x32x32") + "        conv 3x3, 8\n")
    with pytest.raises(InputShapeError) as caught:
        lower_table(spec, shape)
    assert caught.value.code == "SK501" and says in str(caught.value)
    assert str(caught.value).startswith("input_shape ")  # a setting's name, as Python spells it
    assert lower_table(spec, [3, 40, 40]).graph["input"] == (3, 40, 40)  # a list of ints is fine
