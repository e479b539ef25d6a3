"""The op registry (skdsl/ops/): one definition per graph op and per layer keyword, read by
the grammar, expansion, lowering, analysis, compiler and reports."""

import subprocess
import sys

import pytest

import skdsl
from skdsl import analysis, compiler, graph as G, ops, parser, report
from skdsl.expand import LAYERS, _BASE_NAMES

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
    code = "import sys, skdsl.ops, skdsl.analysis, skdsl.report; print('torch' in sys.modules)"
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
    assert node.op == "scale" and node.attrs == ops.tensor.Scale(0.17)
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
    assert torch.equal(ops.tensor.Scale(0.5).module()(x), x * 0.5)


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
    assert table.unit_summary(unit, (), lambda u: calls.append(u)) is not None
    assert calls == []  # analysed already: the graph kept it
    assert skdsl.analyze(table) == first
    assert not hasattr(unit, "summaries")  # analysis writes nothing into the graph's objects
