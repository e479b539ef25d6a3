"""`skdsl export`: a compiled network as a deployable inference artifact, checked against eager.

    skdsl export specs/sknet50.sk --checkpoint runs/sknet50/best.pt --fuse-bn \\
        --output sknet50.pt2
    skdsl export specs/sknet26.sk --random-init --format torchscript --output sknet26.ts

Formats: `exported` (the default: torch.export, load with torch.export.load(path).module()),
`torchscript` (torch.jit.trace, load with torch.jit.load; torch deprecates TorchScript, so its
deprecation warnings are silenced here and the summary says so) and `onnx` (needs the onnx and
onnxscript packages; checked with onnxruntime when that is installed). Every artifact takes any
batch size. `--fuse-bn` folds every batch norm into the convolution before it
(compiler.fuse_bn). The artifact is loaded back from the file and run on fresh random batches
(of --batch and of 3 images); the largest absolute difference from the eager model in eval mode
(BN not folded) is printed, and a difference beyond tolerance is an error (SK536).

Checkpoints: an skdsl checkpoint (`skdsl train`'s last.pt or best.pt, checked whole and against
the spec), converted weights, another runner's dict with a 'model' state dict, or a bare state
dict; all read by skdsl/state_io.py with torch.load(weights_only=True), so a file cannot run
code. The output's folder is checked before the network is compiled; torch.export and
TorchScript artifacts are written atomically. Every failure is a CliError or a
CheckpointError with a code SK530-SK539 (docs/errors.md), never a traceback.

This module imports no torch at import time: `skdsl --help` must stay fast.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from .errors import CheckpointError, CliError

FORMATS = ("torchscript", "exported", "onnx")
SUFFIXES = {"torchscript": ".ts", "exported": ".pt2", "onnx": ".onnx"}
# Largest |artifact - eager| accepted, relative to the largest |eager output| (BN folding and
# kernel choices change the rounding, never more than this).
TOLERANCE = 1e-4

EPILOG = """\
examples:
  skdsl export specs/sknet50.sk --checkpoint runs/sknet50/best.pt --fuse-bn --output sknet50.pt2
  skdsl export specs/sknet26.sk --random-init --format torchscript --output sknet26.ts
  skdsl export specs/sknet50.sk --checkpoint best.pt --format onnx --output sknet50.onnx
"""


def register(subparsers) -> None:
    """Add `skdsl export` to the skdsl parser (skdsl/cli.py)."""
    from . import cli

    parser = subparsers.add_parser(
        "export", help="write a deployable inference artifact (TorchScript, torch.export, ONNX)",
        description="Compile a spec, load its weights, optionally fold BN into the convolutions,\n"
                    "and write an inference artifact whose outputs are checked against the\n"
                    "eager model (the largest absolute difference is printed).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_spec_argument(parser)
    cli.add_input_argument(parser)
    parser.add_argument("--checkpoint", metavar="FILE",
                        help="the weights: an skdsl checkpoint, a {'model': ...} dict or a "
                             "state dict")
    parser.add_argument("--random-init", action="store_true",
                        help="export the freshly initialised network (to try the pipeline)")
    parser.add_argument("--format", choices=FORMATS, default="exported",
                        help="exported (torch.export, the default), torchscript or onnx")
    parser.add_argument("--fuse-bn", action="store_true",
                        help="fold every batch norm into the convolution before it")
    parser.add_argument("--batch", type=int, default=1, metavar="N",
                        help="the batch size the artifact is checked at (default 1); it "
                             "takes any batch size")
    parser.add_argument("--output", "-o", metavar="PATH", required=True,
                        help="where to write the artifact")
    parser.add_argument("--classes", metavar="N", type=int,
                        help="replace the spec's `classes`, as `skdsl train --classes` did")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Export as the flags say; print what was written and how closely it matches eager."""
    if (args.checkpoint is None) == (not args.random_init):
        raise CliError("name the weights with --checkpoint FILE, or pass --random-init to "
                       "export an untrained network" if args.checkpoint is None else
                       "--checkpoint and --random-init do not go together", code="SK530")
    if args.batch < 1:
        raise CliError(f"--batch {args.batch}: the batch size must be at least 1", code="SK530")
    if args.classes is not None and args.classes < 1:
        raise CliError(f"--classes {args.classes}: must be at least 1", code="SK530")
    output = Path(args.output)
    if output.is_dir():
        raise CliError(f"--output '{output}' is a directory", code="SK535",
                       hint=f"name a file, such as {output / ('model' + SUFFIXES[args.format])}")
    _check_writable(output)
    if args.format == "onnx":
        _require_onnx()
    from .cli import parse_input_shape, parse_overrides
    from .train.specs import load_spec

    input_shape = parse_input_shape(args.input)
    spec = load_spec(args.spec, parse_overrides(args.overrides), args.classes)
    result = export(spec, output, args.format, checkpoint=args.checkpoint,
                    fuse=args.fuse_bn, input_shape=input_shape, batch=args.batch)
    print(result.summary())
    return 0


class Result:
    """What `export` wrote and how it compares with the eager model."""

    def __init__(self, network: str, path: Path, format: str, folded: int, batch_norms: int,
                 max_abs_error: float, max_abs_output: float, verified_with: str | None):
        self.network, self.path, self.format = network, path, format
        self.folded, self.batch_norms = folded, batch_norms
        self.max_abs_error, self.max_abs_output = max_abs_error, max_abs_output
        self.verified_with = verified_with

    def summary(self) -> str:
        folding = f", {self.folded} of {self.batch_norms} BN folded" if self.folded else ""
        if self.verified_with is None:
            check = "not run back (install onnxruntime to check it)"
        else:
            check = (f"max abs error {self.max_abs_error:.2e} vs the eager model "
                     f"(outputs up to {self.max_abs_output:.3g}; run with {self.verified_with})")
        text = f"exported {self.network} ({self.format}{folding}) to {self.path}: {check}"
        if self.format == "torchscript":
            text += "\nnote: torch deprecates TorchScript; --format exported is its successor"
        return text


def export(spec, output: str | Path, format: str, *, checkpoint: str | Path | None = None,
           fuse: bool = False, input_shape=None, batch: int = 1, seed: int = 0) -> Result:
    """Compile `spec`, load `checkpoint` (random init when None), export and check the artifact."""
    import torch

    from . import compiler, layers

    if format not in FORMATS:
        raise CliError(f"unknown export format '{format}'; known: {', '.join(FORMATS)}",
                       code="SK530")
    output = Path(output)
    _check_writable(output)  # before the expensive work
    state = read_state_dict(checkpoint, spec) if checkpoint is not None else None
    torch.manual_seed(seed)
    model = compiler.compile(spec, input_shape)
    if state is not None:
        load_weights(model, state, spec, checkpoint)
    model.eval()
    for module in model.modules():  # deployment runtimes have their own convolution kernels
        if isinstance(module, layers.DilatedConv2d):
            module.lowering = "direct"
    batch_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    deployed = compiler.fuse_bn(model) if fuse else model
    folded = sum(isinstance(m, layers.FoldedBatchNorm) for m in deployed.modules())
    image = tuple(model.graph.graph["input"])
    # An example batch of 2: torch.export specialises a batch of 1 to the constant 1.
    example = torch.randn(2, *image)
    _write(deployed, example, output, format)
    generator = torch.Generator().manual_seed(seed + 1)
    error, scale, verified_with = 0.0, 0.0, None
    for size in dict.fromkeys((batch, 3)):  # the asked batch, and another one
        check = torch.randn(size, *image, generator=generator)
        with torch.no_grad():
            expected = model(check)
        actual, verified_with = _run_back(output, format, check)
        scale = max(scale, float(expected.abs().max()))
        if actual is None:
            return Result(spec.name, output, format, folded, batch_norms, float("nan"),
                          scale, None)
        if tuple(actual.shape) != tuple(expected.shape):
            raise CliError(f"the exported model gives outputs of shape "
                           f"{tuple(actual.shape)} for a batch of {size}, the eager model "
                           f"{tuple(expected.shape)}", code="SK536")
        error = max(error, float((actual.float() - expected).abs().max()))
    if not error <= TOLERANCE * max(scale, 1.0):
        raise CliError(f"the exported model's outputs differ from the eager model's by up to "
                       f"{error:.3g} (outputs up to {scale:.3g}); '{output}' was written but "
                       f"should not be deployed", code="SK536",
                       hint="report it with the spec and the format; try another --format")
    return Result(spec.name, output, format, folded, batch_norms, error, scale, verified_with)


# -- weights ------------------------------------------------------------------------------------


def load_weights(model, state: dict, spec, path: str | Path) -> None:
    """Load a checkpoint's model weights (read from `path`) into `model`; CheckpointError (SK532)
    when they do not fit."""
    from . import state_io

    state_io.load_weights(model, state, path, spec.name)


def read_state_dict(path: str | Path, spec) -> dict:
    """The model state dict in a checkpoint file (see the module docstring for the kinds): an
    skdsl checkpoint is checked whole and against `spec`."""
    from . import state_io
    from .train import checkpoint

    _, spec_sha256 = state_io.spec_fingerprint(spec)
    return checkpoint.read_weights(path, state_io.EXPORT, spec_sha256)[0]


def _first_line(error: Exception, limit: int = 120) -> str:
    from .state_io import first_line

    return first_line(error, limit)


def _check_writable(output: Path) -> None:
    from . import state_io

    unwritable = state_io.check_writable(output)
    if unwritable:
        raise CliError(f"cannot write '{output}': {unwritable}", code="SK535")


# -- writing and reading back -------------------------------------------------------------------


def _require_onnx() -> None:
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise CliError(f"--format onnx needs the {' and '.join(missing)} package"
                       f"{'s' if len(missing) > 1 else ''}", code="SK533",
                       hint="pip install onnx onnxscript (and onnxruntime to check the result), "
                            "or use --format torchscript or exported")


def _write(model, example, output: Path, format: str) -> None:
    import torch

    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The schedule's Python control flow depends on no tensor value; the tracer's
            # generic warnings about it say nothing about this model.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.*, said in summary
            if format == "torchscript":
                artifact = torch.jit.trace(model, example, check_trace=False)
            elif format == "exported":
                artifact = torch.export.export(model, (example,),
                                               dynamic_shapes=_dynamic_batch())
            else:
                artifact = None
    except Exception as error:  # noqa: BLE001 - a tracer's failure, reported in one line
        raise CliError(f"torch could not {format} the model: {type(error).__name__}: "
                       f"{_first_line(error, 300)}", code="SK534",
                       hint="try another --format") from None
    from . import state_io

    try:
        if format == "onnx":  # the exporter may write external data beside it: no renaming
            _write_onnx(model, example, output)
            return
        with state_io.atomic_path(output) as temporary, open(temporary, "wb") as file:
            if format == "torchscript":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    torch.jit.save(artifact, file)
            else:
                torch.export.save(artifact, file)
    except OSError as error:
        raise CliError(f"cannot write '{output}': {error.strerror or error}",
                       code="SK535") from None


def _write_onnx(model, example, output: Path) -> None:
    import torch

    try:
        with torch.no_grad():
            torch.onnx.export(model, (example,), str(output), input_names=["images"],
                              output_names=["logits"], dynamo=True,
                              dynamic_shapes=_dynamic_batch())
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001
        raise CliError(f"torch could not export the model to ONNX: {type(error).__name__}: "
                       f"{_first_line(error, 300)}", code="SK534",
                       hint="try --format torchscript or exported") from None


def _dynamic_batch():
    import torch

    return ({0: torch.export.Dim("batch", min=1, max=1 << 16)},)


def _run_back(output: Path, format: str, x):
    """The artifact's output for `x`, loaded from the file, and what ran it (None: cannot)."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if format == "torchscript":
            return torch.jit.load(str(output)).eval()(x), "torch.jit.load"
        if format == "exported":
            return torch.export.load(str(output)).module()(x), "torch.export.load"
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return None, None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0]), "onnxruntime"


__all__ = ["register", "run", "export", "load_weights", "read_state_dict", "Result", "FORMATS"]
