"""Analysis: golden counts of the paper's networks, rollups, receptive fields, no torch import."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import skdsl
from skdsl.core.analysis import Cost, analyze

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((ROOT / "tests" / "golden_counts.json").read_text())

# Table 1's three networks, counted on real modules (tables.md: timm, the official model file
# and an independent plain-PyTorch SKNet-50 agree to the unit).
TABLE_1 = {
    "specs/sknet50.sk": (27_479_784, 4_462_710_784),
    "specs/resnext50_32x4d.sk": (25_028_904, 4_230_479_872),
    "specs/senet50.sk": (27_559_896, 4_232_994_816),
}


@pytest.mark.parametrize("path", sorted(TABLE_1))
def test_table_1_counts_are_exact(path):
    analysis = analyze(skdsl.load(ROOT / path))
    assert (analysis.params, analysis.mult_adds) == TABLE_1[path]


def test_other_depths_match_the_hand_formula():
    # tables.md, "Other depths" and SKNet-101 (d = max(C/16, 32) everywhere).
    assert analyze(skdsl.load(ROOT / "specs/sknet26.sk")).params == 16_746_408
    assert analyze(skdsl.load(ROOT / "specs/sknet101.sk")).params == 48_736_040


def test_every_shipped_spec_has_a_golden_count():
    shipped = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").rglob("*.sk"))
    assert shipped == sorted(GOLDEN)


@pytest.mark.parametrize("path", sorted(GOLDEN))
def test_golden_counts(path):
    analysis = analyze(skdsl.load(ROOT / path))
    expected = GOLDEN[path]
    assert (analysis.params, analysis.mult_adds, list(analysis.output)) == (
        expected["params"], expected["macs"], expected["output"])


def test_stages_blocks_and_layers_add_up_to_the_total():
    analysis = analyze(skdsl.load(ROOT / "specs/sknet50.sk"))
    for parts in (analysis.stages, analysis.layers):
        assert sum((p.cost for p in parts), Cost()) == analysis.total
    blocks = sum((b.cost for b in analysis.blocks), Cost())
    stem_and_head = sum((s.cost for s in analysis.stages if s.name in ("conv1", "head")), Cost())
    assert blocks + stem_and_head == analysis.total
    assert [s.name for s in analysis.stages] == ["conv1", "conv2", "conv3", "conv4", "conv5", "head"]
    assert [s.output for s in analysis.stages][:5] == [
        (64, 112, 112), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    assert len(analysis.blocks) == 16 and analysis.blocks[0].template == "sk_unit"


def test_sknet50_breakdown_matches_the_hand_count():
    """tables.md: the 3×3 branch with dilation 1 and the one with dilation 2 cost the same."""
    graph = skdsl.lower(skdsl.load(ROOT / "specs/sknet50.sk"))
    costs = analyze(graph).nodes
    by_branch = {1: 0, 2: 0}
    for name, data in graph.nodes(data=True):
        if ".sk.branch" in name and data["op"] == "conv2d":
            by_branch[data["dilation"]] += costs[name].mult_adds
    assert by_branch == {1: 231_211_008, 2: 231_211_008}
    sk_fcs = sum(costs[n].mult_adds for n in graph if n.endswith((".sk.reduce.conv", ".sk.logits")))
    assert sk_fcs == 1_019_904


def test_receptive_field_counts_dilation():
    spec = skdsl.parse("network n:\n    input 3x64x64\n    stage a: conv 3x3, 8\n"
                       "    stage b: conv 3x3, 8, D=2\n    stage c: conv 3x3, 8, stride 2\n"
                       "    stage d: conv 3x3, 8\n    stage e: avgpool global\n")
    fields = [s.receptive_field for s in analyze(spec).stages]
    # 1 + 2 = 3; + 2·2 = 7; + 2 = 9; then the grid is 2 apart: + 2·2 = 13; global after the pool.
    assert fields == [(3, 3), (7, 7), (9, 9), (13, 13), None]


def test_receptive_field_of_a_multi_branch_unit_is_its_largest_branch():
    spec = skdsl.parse("network n:\n    input 3x64x64\n    stage a: conv 1x1, 32\n"
                       "    stage s:\n        SK[r=4, L=4], 32:\n            3x3, G=8\n"
                       "            3x3, G=8, D=3\n")
    assert analyze(spec).stages[1].receptive_field == (7, 7)


def test_asymmetric_kernels_have_per_axis_fields():
    spec = skdsl.parse("network n:\n    input 3x32x32\n    stage s: conv 1x7, 8\n")
    assert analyze(spec).stages[0].receptive_field == (1, 7)


def test_input_override_changes_the_multiply_adds_only():
    spec = skdsl.load(ROOT / "specs/sknet50.sk")
    small, large = analyze(spec), analyze(spec, (3, 320, 320))
    assert small.params == large.params and large.mult_adds > small.mult_adds
    assert large.stages[4].output == (2048, 10, 10)


def test_activations_count_conv_and_fc_outputs():
    spec = skdsl.parse("network n:\n    input 3x8x8\n    stage s:\n        conv 3x3, 4\n"
                       "        avgpool global\n        fc 10\n")
    assert analyze(spec).total.activations == 4 * 8 * 8 + 10


def test_json_contract():
    data = analyze(skdsl.load(ROOT / "specs/resnext50_32x4d.sk")).to_json()
    assert data["params"] == 25_028_904 and data["macs"] == 4_230_479_872
    assert data["flops"] == 2 * data["macs"] and data["input"] == [3, 224, 224]
    assert data["output"] == [1000]
    assert {"name", "output", "params", "macs"} <= set(data["stages"][0])
    assert all(isinstance(s["params"], int) for s in data["stages"])


def test_parsing_and_analysis_do_not_import_torch():
    code = ("import sys, skdsl; s = skdsl.load('specs/sknet101.sk'); skdsl.analyze(s); "
            "skdsl.core.spec.json_schema(); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "False"


def test_an_unknown_count_class_is_a_setting_error_with_a_suggestion():
    from skdsl.base.errors import SkdslError

    with pytest.raises(SkdslError) as caught:
        analyze(skdsl.load("sknet_tiny"), count=("bnn",))
    assert caught.value.code == "SK506" and isinstance(caught.value, ValueError)
    assert caught.value.hint == "did you mean 'bn'?"
