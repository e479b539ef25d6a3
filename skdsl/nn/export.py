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
dict; all read by skdsl/nn/state_io.py with torch.load(weights_only=True), so a file cannot run
code. The output's folder is checked before the network is compiled, and the memory the
checks need (the weights, and the activations alive at once for the largest batch run: --batch
or 3 images) against the budget (resources.guard_memory, SK621) before any batch is allocated;
torch.export and TorchScript artifacts are written atomically. Every failure is an ExportError
or a CheckpointError with a code SK530-SK539 (docs/errors.md), a ResourceError (SK620 and SK621
refused before, SK611 for an allocation that fails anyway), never a traceback. The command is
skdsl/commands/export.py.

This module imports no torch at import time: `skdsl --help` must stay fast.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..base.errors import declare_settings
from ..base.errors import SettingError
from ..core.resources import is_out_of_memory

declare_settings("format", "batch")

FORMATS = ("torchscript", "exported", "onnx")
CHECKED_BATCH = 3  # the batch the artifact is checked at besides --batch
SUFFIXES = {"torchscript": ".ts", "exported": ".pt2", "onnx": ".onnx"}
# Largest |artifact - eager| accepted, relative to the largest |eager output| (BN folding and
# kernel choices change the rounding, never more than this).
TOLERANCE = 1e-4


class ExportError(SettingError):
    """A network that cannot be exported as asked, or whose artifact cannot be trusted."""

    code = "SK530"

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
            text += "\nnote: torch deprecates TorchScript; the exported format is its successor"
        return text


def export(spec, output: str | Path, format: str, *, checkpoint: str | Path | None = None,
           fuse: bool = False, input_shape=None, batch: int = 1, seed: int = 0,
           memory_budget: int | None = None) -> Result:
    """Compile `spec`, load `checkpoint` (random init when None), export and check the artifact.
    Checks that would not fit `memory_budget` bytes (default: the memory available) are
    refused before anything is compiled (SK621)."""
    import torch

    from ..core.resources import guard_memory, out_of_memory_is_an_error

    if format not in FORMATS:
        raise ExportError(f"unknown export format '{format}'; known: {', '.join(FORMATS)}",
                          code="SK530")
    output = Path(output)
    check_writable(output)  # before the expensive work
    guard_memory(spec, max(batch, CHECKED_BATCH), budget=memory_budget, input_shape=input_shape,
                 task="inference", doing="checking the export of", least=CHECKED_BATCH,
                 batch_setting="batch", precision_setting=False, input_setting=True)
    smaller = "{batch} or {input_shape}"
    with out_of_memory_is_an_error(f"exporting {spec.name}; no artifact was written", smaller):
        model, deployed, folded, batch_norms = _deployable(spec, checkpoint, fuse, input_shape,
                                                           seed)
        # An example batch of 2: torch.export specialises a batch of 1 to the constant 1.
        _write(deployed, torch.randn(2, *model.graph.graph["input"]), output, format)
    with out_of_memory_is_an_error(f"checking the exported {spec.name}; '{output}' was written "
                                   f"but not checked, so it should not be deployed", smaller):
        return _check(model, spec.name, output, format, folded, batch_norms, batch, seed)


def _deployable(spec, checkpoint, fuse: bool, input_shape, seed: int):
    """The compiled model in eval mode with its weights, the model to export (BN folded when
    `fuse`), and how many of how many batch norms were folded."""
    import torch

    from . import compiler, layers

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
    return model, deployed, folded, batch_norms


def _check(model, network: str, output: Path, format: str, folded: int, batch_norms: int,
           batch: int, seed: int) -> Result:
    """Run the artifact, loaded from `output`, and the eager model on the same batches."""
    import torch

    image = tuple(model.graph.graph["input"])
    generator = torch.Generator().manual_seed(seed + 1)
    error, scale, verified_with = 0.0, 0.0, None
    for size in dict.fromkeys((batch, CHECKED_BATCH)):  # the asked batch, and another one
        check = torch.randn(size, *image, generator=generator)
        with torch.no_grad():
            expected = model(check)
        actual, verified_with = _run_back(output, format, check)
        scale = max(scale, float(expected.abs().max()))
        if actual is None:
            return Result(network, output, format, folded, batch_norms, float("nan"), scale,
                          None)
        if tuple(actual.shape) != tuple(expected.shape):
            raise ExportError(f"the exported model gives outputs of shape "
                              f"{tuple(actual.shape)} for a batch of {size}, the eager model "
                              f"{tuple(expected.shape)}", code="SK536")
        error = max(error, float((actual.float() - expected).abs().max()))
    if not error <= TOLERANCE * max(scale, 1.0):
        raise ExportError(f"the exported model's outputs differ from the eager model's by up "
                          f"to {error:.3g} (outputs up to {scale:.3g}); '{output}' was written but "
                          f"should not be deployed", code="SK536",
                          hint="report it with the spec and the format; try another {format}")
    return Result(network, output, format, folded, batch_norms, error, scale, verified_with)


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

    _, spec_sha256 = state_io.spec_fingerprint(spec)
    return state_io.read_weights(path, state_io.EXPORT, spec_sha256)[0]


def _first_line(error: Exception, limit: int = 120) -> str:
    from .state_io import first_line

    return first_line(error, limit)


def check_writable(output: Path) -> None:
    """ExportError (SK535) when `output` cannot be written (checked before the expensive work)."""
    from . import state_io

    unwritable = state_io.check_writable(output)
    if unwritable:
        raise ExportError(f"cannot write '{output}': {unwritable}", code="SK535")


# -- writing and reading back -------------------------------------------------------------------


def require_onnx() -> None:
    """ExportError (SK533) unless the packages the ONNX exporter needs are installed."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"{{format}} onnx needs the {' and '.join(missing)} package"
                          f"{'s' if len(missing) > 1 else ''}", code="SK533",
                          hint="pip install onnx onnxscript (and onnxruntime to check the result), "
                               "or use {format} torchscript or exported")


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
        if is_out_of_memory(error):
            raise
        raise ExportError(f"torch could not {format} the model: {type(error).__name__}: "
                          f"{_first_line(error, 300)}", code="SK534",
                          hint="try another {format}") from None
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
        raise ExportError(f"cannot write '{output}': {error.strerror or error}",
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
        if is_out_of_memory(error):
            raise
        raise ExportError(f"torch could not export the model to ONNX: {type(error).__name__}: "
                          f"{_first_line(error, 300)}", code="SK534",
                          hint="try {format} torchscript or exported") from None


def _dynamic_batch():
    import torch

    return ({0: torch.export.Dim("batch", min=1, max=1 << 16)},)


def _run_back(output: Path, format: str, x):
    """The artifact's output for `x`, loaded from the file, and what ran it (None: cannot)."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # From an open file: torch's loaders take no file name that is not UTF-8 ('\udcff.ts')
        if format == "torchscript":
            with open(output, "rb") as file:
                return torch.jit.load(file).eval()(x), "torch.jit.load"
        if format == "exported":
            with open(output, "rb") as file:
                return torch.export.load(file).module()(x), "torch.export.load"
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return None, None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0]), "onnxruntime"


__all__ = ["export", "load_weights", "read_state_dict", "require_onnx", "Result", "FORMATS",
           "SUFFIXES", "ExportError", "check_writable"]
