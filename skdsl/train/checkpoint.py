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
    checksum                                   sha256 over the whole payload (skdsl/nn/state_io.py)

The files themselves are read and written by skdsl/nn/state_io.py, which export and weights use too;
this module adds what only training needs: the random generator states.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch

from ..base.errors import CheckpointError
from ..nn import state_io
from ..nn.state_io import FORMAT, FORMAT_VERSION, check_spec, spec_fingerprint

checksum = state_io.digest


def save(payload: dict, path: str | Path) -> None:
    """Write `payload`, sealed with skdsl's header and its digest, so that `path` always holds a
    whole checkpoint, old or new (state_io.atomic_path)."""
    try:
        state_io.write(state_io.seal(payload), path)
    except OSError as error:
        raise CheckpointError(f"cannot write checkpoint '{path}': {error.strerror or error}",
                              code="SK607") from None


def load(path: str | Path, spec_sha256: str | None = None) -> dict:
    """A checkpoint's payload, checked whole and, given `spec_sha256`, checked to fit that spec.

    Every way it can be unusable is a CheckpointError: missing (SK601), truncated, corrupt or
    with a field of the wrong type or range (SK602), not an skdsl checkpoint (SK603), of another
    spec (SK604), from a newer skdsl (SK605).
    """
    payload = state_io.read(path, state_io.CHECKPOINTS)
    if not state_io.is_checkpoint(payload):
        raise CheckpointError(f"'{path}' is not an skdsl checkpoint: it holds "
                              f"{type(payload).__name__} data without skdsl's header", code="SK603",
                              hint="skdsl reads the last.pt and best.pt files that `skdsl train` "
                                   "writes; a bare state_dict cannot tell which spec it fits")
    return state_io.checked_checkpoint(payload, path, state_io.CHECKPOINTS, spec_sha256)


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
           "read_weights", "rng_state", "set_rng_state"]
