"""Residual Attention Networks (skdsl/lang/std/residual_attention.sk, specs/rivals/attention*.sk).

The shipped networks' counts are pinned at 224×224 by the analysis alone; the modules are held
to torch on a tiny network built from the same blocks (widths 8 and 32, 32×32 input), once per
kind of unit: its parameters and multiply-adds equal the compiled module's, the soft mask
comes back to the trunk's shape at every skip depth, and the module computes (1 + M)·T.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import skdsl
from skdsl.testing.assertions import assert_compiles_exactly

ROOT = Path(__file__).resolve().parents[2]

# One attention module at 32 channels (bottleneck 8) on a 32×32 map: the soft mask pools it to
# 16, 8 and 4 with two skip levels.
TINY = """
use "std/residual_attention.sk"

param preact = yes
param G = 1
param skips = 2

network tiny_attention:
    input 3x32x32
    classes 10
    stage stem: conv 3x3, 16
    stage stage1:
        ra_unit(8, 32, G=G, preact=preact, project=yes)
        attention_module(8, 32, skips=skips, G=G, preact=preact)
    stage head:
        gap
        fc classes
"""

UNITS = {"pre-activation": {"preact": "yes", "G": 1}, "resnext": {"preact": "no", "G": 4}}


def tiny(**overrides) -> skdsl.Network:
    return skdsl.parse(TINY, overrides=overrides)


@pytest.mark.parametrize("name, params, macs", [
    ("attention92", 52_466_344, 10_533_789_696),       # = imgclsmob's resattnet92
    ("attentionnext56", 31_318_824, 6_419_106_816),
])
def test_table2_networks_count_as_the_authors_deploy_files(name, params, macs):
    analysis = skdsl.analyze(skdsl.load(ROOT / "specs" / "rivals" / f"{name}.sk"))
    assert (analysis.params, analysis.mult_adds, tuple(analysis.output)) == (params, macs, (1000,))


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_attention_module_compiles_exactly(unit):
    report = assert_compiles_exactly(tiny(**UNITS[unit]))
    assert report.output == (1, 10)


def _gate(graph) -> tuple[str, str, str]:
    """(trunk output, mask output, the (1 + M)·T add) of the tiny network's module."""
    (gated,) = [name for name in graph if name.endswith(".gated")]
    (trunk, _), (mask, _) = graph.nodes[gated]["inputs"]  # `mul trunk, mask`
    (fused,) = graph.successors(gated)
    return trunk, mask, fused


@pytest.mark.parametrize("unit", sorted(UNITS))
@pytest.mark.parametrize("skips", [0, 1, 2])
def test_soft_mask_returns_to_the_trunks_shape(unit, skips):
    import torch

    network = tiny(skips=skips, **UNITS[unit])
    graph = skdsl.lower(network)
    trunk, mask, _ = _gate(graph)
    model = skdsl.compile(network).eval()
    with torch.no_grad():
        found = model.features(torch.randn(2, 3, 32, 32), [trunk, mask])
    assert found[mask].shape == found[trunk].shape == (2, 32, 32, 32)
    # the deepest level of the hourglass: 32 / 2^(skips + 1)
    pools = sorted((n for n in graph if graph.nodes[n]["op"] == "max_pool"),
                   key=lambda n: graph.nodes[n]["out_shapes"][0][1])
    assert graph.nodes[pools[0]]["out_shapes"][0][1:] == (32 >> (skips + 1),) * 2


def test_module_output_is_one_plus_mask_times_trunk():
    """With the mask's last 1×1 zeroed, M = sigmoid(0) = 1/2 everywhere: the add is 1.5·T."""
    import torch

    network = tiny()
    graph = skdsl.lower(network)
    trunk, mask, fused = _gate(graph)
    ((mask_conv, _),) = graph.nodes[mask]["inputs"]  # the sigmoid's conv
    torch.manual_seed(0)
    model = skdsl.compile(network).eval()
    with torch.no_grad():
        model.get_submodule(mask_conv).weight.zero_()
        found = model.features(torch.randn(2, 3, 32, 32), [trunk, fused])
    assert torch.allclose(found[fused], 1.5 * found[trunk])
