"""What every benchmark section shares: its settings, its result, and the networks it times.

`Settings.full()` is the real run (SKNet-50 / ResNeXt-50 at 224×224, SKNet-101 for analysis);
`Settings.quick()` swaps in networks a few thousand parameters big, so that `run.py --quick`
(and tests/test_benchmarks.py) exercise every line in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A tiny SKNet and ResNeXt with SKNet-50's layout cut to two stages of one unit each (a unit at
# stride 1 after the max pool, one at stride 2: every kind of unit SKNet-50 has), for --quick.
# Two stages, not four: dynamo's explain and torch.compile in section f trace each unit, and
# that tracing, not the arithmetic, is what --quick spends its time on.
_TINY = '''use "std/resnext.sk"

network tiny_{kind}:
    input 3x64x64
    classes 10

    stage conv1: conv 7x7, 16, stride 2
    stage conv2:
        maxpool 3x3, stride 2
        {unit}(16, 32, {options}) x1
    stage conv3: {unit}(32, 64, stride=2, {options}) x1
    stage head:
        avgpool global
        fc classes
'''
TINY_SKNET = _TINY.format(kind="sknet", unit="sk_unit", options="G=8, r=4, L=8")
TINY_RESNEXT = _TINY.format(kind="resnext", unit="resnext_unit", options="G=8")
TINY_REFERENCE = dict(depths=(1, 1), widths=(16, 32), outs=(32, 64), stem=16, classes=10, G=8,
                      r=4, L=8)


@dataclass(frozen=True)
class Network:
    """A spec, as a file under the repository or as text."""

    name: str
    path: str | None = None
    text: str | None = None

    def load(self, overrides: dict | None = None):
        import skdsl

        if self.path is not None:
            return skdsl.load(ROOT / self.path, overrides=overrides)
        return skdsl.parse(self.text, file=f"<{self.name}>", overrides=overrides)

    def file(self, directory: Path) -> Path:
        """A file holding the spec (written into `directory` when it is text)."""
        if self.path is not None:
            return ROOT / self.path
        target = directory / f"{self.name}.sk"
        target.write_text(self.text, encoding="utf-8")
        return target


@dataclass(frozen=True)
class Settings:
    quick: bool
    threads: int
    repeats: int  # timed repeats of each model comparison, after one warm-up call
    batch: int
    sknet: Network
    resnext: Network
    reference: dict  # keyword arguments of benchmarks.reference.SKNet matching `sknet`
    analysis: Network  # section a's network
    sweep_spec: Network
    sweep: list[dict]  # section a's variants, as overrides of sweep_spec's params
    cli_spec: Network
    compile_timeout: int  # seconds for torch.compile (inductor) before giving up
    compile_backend: str
    explore_spec: str = "examples/spaces/sknet50_space.sk"  # section h's space
    explore_count: int = 10_000  # points drawn and counted
    explore_baseline: int = 300  # of them, counted again the way a sweep does
    formats: tuple[str, ...] = ("contiguous", "channels_last")
    timm: bool = True
    gpu_batch: int = 256
    latency_batches: tuple[int, ...] = (1, 8)  # section i: a calibration and a check at each
    latency_variants: int = 50  # SKNet-50 variants checked, besides the zoo's ImageNet networks
    latency_zoo: tuple[str, ...] | None = None  # None: every ImageNet network of the zoo

    @classmethod
    def full(cls, threads: int = 1, repeats: int = 5) -> "Settings":
        sweep = [{"M": m, "G": g, "r": r} for m in (1, 2, 3, 4) for g in (4, 8, 16, 32, 64)
                 for r in (2, 4, 8, 16, 32)]
        return cls(quick=False, threads=threads, repeats=repeats, batch=8,
                   sknet=Network("sknet50", path="specs/sknet50.sk"),
                   resnext=Network("resnext50_32x4d", path="specs/resnext50_32x4d.sk"),
                   reference={}, analysis=Network("sknet101", path="specs/sknet101.sk"),
                   sweep_spec=Network("sknet50_options", path="examples/sknet50_options.sk"),
                   sweep=sweep, cli_spec=Network("sknet101", path="specs/sknet101.sk"),
                   compile_timeout=600, compile_backend="inductor")

    @classmethod
    def quick_settings(cls, threads: int = 1, repeats: int = 2) -> "Settings":
        tiny = Network("tiny_sknet", text=TINY_SKNET)
        return cls(quick=True, threads=threads, repeats=repeats, batch=2, sknet=tiny,
                   resnext=Network("tiny_resnext", text=TINY_RESNEXT), reference=TINY_REFERENCE,
                   analysis=tiny,
                   sweep_spec=Network("tiny_sk", path="examples/tiny_sk.sk"),  # has M and G
                   sweep=[{"M": m, "G": g} for m in (1, 2) for g in (16, 32)],
                   cli_spec=Network("tiny_sk", path="examples/tiny_sk.sk"),
                   compile_timeout=120, compile_backend="eager", timm=False, gpu_batch=2,
                   explore_spec="examples/spaces/sk_cifar.sk", explore_count=30,
                   explore_baseline=5, latency_batches=(1,), latency_variants=2,
                   latency_zoo=("shufflenet_v2_x0_5",))


@dataclass
class Section:
    """One lettered part of the results: a table, the headline ratios, and notes."""

    key: str
    title: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    ratios: dict[str, str] = field(default_factory=dict)  # headline: name -> "1.23× (goal ≤ …)"
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)  # raw numbers, for tests and JSON


def memory_format(name: str):
    import torch

    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def build_compiled(network: Network, seed: int = 0, **options):
    import torch

    from skdsl.nn import compiler

    torch.manual_seed(seed)
    return compiler.compile(network.load(), **options)


def build_reference(settings: Settings, compiled):
    """The plain-PyTorch SKNet with `compiled`'s weights copied in."""
    from benchmarks import reference

    model = reference.SKNet(**settings.reference)
    reference.load_compiled_weights(model, compiled.state_dict())
    return model


def as_written(model) -> None:
    """Undo the compiler's speed-ups on `model`: nothing in place, every convolution direct."""
    from skdsl.nn import layers

    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
        if isinstance(module, layers.DilatedConv2d):
            module.lowering = "direct"


def timm_models() -> tuple[dict, str | None]:
    """timm's skresnext50_32x4d and resnext50_32x4d, or ({}, why not)."""
    try:
        import timm
    except Exception as error:  # noqa: BLE001 - timm needs torchvision; any failure means "skip"
        return {}, f"timm is not importable here ({type(error).__name__}: {error})"
    try:
        return {name: timm.create_model(name, pretrained=False)
                for name in ("skresnext50_32x4d", "resnext50_32x4d")}, None
    except Exception as error:  # noqa: BLE001
        return {}, f"timm could not build its models ({type(error).__name__}: {error})"


def ratio_text(value: float, goal: str | None = None) -> str:
    return f"{value:.3f}×" + (f" (goal {goal})" if goal else "")


__all__ = ["ROOT", "Network", "Settings", "Section", "memory_format", "build_compiled",
           "build_reference", "as_written", "timm_models", "ratio_text", "TINY_SKNET",
           "TINY_RESNEXT", "TINY_REFERENCE"]
