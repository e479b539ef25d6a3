"""Every shipped spec compiles, and the module's parameters and multiply-adds equal the analysis.

The counts are taken on the compiled module itself: `sum(p.numel())` and torch's
`FlopCounterMode` total / 2 at batch 1, in eval mode under no_grad. To keep the file fast on two
shared cores, the module is built on PyTorch's meta device (real modules and shapes, no weight
storage, no arithmetic) at a small input where the spec's layout allows one: 64×64 for the
ImageNet networks, 16×16 for CIFAR's 32×32 ones. Inception-v3's unpadded convolutions and
auxiliary head need its own 299×299. A few specs, one per family of new layers, also run on real
tensors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import skdsl

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").rglob("*.sk"))

# Small inputs by the spec's own input size (H×W); anything else keeps its own.
SMALL = {(224, 224): (3, 64, 64), (32, 32): (3, 16, 16)}


def small_input(spec: skdsl.Network) -> tuple[int, int, int]:
    shape = SMALL.get(tuple(spec.input[1:]), tuple(spec.input))
    try:
        skdsl.analyze(spec, shape)
    except skdsl.SpecError:  # the layout needs a larger input
        return tuple(spec.input)
    return shape


def module_counts(model, shape, device="cpu") -> tuple[int, int, tuple]:
    """(parameters, FlopCounterMode multiply-adds, output shape) of a module at batch 1."""
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, *shape) if device == "cpu" else torch.empty(1, *shape, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(x)
    assert counter.get_total_flops() % 2 == 0
    return params, counter.get_total_flops() // 2, tuple(out.shape[1:])


def test_specs_is_the_packaged_zoo():
    """specs/ is a link to skdsl/specs/ (a copy in an sdist), which the wheel ships."""
    def files(folder: Path) -> set[str]:
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}

    packaged = ROOT / "skdsl" / "specs"
    assert len(SPECS) >= 37 and {f"specs/{name}" for name in files(packaged)} >= set(SPECS)
    assert files(ROOT / "specs") == files(packaged)


@pytest.mark.parametrize("path", SPECS)
def test_spec_compiles_and_its_counts_equal_the_module(path):
    spec = skdsl.load(ROOT / path)
    shape = small_input(spec)
    analysis = skdsl.analyze(spec, shape)
    with torch.device("meta"):
        model = skdsl.compile(spec, shape).eval()
    assert module_counts(model, shape, "meta") == (
        analysis.params, analysis.mult_adds, tuple(analysis.output))


# One spec per family of layers new to the zoo, run on real tensors at a tiny input: shared
# weights, channel pooling and broadcasting (CBAM, BAM), dual paths (DPN), depthwise SK
# (ShuffleNetV2 + SK), CIFAR's layout.
REAL = {
    "specs/rivals/resnext50_cbam.sk": (3, 32, 32),
    "specs/rivals/resnext50_bam.sk": (3, 32, 32),
    "specs/rivals/dpn92.sk": (3, 32, 32),
    "specs/shufflenetv2/x0_5_sk.sk": (3, 32, 32),
    "specs/cifar/sknet29.sk": (3, 8, 8),
}


@pytest.mark.parametrize("path", sorted(REAL))
def test_spec_runs_on_real_tensors(path):
    spec = skdsl.load(ROOT / path)
    shape = REAL[path]
    analysis = skdsl.analyze(spec, shape)
    torch.manual_seed(0)
    model = skdsl.compile(spec, shape).eval()
    params, macs, output = module_counts(model, shape)
    assert (params, macs, output) == (analysis.params, analysis.mult_adds, tuple(analysis.output))


def test_every_shipped_spec_says_what_it_is():
    """A shipped spec starts with a comment naming the network and its source."""
    for path in SPECS:
        assert (ROOT / path).read_text(encoding="utf-8").startswith("#"), path
