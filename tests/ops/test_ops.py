"""The op registry (skdsl/ops/): one definition per graph op and per layer keyword, read by
the grammar, expansion, lowering, analysis, compiler and reports."""

import subprocess
import sys

import pytest

import skdsl
from skdsl.core import analysis, graph as G
from skdsl.nn import compiler
from skdsl import ops
from skdsl.lang import parser
from skdsl.report import network as report
from skdsl.lang.expand import LAYERS, _BASE_NAMES

SCALED = """\
network scaled:
    input 3x8x8
    stage s:
        conv 3x3, 8
        scale 0.17
        gap
        fc 10
"""


def test_every_stage_reads_the_keywords_and_ops_from_the_registry():
    assert parser.LAYER_KEYWORDS == tuple(ops.KEYWORDS)
    assert set(LAYERS) == set(_BASE_NAMES) == set(ops.KEYWORDS)
    assert set(G.OPS) == set(ops.OPS)
    assert set(compiler.MODULES) == set(ops.OPS) - {"input"}
    counted = {name for table in analysis.EXTRA_COUNTS.values() for name in table}
    assert counted == {name for name, op in ops.OPS.items() if op.counted_by}


def test_the_registry_imports_no_torch():
    code = "import sys, skdsl.ops, skdsl.core.analysis, skdsl.report.network; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_op_definition_rejects_a_misspelt_class_variable():
    with pytest.raises(AssertionError, match="counted"):
        ops.base.op("never_registered", counted="mul")(type("Never", (ops.Op,), {}))
    assert "never_registered" not in ops.OPS


def test_scale_is_one_node_with_no_parameters_counted_as_mul():
    network = skdsl.parse(SCALED)
    table = G.lower_table(network)
    node = table.nodes["s.scale"]
    assert node.op == "scale" and node.attrs == ops.tensor.ScaleOp(0.17)
    assert node.out_shapes == node.in_shapes == ((8, 8, 8),)
    plain, with_mul = skdsl.analyze(network), skdsl.analyze(network, count=("mul",))
    assert analysis.node_cost(node) == analysis.Cost(0, 0, 0)
    assert with_mul.mult_adds - plain.mult_adds == 8 * 8 * 8  # one multiply per element
    assert report.op_text(node) == "scale 0.17"
    assert report.item_lines(network.stages[0].body[1]) == ["scale, 0.17"]


def test_scale_compiles_to_a_constant_product():
    torch = pytest.importorskip("torch")
    network = skdsl.parse(SCALED)
    model = skdsl.compile(network)
    assert sum(p.numel() for p in model.parameters()) == skdsl.analyze(network).params
    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(ops.tensor.ScaleOp(0.5).module()(x), x * 0.5)


def test_scale_mistakes_are_located_errors():
    with pytest.raises(skdsl.SpecError, match="scale needs a factor such as 0.17") as error:
        skdsl.parse(SCALED.replace("scale 0.17", "scale"))
    assert error.value.code == "SK204" and "write it as: scale 0.17" in error.value.hint
    with pytest.raises(skdsl.SpecError) as error:
        skdsl.parse(SCALED.replace("scale 0.17", "scale 0.17, 2"))
    assert error.value.code == "SK207"


def test_a_node_reads_like_the_networkx_dict_of_it():
    table = G.lower_table(skdsl.parse(SCALED))
    node = table.nodes["s.conv.conv"]
    data = table.to_networkx().nodes["s.conv.conv"]
    assert data == node.as_dict() and data["attrs"] is node.attrs
    assert node["out_channels"] == node.attrs.out_channels == 8
    assert node.get("tied_to") is None and "tied_to" not in node and "kernel" in node
    with pytest.raises(KeyError):
        node["no_such_key"]
    assert G.Node.from_dict(data) == node


def test_repeated_units_are_summed_once_through_the_graphs_cache():
    table = G.lower_table(skdsl.load("specs/sknet50.sk"))
    placements = [s for s in table.segments if isinstance(s, G.Placement)]
    assert len({id(p.unit) for p in placements}) < len(placements)  # units repeat
    first = skdsl.analyze(table)
    calls = []
    unit = placements[0].unit
    assert table.unit_summary(unit, (), lambda u, key: calls.append(u)) is not None
    assert calls == []  # analysed already: the graph kept it
    assert skdsl.analyze(table) == first
    assert not hasattr(unit, "summaries")  # analysis writes nothing into the graph's objects


UPSAMPLED = """\
network upsampled:
    input 3x8x8
    stage s:
        conv 3x3, 8, stride 2
        upsample 2
        upsample 3, mode bilinear
        conv 3x3, 8
        gap
        fc 10
"""


def test_upsample_enlarges_the_grid_at_no_cost_and_refines_the_receptive_field():
    network = skdsl.parse(UPSAMPLED)
    table = G.lower_table(network)
    nearest, bilinear = table.nodes["s.upsample1"], table.nodes["s.upsample2"]
    assert nearest.attrs == ops.resample.UpsampleOp((8, 8), "nearest")
    assert (nearest.in_shapes, nearest.out_shapes) == (((8, 4, 4),), ((8, 8, 8),))
    assert bilinear.out_shapes == ((8, 24, 24),)
    for convention in ((), ("pool",), ("mul", "add", "bn", "act", "softmax")):
        costs = skdsl.analyze(network, count=convention).nodes
        assert costs["s.upsample1"] == costs["s.upsample2"] == analysis.Cost(0, 0, 0)
    fields = analysis.receptive_fields(table)
    # conv 3×3/2: r=3, j=2; nearest ×2: r=3, j=1; bilinear ×3: r=4, j=1/3; conv 3×3: 4 + 2/3.
    assert fields["s.upsample1"] == (3, 3) and fields["s.upsample2"] == (4, 4)
    assert fields["s.conv2.conv"] == (5, 5)  # 4⅔ pixels, rounded up
    assert report.op_text(bilinear) == "upsample 24×24 bilinear"
    assert report.item_lines(network.stages[0].body[2]) == ["upsample ×3, bilinear"]


def test_upsample_compiles_and_agrees_with_torchs_flop_counter():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    network = skdsl.parse(UPSAMPLED)
    counts, model = skdsl.analyze(network), skdsl.compile(network).eval()
    assert sum(p.numel() for p in model.parameters()) == counts.params
    x = torch.randn(2, 3, 8, 8)
    with FlopCounterMode(display=False) as flops:
        y = model(x)
    assert flops.get_total_flops() // 2 == 2 * counts.mult_adds and y.shape == (2, 10)
    small = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert torch.equal(ops.resample.UpsampleOp((4, 4), "nearest").module()(small),
                       small.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert torch.allclose(ops.resample.UpsampleOp((4, 4), "bilinear").module()(small),
                          torch.nn.functional.interpolate(small, scale_factor=2, mode="bilinear"))


@pytest.mark.parametrize("line, code, words", [
    ("upsample", "SK203", "upsample takes a factor (upsample 2) or a tensor to match"),
    ("upsample 2, to conv", "SK203", "upsample takes a factor (upsample 2) or a tensor to match"),
    ("upsample to 3", "SK203", "upsample's target is a tensor's name, got 3"),
    ("upsample 1.5", "SK203", "upsample factor must be a positive integer, got 1.5"),
    ("upsample 2, mode bicubic", "SK203", "unknown upsample mode 'bicubic'"),
    ("upsample 2, scale 2", "SK202", "upsample has no option 'scale'"),
])
def test_upsample_mistakes_are_located_errors(line, code, words):
    with pytest.raises(skdsl.SpecError) as error:
        skdsl.parse(UPSAMPLED.replace("upsample 3, mode bilinear", line))
    assert error.value.code == code and words in error.value.message
    assert error.value.span.line == 6


def test_upsample_after_an_fc_needs_a_feature_map():
    with pytest.raises(skdsl.SpecError) as error:
        skdsl.analyze(skdsl.parse(UPSAMPLED.replace("fc 10", "fc 10\n        upsample 2")))
    assert error.value.code == "SK304" and "upsample" in error.value.message


TO_SIZE = """\
network matched:
    input 3x16x16
    stage s:
        conv 3x3, 8
        skip = conv 3x3, 8, stride 2
        maxpool 3x3, stride 2
        upsample to skip, mode bilinear
        add upsample, skip
        gap
        fc 10
"""


def test_upsample_to_a_named_tensor_takes_its_size():
    network = skdsl.parse(TO_SIZE)
    table = G.lower_table(network)
    node = table.nodes["s.upsample"]
    assert node.in_shapes == ((8, 4, 4),) and node.out_shapes == ((8, 8, 8),)
    # skip: r=5, j=2; maxpool 3×3/2: r=9, j=4; bilinear 4→8: r=9+4=13, j=2.
    assert analysis.receptive_fields(table)["s.upsample"] == (13, 13)
    assert report.item_lines(network.stages[0].body[3]) == ["upsample to skip, bilinear"]
    torch = pytest.importorskip("torch")
    model = skdsl.compile(network)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_upsample_to_mistakes_are_located():
    def error_of(text):
        with pytest.raises(skdsl.SpecError) as error:
            skdsl.analyze(skdsl.parse(text))
        return error.value

    misspelt = error_of(TO_SIZE.replace("upsample to skip", "upsample to skp"))
    assert misspelt.code == "SK306" and misspelt.hint == "did you mean 'skip'?"
    assert (misspelt.span.line, misspelt.span.column) == (7, 21)
    shrinking = error_of(SCALED.replace("scale 0.17", "branch small: maxpool 2x2\n"
                                        "        upsample to small"))
    assert shrinking.code == "SK234" and "would shrink 8×8 to 4×4" in shrinking.message
    assert (shrinking.span.line, shrinking.span.column) == (6, 21)
