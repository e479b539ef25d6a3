"""Checkpoint and state-dict files: the one place skdsl reads and writes them.

    read(path, READER)                 any torch.save file, weights only (a file never runs code),
                                       or a safetensors file (safetensors_io)
    state_dict_in(payload, path, ...)  the model weights in it: bare, under 'state_dict'/'model',
                                       with wrapper prefixes ('module.', '_orig_mod.', 'model.') off
    checked_checkpoint(payload, ...)   an skdsl checkpoint, its digest and every field checked
    write(payload, path)               torch.save to a temporary file, fsync, rename, fsync folder
    load_weights(model, state, ...)    strict, or leaving out the classifier head (fine-tuning)

An skdsl checkpoint is a dict of tensors and plain values with a `checksum`: the sha256 of a
canonical serialisation of the whole payload (every tensor's dtype, shape and bytes, and every
plain value: config, history, optimizer param groups, RNG states...), so a flipped bit anywhere
that changes what loads is refused. torch's zip reader checks no CRC of its own.

Who reads a file decides the codes of its errors (a `Reader`): `skdsl eval` and `--resume` speak
of checkpoints (SK60x), `skdsl weights convert` of weights files (SK52x), `skdsl export` SK531.
This module imports torch; the modules that use it from the CLI import it lazily.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from ..base import files
from ..base.errors import CheckpointError, InputFileError, SkdslError, declare_settings
from ..version import __version__
from . import safetensors_io

declare_settings("checkpoint", "random_init", "overrides")

FORMAT = "skdsl-checkpoint"
# 2: the checksum covers the whole payload (1: its tensors only; still read).
FORMAT_VERSION = 2
TRY_ANOTHER = "use another checkpoint, such as best.pt beside it"
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")  # DDP, torch.compile, other runners
WRAPPER_KEYS = ("state_dict", "model")  # where other runners keep the weights in a dict
WRITE_DELAY_VARIABLE = files.WRITE_DELAY_VARIABLE  # for tests/train/test_train_kills.py

@dataclass(frozen=True)
class Reader:
    """Who reads a file: the error class, codes and words of its messages."""

    error: type[SkdslError]
    noun: str            # "checkpoint", "weights file"
    missing: str         # code: no such file, or not a regular file
    corrupt: str         # code: truncated, not torch's format, fails the checksum
    foreign: str         # code: a pickle of Python objects (refused unread)
    no_weights: str      # code: no state dict of tensors in it
    missing_hint: str
    corrupt_hint: str = TRY_ANOTHER


CHECKPOINTS = Reader(CheckpointError, "checkpoint", "SK601", "SK602", "SK603", "SK603",
                     "train first, or name the file with {checkpoint}")
WEIGHTS = Reader(InputFileError, "weights file", "SK520", "SK521", "SK521", "SK522",
                 "name a .pth file saved with torch.save(model.state_dict(), ...)",
                 "skdsl reads torch.save and safetensors files: it may be truncated, or of "
                 "another format (numpy, TensorFlow)")
EXPORT = Reader(CheckpointError, "checkpoint", "SK531", "SK602", "SK603", "SK531",
                "name a last.pt or best.pt that `skdsl train` wrote, or pass {random_init}")


# -- writing ---------------------------------------------------------------------------------------


def atomic_path(path: str | Path):
    """files.atomic_path: a temporary file beside the regular file `path` names, renamed over it
    once written; OSError (a FileProblem, for a target that is no regular file) otherwise."""
    return files.atomic_path(path)


def write(payload, path: str | Path) -> None:
    """torch.save `payload` to `path` atomically (atomic_path); raises OSError."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            torch.save(payload, file)


_TEMPORARY = re.compile(r"\.(.+)\.(\d+)\.tmp")


def remove_stale_temporaries(folder: str | Path, all_but_mine: bool = False) -> list[Path]:
    """Remove the temporary files interrupted writes left in `folder`: those of processes that
    are gone, or (`all_but_mine`, for a caller holding the folder's lock) all but this
    process's. Returns what was removed."""
    removed = []
    for candidate in Path(folder).glob(".*.tmp"):
        match = _TEMPORARY.fullmatch(candidate.name)
        if match is None or int(match.group(2)) == os.getpid():
            continue
        if all_but_mine or not _alive(int(match.group(2))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def check_writable(path: str | Path) -> str | None:
    """Why `path` cannot be written (before any expensive work), or None: its folder is
    missing or read-only, or it is a directory, a device, a FIFO or a socket (files.check_writable)."""
    try:
        files.check_writable(path)
    except files.FileProblem as problem:
        return problem.reason
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or a number no process has: leave it
    return True


# -- the digest of a whole payload -----------------------------------------------------------------


def digest(payload: Mapping) -> str:
    """sha256 of a canonical serialisation of `payload` without its 'checksum': each value's
    type, then its contents (tensors: dtype, shape and bytes), in the dicts' own order."""
    hasher = hashlib.sha256()
    _feed(hasher, {key: value for key, value in payload.items() if key != "checksum"})
    return hasher.hexdigest()


def _feed(hasher, value) -> None:
    if isinstance(value, Tensor):
        data = value.detach().cpu().contiguous()
        hasher.update(f"T{data.dtype}{tuple(data.shape)}:".encode())
        # The raw bytes without a numpy round trip.
        hasher.update(ctypes.string_at(data.data_ptr(), data.numel() * data.element_size()))
    elif isinstance(value, Mapping):
        hasher.update(b"D%d:" % len(value))
        for key, item in value.items():
            _feed(hasher, key)
            _feed(hasher, item)
    elif isinstance(value, (list, tuple)):
        hasher.update(b"%s%d:" % (b"L" if isinstance(value, list) else b"U", len(value)))
        for item in value:
            _feed(hasher, item)
    else:
        hasher.update(_scalar(value))


def _scalar(value) -> bytes:
    if value is None or isinstance(value, bool):
        return b"N" if value is None else b"B%d" % value
    if isinstance(value, int):
        return b"I%d;" % value
    if isinstance(value, float):
        return b"F" + value.hex().encode() + b";"  # exact: no decimal rounding
    if isinstance(value, (str, bytes)):
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        return b"%s%d:" % (b"S" if isinstance(value, str) else b"Y", len(data)) + data
    text = f"{type(value).__name__}:{value!r}".encode("utf-8", "surrogatepass")
    return b"O%d:" % len(text) + text


def tensor_digest(payload: Mapping) -> str:
    """Format 1's checksum: every tensor's name, dtype, shape and bytes (plain values not)."""
    hasher = hashlib.sha256()
    for name, tensor in _tensors(payload):
        data = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        hasher.update(ctypes.string_at(data.data_ptr(), data.numel() * data.element_size()))
    return hasher.hexdigest()


def _tensors(value, name: str = ""):
    if isinstance(value, Tensor):
        yield name, value
    elif isinstance(value, Mapping):
        for key in value:
            if key != "checksum":
                yield from _tensors(value[key], f"{name}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{name}/{index}")


# -- reading ---------------------------------------------------------------------------------------


def read(path: str | Path, reader: Reader = CHECKPOINTS):
    """The contents of a torch.save file, tensors and plain values only (torch.load with
    weights_only; memory-mapped when it is torch's zip format), or the tensors of a safetensors
    file (told by its first bytes, whatever its name), or `reader`'s error."""
    path = Path(path)
    try:  # a FIFO or a device would block or never end
        files.check_readable(path, files.MAX_CHECKPOINT_BYTES)
    except files.FileProblem as problem:
        if problem.kind == "missing":
            raise reader.error(f"no {reader.noun} '{path}'", code=reader.missing,
                               hint=reader.missing_hint) from None
        raise reader.error(f"cannot read {reader.noun} '{path}': {problem}",
                           code=reader.missing if problem.kind != "too_large" else reader.corrupt,
                           hint=reader.missing_hint) from None
    if safetensors_io.is_safetensors(path):
        return _read_safetensors(path, reader)
    is_zip = zipfile.is_zipfile(path)
    if not (is_zip or _starts_like_a_pickle(path)):
        raise reader.error(f"'{path}' is truncated or corrupt: it is neither the zip archive "
                           f"torch.save writes nor a pickle", code=reader.corrupt,
                           hint=reader.corrupt_hint)
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle's protocol first
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as error:
        raise reader.error(f"'{path}' holds Python objects besides tensors ({_refusal(error)}), "
                           f"which skdsl never unpickles since that can run code",
                           code=reader.foreign,
                           hint="save the weights alone: torch.save(model.state_dict(), PATH)"
                           ) from None
    except Exception as error:  # noqa: BLE001 - zip, pickle and storage errors alike mean corrupt
        raise reader.error(f"'{path}' is truncated or corrupt ({type(error).__name__}: "
                           f"{first_line(error)})", code=reader.corrupt,
                           hint=reader.corrupt_hint) from None


def _read_safetensors(path: Path, reader: Reader) -> dict[str, Tensor]:
    """The tensors of a safetensors file (no code runs: its header is JSON), or `reader`'s
    error; SK529 without the safetensors package."""
    try:
        return safetensors_io.load(path)
    except SkdslError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of the parser means corrupt
        raise reader.error(f"'{path}' is a truncated or corrupt safetensors file "
                           f"({type(error).__name__}: {first_line(error)})", code=reader.corrupt,
                           hint=reader.corrupt_hint) from None


def _starts_like_a_pickle(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(1) == b"\x80"  # the PROTO opcode of every pickle since protocol 2


def _refusal(error: Exception) -> str:
    """What torch's weights-only unpickler refused, in a few words: 'it names os.system'."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it names {found.group(1)}"
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    return found.group(1).strip()[:100] if found else first_line(error)


def corrupt(path: Path | str, reason: str, reader: Reader = CHECKPOINTS) -> SkdslError:
    """'PATH is corrupt: it fails its checksum' (or another reason), with `reader`'s code."""
    return reader.error(f"'{path}' is corrupt: {reason}", code=reader.corrupt,
                        hint=reader.corrupt_hint)


def first_line(error: Exception, limit: int = 120) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else "no detail"


def is_checkpoint(payload) -> bool:
    return isinstance(payload, Mapping) and isinstance(payload.get("format"), str) \
        and payload["format"] == FORMAT


def state_dict_in(payload, path: Path | str, reader: Reader,
                  expected: Mapping | None = None) -> dict[str, Tensor]:
    """The model weights in a file's payload: a state dict itself, or one under 'state_dict' or
    'model'; keys without wrapper prefixes (`expected`: the target's keys, to stop at)."""
    if isinstance(payload, Mapping):
        for wrapper in WRAPPER_KEYS:
            if wrapper in payload and isinstance(payload[wrapper], Mapping):
                payload = payload[wrapper]
                break
    if not isinstance(payload, Mapping) or not payload:
        what = type(payload).__name__ if not isinstance(payload, Mapping) else "an empty dict"
        raise reader.error(f"'{path}' holds {what}, not a state dict", code=reader.no_weights,
                           hint="expected a dict of tensors, or one under 'state_dict' or "
                                "'model'")
    strays = [str(key) for key, value in payload.items()
              if not isinstance(key, str) or not isinstance(value, Tensor)]
    if strays:
        raise reader.error(f"'{path}' is not a state dict: {len(strays)} entries are not "
                           f"tensors (such as '{strays[0][:60]}')", code=reader.no_weights,
                           hint="expected a dict of tensors, or one under 'state_dict' or "
                                "'model'")
    return strip_wrappers(dict(payload), expected)


def strip_wrappers(state: dict, expected: Mapping | None = None) -> dict:
    """Keys as the bare model names them: without DDP's 'module.', torch.compile's
    '_orig_mod.' or another runner's 'model.' prefix, while every key has one (and, given the
    `expected` keys, while none of them is one of those)."""
    while state:
        if expected is not None and any(key in expected for key in state):
            break
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {key[len(prefix):]: value for key, value in state.items()}
    return state


# -- skdsl checkpoints -----------------------------------------------------------------------------


def spec_fingerprint(spec) -> tuple[str, str]:
    """The expanded spec as canonical JSON and its sha256: equal for the same network, whatever
    its comments, layout or `--set` spelling."""
    text = spec.model_dump_json()
    return text, hashlib.sha256(text.encode()).hexdigest()


def seal(payload: dict) -> dict:
    """`payload` with skdsl's header and the digest of the whole of it."""
    sealed = {**payload, "format": FORMAT, "format_version": FORMAT_VERSION,
              "skdsl_version": __version__}
    return {**sealed, "checksum": digest(sealed)}


def checked_checkpoint(payload, path: Path | str, reader: Reader = CHECKPOINTS,
                       spec_sha256: str | None = None) -> dict:
    """An skdsl checkpoint's payload, whole (its digest), every field of the right type and
    range, and, given `spec_sha256`, of that spec; else `reader`'s error."""
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise corrupt(path, f"its format_version is {_shown(version)}", reader)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"'{path}' was written by skdsl {payload.get('skdsl_version')} in "
                              f"checkpoint format {version}, newer than this skdsl {__version__} "
                              f"reads ({FORMAT_VERSION})", code="SK605", hint="upgrade skdsl")
    stored = payload.get("checksum")
    if not isinstance(stored, str) or stored != _expected_checksum(payload, version, path, reader):
        raise corrupt(path, "it fails its checksum", reader)
    trouble = field_problem(payload)
    if trouble:
        raise corrupt(path, trouble, reader)
    if spec_sha256 is not None:
        check_spec(payload, path, spec_sha256)
    return dict(payload)


# -- every field of a checkpoint, checked before anything uses it ---------------------------------


def _whole(low: int):
    def rule(value) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= low:
            return None
        return f"is {_shown(value)}, not a whole number >= {low}"
    return rule


def _of_type(kind: type, words: str):
    return lambda value: None if isinstance(value, kind) else f"is {_shown(value)}, not {words}"


def _number(value) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None
    return f"is {_shown(value)}, not a number"


def _sha256(value) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return None
    return f"is {_shown(value)}, not a sha256 in hex"


def _tensors_by_name(value) -> str | None:
    if isinstance(value, Mapping) and value and all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items()):
        return None
    return "is not a state dict of tensors"


def _optimizer(value) -> str | None:
    if not (isinstance(value, Mapping) and isinstance(value.get("state"), Mapping)
            and isinstance(value.get("param_groups"), list)):
        return "is not an optimizer state (a dict with 'state' and 'param_groups')"
    for group in value["param_groups"]:
        if not (isinstance(group, Mapping) and isinstance(group.get("params"), list)):
            return "has a param group that is not a dict with a list of 'params'"
    return None


# What an epoch's record in `history` holds (runner._epoch_record), each a number.
HISTORY_KEYS = ("epoch", "step", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5")


def _history(value) -> str | None:
    if not isinstance(value, list):
        return f"is {_shown(value)}, not a list of epoch records"
    for index, record in enumerate(value):
        if not isinstance(record, Mapping):
            return f"holds {_shown(record)} at {index}, not an epoch record"
        for key in HISTORY_KEYS:
            if _number(record.get(key)):
                return f"record {index} has {key} {_shown(record.get(key))}, not a number"
    return None


def _epoch_totals(value) -> str | None:
    if not isinstance(value, Mapping):
        return f"is {_shown(value)}, not a dict"
    for key, item in value.items():
        if key not in ("loss", "top1", "batches") or _number(item):
            return f"holds {_shown(key)}: {_shown(item)}, not loss, top1 and batches sums"
    return None


def _rng(value) -> str | None:
    if isinstance(value, list) and all(
            isinstance(state, Mapping) and isinstance(state.get("torch"), Tensor)
            and isinstance(state.get("python"), (tuple, list)) for state in value):
        return None
    return "is not a list of random generator states (torch and python, per process)"


def _config(value) -> str | None:
    from ..core.settings import config_problem  # torch-free: the settings' types and ranges

    if not isinstance(value, Mapping):
        return f"is {_shown(value)}, not a dict of settings"
    return config_problem(value)


def _optional(rule):
    return lambda value: None if value is None else rule(value)


FIELDS = {
    "format_version": _whole(1), "skdsl_version": _of_type(str, "text"),
    "spec_name": _of_type(str, "text"), "spec_source": _of_type(str, "text"),
    "spec_json": _of_type(str, "text"), "spec_sha256": _sha256,
    "model": _tensors_by_name, "optimizer": _optimizer,
    "scaler": _of_type(Mapping, "a dict"), "schedule": _of_type(Mapping, "a dict"),
    "epoch": _whole(0), "batch_in_epoch": _whole(0), "step": _whole(0),
    "best_top1": _number, "best_epoch": _optional(_whole(1)), "history": _history,
    "epoch_totals": _epoch_totals, "rng": _rng, "config": _config,
    "ema": _optional(_tensors_by_name),  # --ema: the moving average of the weights
}
# Read by eval and --resume: a checkpoint without one of them is corrupt.
REQUIRED = ("spec_sha256", "model", "optimizer", "epoch", "batch_in_epoch", "step", "best_top1",
            "history", "epoch_totals", "config")


def field_problem(payload: Mapping) -> str | None:
    """What is wrong with the first bad field of a checkpoint, or None."""
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        return f"it lacks {', '.join(missing)}"
    for key, rule in FIELDS.items():
        trouble = rule(payload[key]) if key in payload else None
        if trouble:
            return f"its {key} {trouble}"
    return _between_fields(payload)


def _between_fields(payload: Mapping) -> str | None:
    """What the fields say of each other: a run with --ema saves its average, and a run that
    accumulates K batches a step saves only between steps (batch_in_epoch a multiple of K)."""
    config = payload["config"]
    if config.get("ema") is not None and payload.get("ema") is None:
        return f"its config has ema {_shown(config['ema'])} but it holds no ema weights"
    if payload.get("ema") is not None and set(payload["ema"]) != set(payload["model"]):
        return "its ema weights are not of its model's tensors"
    accum = config.get("accum_steps") or 1
    if payload["batch_in_epoch"] % accum:
        return (f"its batch_in_epoch {payload['batch_in_epoch']} is not a whole number of "
                f"steps of accum_steps {accum}")
    return None


def _shown(value) -> str:
    text = repr(value) if not isinstance(value, Tensor) else f"a tensor {tuple(value.shape)}"
    return text if len(text) <= 40 else text[:37] + "..."


def _expected_checksum(payload: Mapping, version: int, path, reader: Reader) -> str | None:
    try:
        return tensor_digest(payload) if version == 1 else digest(payload)
    except (RecursionError, RuntimeError, TypeError, ValueError) as error:
        raise corrupt(path, f"its digest cannot be computed ({type(error).__name__}: "
                            f"{first_line(error)})", reader) from None


def check_spec(payload: Mapping, path: Path | str, spec_sha256: str) -> None:
    """SK604 unless the checkpoint holds weights of the spec whose fingerprint is `spec_sha256`."""
    if payload["spec_sha256"] != spec_sha256:
        raise CheckpointError(
            f"'{path}' holds weights of spec '{payload.get('spec_name')}' "
            f"(sha256 {payload['spec_sha256'][:12]}), not of this spec (sha256 {spec_sha256[:12]})",
            code="SK604", hint="use the spec it was trained with (its text is in the checkpoint, "
                               "under 'spec_source'), with the same {overrides} values")


# -- weights into a model --------------------------------------------------------------------------


def head_keys(model: nn.Module) -> frozenset[str]:
    """The state-dict keys of the classifier head: the network's last nn.Linear."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        return frozenset()
    prefix = linears[-1] + "."
    return frozenset(key for key in model.state_dict() if key.startswith(prefix))


def load_weights(model: nn.Module, state: Mapping[str, Tensor], path: Path | str,
                 spec_name: str, leave_out: frozenset[str] = frozenset()) -> list[str]:
    """Load `state` into `model`; only the keys in `leave_out` (the head, when fine-tuning) may
    be absent or of another shape, and stay as initialised. Returns those left out; a
    CheckpointError (SK532) names every other misfit."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    resized = [key for key in own if key in state
               and tuple(own[key].shape) != tuple(state[key].shape)]
    left = [key for key in missing + resized if key in leave_out]
    details = [f"{kind} {_some(keys)}" for kind, keys in
               (("missing", [k for k in missing if k not in leave_out]),
                ("unexpected", unexpected),
                ("other shapes for", [k for k in resized if k not in leave_out])) if keys]
    if not details:
        try:
            model.load_state_dict({k: v for k, v in state.items() if k not in left},
                                  strict=not left)
            return left
        except (RuntimeError, ValueError) as error:
            details = [first_line(error)]
    raise CheckpointError(f"the weights in '{path}' do not fit {spec_name}: {'; '.join(details)}",
                          code="SK532", hint="use the spec (and {overrides} values) the weights were "
                                             "trained with")


def describe_left_out(left: list[str], own: Mapping[str, Tensor],
                      state: Mapping[str, Tensor]) -> str:
    """'head.fc.weight (10×256 in the file, 5×256 here), head.fc.bias (not in the file)'."""
    def one(key: str) -> str:
        if key not in state:
            return f"{key} (not in the file)"
        return f"{key} ({_shape(state[key])} in the file, {_shape(own[key])} here)"

    return ", ".join(one(key) for key in left)


def _shape(tensor: Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "scalar"


def _some(keys: list[str], shown: int = 3) -> str:
    text = ", ".join(keys[:shown])
    return f"{text} and {len(keys) - shown} more" if len(keys) > shown else text


def read_weights(path: str | Path, reader: Reader, spec_sha256: str | None = None,
                 expected=None) -> tuple[dict, dict | None]:
    """The model weights in any file skdsl takes (an skdsl checkpoint, checked whole and, given
    `spec_sha256`, against that spec; converted weights; a bare or wrapped state dict), and the
    checkpoint when it is one."""
    payload = read(path, reader)
    if is_checkpoint(payload):
        saved = checked_checkpoint(payload, path, reader, spec_sha256)
        return saved["model"], saved
    return state_dict_in(payload, path, reader, expected), None


__all__ = ["read_weights", "FORMAT", "FORMAT_VERSION", "Reader", "CHECKPOINTS", "WEIGHTS", "EXPORT",
           "atomic_path", "write", "remove_stale_temporaries", "check_writable", "digest",
           "read", "state_dict_in", "strip_wrappers", "is_checkpoint", "spec_fingerprint",
           "seal", "checked_checkpoint", "check_spec", "head_keys", "load_weights",
           "describe_left_out", "corrupt", "first_line"]
