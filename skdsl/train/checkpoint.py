"""Checkpoints: written atomically, read with `torch.load(weights_only=True)`, checked before use.

A checkpoint is a dict of tensors and plain Python values (so `weights_only` loading can read it
and a malicious file cannot run code):

    format, format_version, skdsl_version      what wrote it
    spec_name, spec_source, spec_json          the spec as written and fully expanded
    spec_sha256                                sha256 of spec_json: which network the weights fit
    model, optimizer, scaler                   state dicts (the model unwrapped from DDP/compile)
    schedule                                   the lr schedule, a pure function of `step`
    epoch, batch_in_epoch, step                where training stands: `epoch` is the epoch under
                                               way, `batch_in_epoch` the batches of it done
    best_top1, history                         validation top-1 so far, per-epoch metrics
    rng                                        per process: torch, CUDA, python, numpy states
    config                                     the settings the run was started with
    checksum                                   sha256 over every tensor, to catch corruption
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pickle
import random
import sys
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from .. import __version__
from ..errors import CheckpointError

FORMAT = "skdsl-checkpoint"
FORMAT_VERSION = 1
TRY_ANOTHER = "use another checkpoint, such as best.pt beside it"
REQUIRED = ("format_version", "spec_sha256", "model", "optimizer", "epoch", "step", "checksum")


def spec_fingerprint(spec) -> tuple[str, str]:
    """The expanded spec as canonical JSON and its sha256: equal for the same network, whatever
    its comments, layout or `--set` spelling."""
    text = spec.model_dump_json()
    return text, hashlib.sha256(text.encode()).hexdigest()


# -- writing -------------------------------------------------------------------------------------


def save(payload: dict, path: str | Path) -> None:
    """Write `payload` so that `path` always holds a whole checkpoint, old or new.

    torch.save goes to a temporary file in the same directory, which is flushed and fsynced
    before an atomic rename over `path`; a crash or a full disk mid-write leaves the previous
    checkpoint intact.
    """
    path = Path(path)
    payload = {**payload, "format": FORMAT, "format_version": FORMAT_VERSION,
               "skdsl_version": __version__, "checksum": checksum(payload)}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        os.replace(temporary, path)
        _fsync_directory(path.parent)  # and the rename itself survives a power cut
    except OSError as error:
        raise CheckpointError(f"cannot write checkpoint '{path}': {error.strerror or error}",
                              code="SK607") from None
    finally:
        temporary.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory; its rename is durable enough
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def checksum(payload: dict) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (torch's zip reader checks no
    CRC, so a flipped bit in the weights would otherwise load silently)."""
    digest = hashlib.sha256()
    for name, tensor in _tensors(payload):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        # The raw bytes without a numpy round trip (numpy is not a dependency).
        digest.update(ctypes.string_at(data.data_ptr(), data.numel() * data.element_size()))
    return digest.hexdigest()


def _tensors(value, name: str = ""):
    """(path, tensor) for every tensor inside nested dicts, lists and tuples, in a fixed order."""
    if isinstance(value, Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key in value:
            if key != "checksum":
                yield from _tensors(value[key], f"{name}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{name}/{index}")


# -- reading -------------------------------------------------------------------------------------


def load(path: str | Path, spec_sha256: str | None = None) -> dict:
    """A checkpoint's payload, checked whole and, given `spec_sha256`, checked to fit that spec.

    Every way it can be unusable is a CheckpointError: missing (SK601), truncated or corrupt
    (SK602), not an skdsl checkpoint (SK603), of another spec (SK604), from a newer skdsl (SK605).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint '{path}'", code="SK601",
                              hint="train first, or name the file with --checkpoint")
    payload = read_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an skdsl checkpoint: it holds "
                              f"{type(payload).__name__} data without skdsl's header", code="SK603",
                              hint="skdsl reads the last.pt and best.pt files that `skdsl train` "
                                   "writes; a bare state_dict cannot tell which spec it fits")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"'{path}' was written by skdsl {payload.get('skdsl_version')} in "
                              f"checkpoint format {payload['format_version']}, newer than this "
                              f"skdsl {__version__} reads ({FORMAT_VERSION})", code="SK605",
                              hint="upgrade skdsl")
    missing = [key for key in REQUIRED if key not in payload]
    if missing or checksum(payload) != payload["checksum"]:
        what = f"lacks {', '.join(missing)}" if missing else "fails its checksum"
        raise CheckpointError(f"'{path}' is corrupt: it {what}", code="SK602",
                              hint=TRY_ANOTHER)
    if spec_sha256 is not None:
        check_spec(payload, path, spec_sha256)
    return payload


def check_spec(payload: dict, path: str | Path, spec_sha256: str) -> None:
    """SK604 unless the checkpoint holds weights of the spec whose fingerprint is `spec_sha256`."""
    if payload["spec_sha256"] != spec_sha256:
        raise CheckpointError(
            f"'{path}' holds weights of spec '{payload.get('spec_name')}' "
            f"(sha256 {payload['spec_sha256'][:12]}), not of this spec (sha256 {spec_sha256[:12]})",
            code="SK604", hint="use the spec it was trained with (its text is in the checkpoint, "
                               "under 'spec_source'), with the same --set values")


def read_file(path: Path):
    """The contents of a torch.save file, tensors and plain values only, or a CheckpointError."""
    if not (zipfile.is_zipfile(path) or _starts_like_a_pickle(path)):
        raise CheckpointError(f"'{path}' is truncated or corrupt: it is neither the zip archive "
                              f"torch.save writes nor a pickle", code="SK602",
                              hint=TRY_ANOTHER)
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle's protocol first
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"'{path}' is not an skdsl checkpoint: it is a pickle of Python "
                              f"objects, which skdsl never unpickles since that can run code",
                              code="SK603", hint=f"torch says: {_first_line(error)}") from None
    except Exception as error:  # noqa: BLE001 - zip, pickle and storage errors alike mean corrupt
        raise CheckpointError(f"'{path}' is truncated or corrupt ({type(error).__name__}: "
                              f"{_first_line(error)})", code="SK602",
                              hint=TRY_ANOTHER) from None


def _starts_like_a_pickle(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(1) == b"\x80"  # the PROTO opcode of every pickle since protocol 2


def _first_line(error: Exception, limit: int = 120) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else "no detail"


# -- random number generator states, as tensors and plain values ----------------------------------


def rng_state() -> dict:
    """This process's generator states: torch (CPU, and CUDA when used), python, numpy when loaded."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    if "numpy" in sys.modules:  # only if something imported it: skdsl itself draws no numpy numbers
        kind, keys, position, has_gauss, cached = sys.modules["numpy"].random.get_state()
        state["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), position, has_gauss, cached)
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if "numpy" in state and "numpy" in sys.modules:
        numpy = sys.modules["numpy"]
        kind, keys, position, has_gauss, cached = state["numpy"]
        numpy.random.set_state((kind, keys.numpy().astype(numpy.uint32), position, has_gauss, cached))


def _as_tuples(value):
    """random.setstate wants tuples where a round trip may have left lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(item) for item in value)
    return value


__all__ = ["FORMAT", "FORMAT_VERSION", "spec_fingerprint", "save", "load", "check_spec", "checksum",
           "rng_state", "set_rng_state"]
