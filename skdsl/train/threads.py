"""Intra-op threads: each training process takes its share of the cores it may run on.

torch's default is one thread per physical core of the machine, whatever the process's CPU
affinity (a container's or `taskset`'s limit) and however many training processes share the
machine: under torchrun N processes then run N × cores threads, and an OpenMP thread that waits
for a core another process holds stalls every parallel region it belongs to. The default here is
the cores this process may run on (`os.sched_getaffinity`) divided by the processes torchrun
started on this machine (LOCAL_WORLD_SIZE), at least 1; `--threads N` overrides it.

The thread count alone does not prevent the collapse: libgomp's threads spin while they wait at
the end of a parallel region, so when a neighbour holds one of the cores, the spinning thread
takes the CPU from the one still working. `skdsl train` therefore asks OpenMP to wait passively
(OMP_WAIT_POLICY=PASSIVE, read once, when torch loads OpenMP; a value the user set is kept).
benchmarks/threads.py measures both on a quiet machine and beside a busy neighbour.
"""

from __future__ import annotations

import contextlib
import os
import sys

from ..base.errors import SettingError
from ..base.launch import launch


def available_cores() -> int:
    """The cores this process may run on (its affinity), or the machine's where that is unknown."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def local_processes(environ=None) -> int:
    """Training processes on this machine: torchrun's LOCAL_WORLD_SIZE, else 1."""
    return launch(environ).local_world_size


def default_threads(environ=None) -> int:
    """This process's share of its cores: affinity ÷ local processes, at least 1."""
    return max(1, available_cores() // local_processes(environ))


def checked_threads(asked: int | None, environ=None) -> int:
    """The intra-op threads of this process: `asked`, else its share of the cores. More than
    the cores it may run on is refused before torch starts them: beyond the cores they only wait
    on each other, and by the thousand their stacks exhaust memory before the first step
    (`--threads 4096` failed inside OpenMP's allocator, found by the command-line fuzzer)."""
    if asked is None:
        return default_threads(environ)
    cores = available_cores()
    if asked > cores:
        raise SettingError(f"{{threads}} {asked:,} is more than the {cores} core"
                           f"{'s' if cores > 1 else ''} this process may run on", code="SK510",
                           hint=f"give at most {cores}, or leave out {{threads}} for this "
                                "process's share of its cores")
    return asked


def prefer_passive_waiting() -> bool:
    """OMP_WAIT_POLICY=PASSIVE unless set, while torch (and so OpenMP) is not loaded yet; True
    when it applies to this process."""
    if "torch" in sys.modules:
        return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"


@contextlib.contextmanager
def using_threads(count: int):
    """torch's intra-op threads set to `count` for the block, and put back after it: a run started
    from Python leaves the interpreter as it found it."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)


__all__ = ["available_cores", "local_processes", "default_threads", "checked_threads",
           "prefer_passive_waiting", "using_threads"]
