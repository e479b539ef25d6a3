"""Inception-v4 and Inception-ResNet-v2 (Table 2's rivals) equal timm's, and `avgpool …,
count_pad no` averages over the real pixels only, as their pooling branches need."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import skdsl

ROOT = Path(__file__).resolve().parents[2]

# timm 1.0.31 at 1×3×299×299, 1000 classes: sum(p.numel()) of timm.create_model(NAME), and
# FlopCounterMode's total / 2 of its forward pass in eval mode under no_grad (measured once, timm
# is no dependency).
TIMM = {
    "inception_v4": (42_679_816, 12_253_974_624),
    "inception_resnet_v2": (55_843_464, 13_155_794_016),
}
# The (channels, H, W) after each stage, as timm's feature_info reports them at 299×299.
STAGES = {
    "inception_v4": {"stem": (384, 35, 35), "a": (384, 35, 35), "b": (1024, 17, 17),
                     "c": (1536, 8, 8)},
    "inception_resnet_v2": {"stem": (320, 35, 35), "a": (320, 35, 35), "b": (1088, 17, 17),
                            "c": (1536, 8, 8)},
}


def load(name: str) -> skdsl.Network:
    return skdsl.load(ROOT / "specs" / "rivals" / f"{name}.sk")


@pytest.mark.parametrize("name", sorted(TIMM))
def test_counts_equal_timms(name):
    analysis = skdsl.analyze(load(name))
    assert (analysis.params, analysis.mult_adds) == TIMM[name]
    shapes = {stage.name: tuple(stage.output) for stage in analysis.stages}
    assert {key: shapes[key] for key in STAGES[name]} == STAGES[name]


def test_compiled_inception_resnet_v2_has_the_analysed_parameters():
    spec = load("inception_resnet_v2")
    model = skdsl.compile(spec)
    assert sum(p.numel() for p in model.parameters()) == skdsl.analyze(spec).params
    scales = [m for name, m in model.named_modules() if name.endswith(".scale")]
    # 10 + 20 + 9 scaled units and the last block8, scaled by 1.0 like timm's.
    assert len(scales) == 40


POOLS = """network pools:
    input 1x4x4
    stage s:
        branch counted: avgpool 3x3, s 1, pad 1
        branch real: avgpool 3x3, s 1, pad 1, count_pad no
        concat counted, real
"""


def test_count_pad_no_divides_by_the_real_pixels_only():
    spec = skdsl.parse(POOLS)
    pools = [stage_item for stage_item in spec.stages[0].body if hasattr(stage_item, "body")]
    assert [branch.body[0].count_include_pad for branch in pools] == [True, False]
    with torch.no_grad():
        out = skdsl.compile(spec).eval()(torch.ones(1, 1, 4, 4))
    counted, real = out[0]
    assert torch.equal(real, torch.ones(4, 4))  # every window averages ones
    assert counted[0, 0].item() == pytest.approx(4 / 9)  # a corner sees 4 pixels of 9
    assert counted[1, 1].item() == 1.0  # an inner window has no padding
    # The counts do not depend on it: one pool reads 3·3 per output either way.
    assert skdsl.analyze(spec, count=("pool",)).mult_adds == 2 * 16 * 9


def test_count_pad_is_an_average_pool_option_only():
    with pytest.raises(skdsl.SpecError) as error:
        skdsl.parse("network n:\n    input 3x8x8\n    stage s: maxpool 3x3, count_pad no\n")
    assert error.value.code == "SK202" and "count_pad" in str(error.value)
