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
the spec), another runner's dict with a 'model' state dict, or a bare state dict; all read with
torch.load(weights_only=True), so a file cannot run code. Every failure is a CliError or a
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
    parser.set_defaults(run=run)


def run(args) -> int:
    """Export as the flags say; print what was written and how closely it matches eager."""
    if (args.checkpoint is None) == (not args.random_init):
        raise CliError("name the weights with --checkpoint FILE, or pass --random-init to "
                       "export an untrained network" if args.checkpoint is None else
                       "--checkpoint and --random-init do not go together", code="SK530")
    if args.batch < 1:
        raise CliError(f"--batch {args.batch}: the batch size must be at least 1", code="SK530")
    output = Path(args.output)
    if output.is_dir():
        raise CliError(f"--output '{output}' is a directory", code="SK535",
                       hint=f"name a file, such as {output / ('model' + SUFFIXES[args.format])}")
    if args.format == "onnx":
        _require_onnx()
    from .cli import load_spec, parse_input_shape, parse_overrides

    input_shape = parse_input_shape(args.input)
    spec = load_spec(args.spec, parse_overrides(args.overrides))
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
    output = Path(output)
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
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        missing, unexpected, resized = _mismatch(model.state_dict(), state)
        details = []
        if missing:
            details.append(f"missing {_some(missing)}")
        if unexpected:
            details.append(f"unexpected {_some(unexpected)}")
        if resized:
            details.append(f"other shapes for {_some(resized)}")
        what = "; ".join(details) or str(error).strip().splitlines()[0]
        raise CheckpointError(f"the weights in '{path}' do not fit {spec.name}: {what}",
                              code="SK532",
                              hint="export with the spec (and --set values) the weights were "
                                   "trained with") from None


def read_state_dict(path: str | Path, spec) -> dict:
    """The model state dict in a checkpoint file (see the module docstring for the kinds)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint '{path}'" if not path.exists() else
                              f"'{path}' is not a file", code="SK531",
                              hint="name a last.pt or best.pt that `skdsl train` wrote, or pass "
                                   "--random-init")
    payload = _torch_load(path)
    from .train import checkpoint as skdsl_checkpoint

    if isinstance(payload, dict) and payload.get("format") == skdsl_checkpoint.FORMAT:
        # skdsl's own: checked whole (checksum) and against this spec (SK60x on a mismatch).
        _, spec_sha256 = skdsl_checkpoint.spec_fingerprint(spec)
        payload = skdsl_checkpoint.load(path, spec_sha256)
    state = payload.get("model", payload) if isinstance(payload, dict) else payload
    if not isinstance(state, dict) or not state or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor)
            for key, value in state.items()):
        raise CheckpointError(f"'{path}' holds no model weights (a state dict of tensors, or a "
                              f"dict with one under 'model')", code="SK531",
                              hint="save weights with torch.save(model.state_dict(), path)")
    return _strip_wrappers(state)


def _torch_load(path: Path):
    # The training runner's reader: zip or pickle sniffed first, foreign pickles refused.
    from .train.checkpoint import read_file

    return read_file(path)


def _strip_wrappers(state: dict) -> dict:
    """Keys as the bare model names them: without DDP's 'module.' or torch.compile's
    '_orig_mod.' prefix."""
    for prefix in ("module.", "_orig_mod."):
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def _mismatch(own: dict, given: dict) -> tuple[list[str], list[str], list[str]]:
    missing = [key for key in own if key not in given]
    unexpected = [key for key in given if key not in own]
    resized = [key for key in own if key in given and tuple(own[key].shape)
               != tuple(given[key].shape)]
    return missing, unexpected, resized


def _some(keys: list[str], shown: int = 3) -> str:
    text = ", ".join(keys[:shown])
    return f"{text} and {len(keys) - shown} more" if len(keys) > shown else text


def _first_line(error: Exception, limit: int = 120) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else "no detail"


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
    try:
        if format == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(artifact, str(output))
        elif format == "exported":
            torch.export.save(artifact, str(output))
        else:
            _write_onnx(model, example, output)
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
