"""safetensors files, read and written with the optional `safetensors` package.

A safetensors file is its header's length (8 bytes, little-endian), that header (JSON: each
tensor's dtype, shape and byte range) and the tensors' bytes: reading one runs no code, as
torch.load(weights_only=True) runs none. `is_safetensors` tells one by its first bytes, whatever
its name; state_io.read reads it for every command that takes weights. Without the package, a
clear error (SK529) says how to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..base import files
from ..base.errors import InputFileError

if TYPE_CHECKING:
    from torch import Tensor

SUFFIX = ".safetensors"
_LENGTH_BYTES = 8
_LARGEST_HEADER = 100_000_000  # the safetensors library refuses longer headers


def is_safetensors(path: str | Path) -> bool:
    """Whether the file starts as safetensors do: a header length no larger than the library
    reads, then the header's opening brace (`{"`, or `{}` for no tensors)."""
    with open(path, "rb") as file:
        start = file.read(_LENGTH_BYTES + 1)
    length = int.from_bytes(start[:_LENGTH_BYTES], "little")
    return len(start) > _LENGTH_BYTES and start[_LENGTH_BYTES:] == b"{" \
        and 2 <= length <= _LARGEST_HEADER


def package(purpose: str = "reading and writing safetensors files"):
    """`safetensors.torch`, or an InputFileError (SK529) that says what needs it (`purpose`)
    and how to install it."""
    try:
        import safetensors.torch
    except ImportError:
        raise InputFileError(f"{purpose} needs the safetensors package, which is not "
                             f"installed", code="SK529",
                             hint="pip install 'skdsl[safetensors]'") from None
    return safetensors.torch


def load(path: str | Path) -> dict[str, "Tensor"]:
    """The tensors of a safetensors file, on the CPU (the package's errors for a broken file:
    the caller words them)."""
    reader = package(f"'{path}' is a safetensors file: reading it")
    return reader.load_file(str(path), device="cpu")


def save(state: Mapping[str, "Tensor"], path: str | Path) -> None:
    """`state` to `path` as safetensors, atomically (files.atomic_path): OSError when it cannot
    be written, as for a full disk (tensors that share memory, which the format cannot hold,
    included)."""
    writer = package(f"writing '{path}' as safetensors")
    tensors = {key: tensor.detach().cpu().contiguous() for key, tensor in state.items()}
    with files.atomic_path(path) as temporary:
        try:
            writer.save_file(tensors, str(temporary), metadata={"format": "pt"})
        except OSError:
            raise
        except Exception as error:  # noqa: BLE001 - the package's own errors: shared memory...
            text = str(error).strip().splitlines()
            raise OSError(text[0][:200] if text else type(error).__name__) from None


__all__ = ["SUFFIX", "is_safetensors", "package", "load", "save"]
