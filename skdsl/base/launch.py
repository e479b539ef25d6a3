"""torchrun's environment, read and checked in one place.

torchrun (or any launcher that speaks its protocol) starts each process with WORLD_SIZE, RANK,
LOCAL_RANK and LOCAL_WORLD_SIZE. A process started by hand has none of them: one process, rank 0.
A value that is not a whole number in its range (WORLD_SIZE=0, RANK=3 of 2) is an SK515 naming
the variable, never a ZeroDivisionError deep in the data sharding. Imports no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from .errors import SkdslError

VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
_MOST_PROCESSES = 1 << 20  # far past any cluster; keeps a 5,000-digit value from reaching int()


class LaunchError(SkdslError):
    """A torchrun variable in the environment that no launcher would set."""

    code = "SK515"


@dataclass(frozen=True)
class Launch:
    """This process's place among the processes its launcher started."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine


def launch(environ: Mapping[str, str] | None = None) -> Launch:
    """The launch `environ` (default: this process's environment) describes, checked."""
    environ = os.environ if environ is None else environ
    world_size = _read(environ, "WORLD_SIZE", 1, 1, _MOST_PROCESSES)
    rank = _read(environ, "RANK", 0, 0, world_size - 1)
    local_world_size = _read(environ, "LOCAL_WORLD_SIZE", 1, 1, _MOST_PROCESSES)
    most_local = local_world_size - 1 if "LOCAL_WORLD_SIZE" in environ else world_size - 1
    local_rank = _read(environ, "LOCAL_RANK", 0, 0, most_local)
    return Launch(world_size, rank, local_rank, local_world_size)


def _read(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = environ.get(name)
    if text is None:
        return default
    digits = text.strip()
    value = int(digits) if digits.isdigit() and len(digits) <= 7 else None
    if value is None or not low <= value <= high:
        shown = repr(text) if len(text) <= 20 else repr(text[:19] + "…")
        raise LaunchError(f"the environment variable {name}={shown} is not a whole number from "
                          f"{low} to {high:,}, as a launcher such as torchrun sets it",
                          hint=f"unset {', '.join(VARIABLES)} to run one process, or start the "
                               f"processes with torchrun")
    return value
