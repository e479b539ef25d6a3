"""Output equality of timm's ResNeXt, SE-ResNeXt(-D), SK-ResNeXt, SK-ResNet(-D), ECA-ResNet-D and
ResNeSt-D and skdsl's specs.

Equal parameter counts do not prove equal wiring (stride placement, padding, branch order, the
softmax layout over M·C): equal outputs do. For each pair this script builds timm's model with
random weights (no download), randomises every parameter and buffer (BN statistics and the
zero-initialised last BN included, so that each tensor matters), saves its state dict, converts
it with `skdsl weights convert --from timm`, loads the result into the compiled spec and prints
the largest absolute difference of the two models' outputs on the same input, in eval mode.

    python benchmarks/timm_equality.py                      # float32 and float64, 224×224
    python benchmarks/timm_equality.py --size 128 --batch 1 # quicker
    python benchmarks/timm_equality.py --write-manifests tests/data/timm_keys

--write-manifests writes the key/shape manifests that tests/nn/test_weights.py uses instead of
timm (CI has no timm). Not a test: it needs timm, which here needs torchvision; when torchvision
(or Pillow) is missing, stand-ins are put in sys.modules for timm's imports only (timm's
ResNet code uses neither).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import skdsl  # noqa: E402
from skdsl import commands  # noqa: E402

PAIRS = [  # timm model, skdsl spec
    ("resnext50_32x4d", "specs/resnext50_32x4d.sk"),
    ("seresnext50_32x4d", "specs/senet50.sk"),
    ("skresnext50_32x4d", "specs/sknet50.sk"),
    ("skresnet18", "specs/skresnet18.sk"),
    ("skresnet34", "specs/skresnet34.sk"),
    ("skresnet50", "specs/skresnet50.sk"),
    ("skresnet50d", "specs/skresnet50d.sk"),
    ("ecaresnet26t", "specs/ecaresnet26t.sk"),
    ("ecaresnet50d", "specs/ecaresnet50d.sk"),
    ("seresnext26d_32x4d", "specs/seresnext26d_32x4d.sk"),
    ("resnest14d", "specs/resnest14d.sk"),
    ("resnest26d", "specs/resnest26d.sk"),
    ("resnest50d", "specs/resnest50d.sk"),
]


# -- timm without torchvision -----------------------------------------------------------------


class _StandIn(type):
    """A class whose every attribute is another stand-in class: `Image.BICUBIC`, subclasses."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stand_in(name)


def _stand_in(name: str) -> type:
    return _StandIn(name, (), {"__init__": lambda self, *args, **kwargs: None})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _stand_in(name)
        setattr(self, name, value)
        return value


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, packages: set[str]):
        self.packages = packages

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.packages:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0+stand-in"
        return module

    def exec_module(self, module):
        pass


def import_timm():
    """timm, with stand-ins for torchvision and PIL when they are not installed."""
    missing = {name for name in ("torchvision", "PIL") if importlib.util.find_spec(name) is None}
    if missing:
        sys.meta_path.insert(0, _StandInFinder(missing))
        print(f"note: stand-ins for {', '.join(sorted(missing))} (not installed) in timm's imports",
              file=sys.stderr)
    import timm

    return timm


# -- models -----------------------------------------------------------------------------------


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter and buffer random, BN statistics plausible (so each tensor matters)."""
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            tensor.fill_(int(torch.randint(1, 10_000, (), generator=generator)))
        elif leaf == "running_var":
            tensor.copy_(torch.rand(tensor.shape, generator=generator) * 1.5 + 0.5)
        elif leaf == "running_mean":
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
        elif tensor.dim() == 1 and leaf == "weight":  # BN scale
            tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.5)
        elif tensor.dim() == 1:  # BN and linear/conv biases
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
        else:  # conv and linear weights: He-like, so activations stay of order 1
            fan_in = tensor[0].numel()
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan_in) ** 0.5)


def manifest(timm, model_name: str, spec: str) -> dict:
    model = timm.create_model(model_name, pretrained=False)
    buffers = {name for name, _ in model.named_buffers()}
    return {
        "model": model_name,
        "source": f"timm {timm.__version__}, timm.create_model({model_name!r}, pretrained=False)"
                  f".state_dict()",
        "spec": spec,
        "tensors": {key: {"shape": list(value.shape),
                          "dtype": str(value.dtype).removeprefix("torch."),
                          "buffer": key in buffers}
                    for key, value in model.state_dict().items()},
    }


def _manifest_text(data: dict) -> str:
    """JSON with one line per tensor, so that a diff of two timm versions reads key by key."""
    head = {key: value for key, value in data.items() if key != "tensors"}
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in head.items()]
    tensors = [f"    {json.dumps(key)}: {json.dumps(value)}"
               for key, value in data["tensors"].items()]
    return "{\n" + "\n".join(lines) + '\n  "tensors": {\n' + ",\n".join(tensors) + "\n  }\n}\n"


def write_manifests(timm, directory: Path, pairs) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for model_name, spec in pairs:
        data = manifest(timm, model_name, spec)
        path = directory / f"{model_name}.json"
        path.write_text(_manifest_text(data), encoding="utf-8")
        print(f"wrote {path} ({len(data['tensors'])} tensors)")


def convert_with_cli(spec: str, source: Path, output: Path) -> None:
    """`skdsl weights convert --from timm SPEC IN OUT`, through the command line's own entry."""
    with contextlib.redirect_stdout(io.StringIO()):  # its "ok: ..." line; errors go to stderr
        status = commands.main(["weights", "convert", "--from", "timm", spec, str(source),
                                str(output)])
    if status != 0:
        raise SystemExit(f"convert failed with status {status}")


def compare(timm, model_name: str, spec: str, size: int, batch: int, dtypes, seed: int) -> list:
    torch.manual_seed(seed)
    reference = timm.create_model(model_name, pretrained=False).eval()
    randomise(reference, seed)
    compiled = skdsl.compile(skdsl.load(ROOT / spec), (3, size, size)).eval()
    with tempfile.TemporaryDirectory() as folder:
        source, output = Path(folder) / "timm.pth", Path(folder) / "skdsl.pt"
        torch.save(reference.state_dict(), source)
        convert_with_cli(str(ROOT / spec), source, output)  # prints its own errors
        compiled.load_state_dict(torch.load(output, weights_only=True))
    image = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    rows = []
    for dtype in dtypes:
        reference.to(dtype)
        compiled.to(dtype)
        with torch.no_grad():
            start = time.perf_counter()
            expected = reference(image.to(dtype))
            got = compiled(image.to(dtype))
            seconds = time.perf_counter() - start
        difference = (expected - got).abs().max().item()
        scale = expected.abs().max().item()
        same_top1 = bool((expected.argmax(1) == got.argmax(1)).all())
        rows.append((model_name, spec, str(dtype).removeprefix("torch."), difference, scale,
                     same_top1, seconds))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float32-only", action="store_true", help="skip the float64 run")
    parser.add_argument("--only", choices=[name for name, _ in PAIRS], action="append",
                        help="compare only this timm model (repeatable)")
    parser.add_argument("--write-manifests", metavar="DIR", type=Path,
                        help="write the key/shape manifests to DIR and stop")
    args = parser.parse_args(argv)
    pairs = [(name, spec) for name, spec in PAIRS if not args.only or name in args.only]
    timm = import_timm()
    if args.write_manifests:
        write_manifests(timm, args.write_manifests, pairs)
        return 0
    dtypes = [torch.float32] if args.float32_only else [torch.float32, torch.float64]
    print(f"timm {timm.__version__}, torch {torch.__version__}, skdsl {skdsl.__version__}, "
          f"input {args.batch}×3×{args.size}×{args.size}, eval mode, CPU")
    print(f"{'timm model':<20} {'skdsl spec':<27} {'dtype':<8} {'max |Δ|':>10} "
          f"{'max |out|':>10} {'top-1':>6} {'s':>6}")
    worst = {}
    for model_name, spec in pairs:
        for row in compare(timm, model_name, spec, args.size, args.batch, dtypes, args.seed):
            name, spec_, dtype, difference, scale, same, seconds = row
            print(f"{name:<20} {spec_:<27} {dtype:<8} {difference:>10.3e} {scale:>10.3f} "
                  f"{'same' if same else 'DIFF':>6} {seconds:>6.2f}")
            worst[dtype] = max(worst.get(dtype, 0.0), difference)
    limits = {"float32": 1e-4, "float64": 1e-10}
    failed = [dtype for dtype, difference in worst.items() if difference > limits[dtype]]
    if failed:
        print(f"NOT EQUAL: max |Δ| above {', '.join(f'{limits[d]:g} ({d})' for d in failed)}")
        return 1
    print("equal: " + ", ".join(f"max |Δ| {worst[d]:.2e} ({d})" for d in worst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
