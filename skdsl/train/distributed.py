"""Processes and devices: torchrun's environment, collectives on metrics, synchronised BatchNorm.

`torchrun --nproc_per_node N` (or several launchers, one per node, meeting at a rendezvous
endpoint) starts N processes with RANK, WORLD_SIZE and LOCAL_RANK in their environment. Each
joins one process group: NCCL between GPUs, Gloo between CPU processes. Without torchrun the world
is one process and every collective here is a no-op.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
from dataclasses import astuple, dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..base.errors import declare_settings
from ..base.errors import SettingError
from ..base.launch import launch
from ..core.settings import DEVICES

declare_settings("device")


@dataclass(frozen=True)
class Context:
    """This process's place in the run: its rank among `world_size` and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, metrics and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_size() -> int:
    """Processes in the run, as torchrun says (before the process group is joined); 1 alone."""
    return launch().world_size


def setup(device: str = "auto", timeout_minutes: int = 30) -> Context:
    """This process's context, joining torchrun's process group when there is one."""
    world_size, rank, local_rank, _ = astuple(launch())
    chosen = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)  # before NCCL starts: one GPU per process
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return Context(rank, world_size, local_rank, chosen)


@contextlib.contextmanager
def process_group(device: str = "auto"):
    """This process's context for the length of a run. On a normal exit every process waits for
    the others before the group goes: rank 0 may still be writing a checkpoint, and a process
    that left early would tear down connections the others still use."""
    context = setup(device)
    try:
        yield context
        barrier(context)
    finally:
        teardown()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        # A finished run can be held by cyclic garbage (the first optimizer's lazy import of
        # torch._dynamo leaves cycles holding the frames that built the run). Freed by a later
        # collection, its DDP reducer would let go of the group after the group is gone, at
        # interpreter shutdown perhaps, where Gloo aborts the process ("terminate called
        # without an active exception") after a run that went well. Free it now.
        gc.collect()
        dist.destroy_process_group()


def pick_device(request: str, local_rank: int = 0) -> torch.device:
    """`auto`: this process's GPU when CUDA is there, else the CPU."""
    if request == "cpu" or (request == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SettingError("{device} cuda: this machine has no CUDA GPU that torch can use",
                           code="SK510", hint="use {device} cpu (or leave {device} out)")
    if local_rank >= torch.cuda.device_count():
        raise SettingError(f"process {local_rank} on this node has no GPU: only "
                       f"{torch.cuda.device_count()} are visible", code="SK510",
                       hint="start at most one process per GPU: torchrun --nproc_per_node "
                            f"{torch.cuda.device_count()}")
    return torch.device("cuda", local_rank)


# -- collectives: each is a sync point where every process waits for the slowest ---------------


def all_reduce(tensor: Tensor, context: Context, op: str = "sum") -> Tensor:
    """`tensor` reduced over all processes (sum, min or max), in place; a no-op alone."""
    if context.distributed:
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def gather_objects(value, context: Context) -> list:
    """Every process's `value` (picklable), in rank order; [value] alone."""
    if not context.distributed:
        return [value]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value, context: Context):
    """Rank 0's `value` in every process."""
    if not context.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


# -- synchronised BatchNorm -----------------------------------------------------------------------


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every process's loss depends
    on every process's statistics."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the global batch for CPU processes (torch's SyncBatchNorm needs a GPU).

    Two all-reduces per layer, mean first and then the centred sum of squares, so the variance
    is as accurate as one process's BatchNorm over the same images. Parameters and buffers are
    BatchNorm2d's, so checkpoints do not change.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        channels = x.shape[1]
        count = x.new_tensor(float(x.numel() // channels))
        count = _SumOverProcesses.apply(count).detach()  # images × pixels in the global batch
        mean = _SumOverProcesses.apply(x.sum(dim=(0, 2, 3))) / count  # C
        centred = x - mean.view(1, -1, 1, 1)  # N×C×H×W
        variance = _SumOverProcesses.apply((centred * centred).sum(dim=(0, 2, 3))) / count  # C
        if self.track_running_stats:
            self._update_running_statistics(mean.detach(), variance.detach(), count)
        normalised = centred * torch.rsqrt(variance + self.eps).view(1, -1, 1, 1)
        if not self.affine:
            return normalised
        return normalised * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    @torch.no_grad()
    def _update_running_statistics(self, mean: Tensor, variance: Tensor, count: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
        unbiased = variance * count / (count - 1).clamp(min=1)  # as BatchNorm2d keeps it
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased, momentum)


def use_sync_batchnorm(model: nn.Module, device: torch.device) -> int:
    """Make every BatchNorm2d normalise over the global batch; returns how many were converted.

    The modules change class in place rather than being replaced: a compiled skdsl network runs
    a schedule holding the module objects themselves, which a replacement would leave behind.
    """
    converted = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            if device.type == "cuda":
                module.__class__ = nn.SyncBatchNorm
                module.process_group = None  # the default group: every process
            else:
                module.__class__ = GlooSyncBatchNorm
            converted += 1
    return converted


__all__ = ["DEVICES", "Context", "setup", "process_group", "teardown", "pick_device", "all_reduce",
           "gather_objects", "broadcast_object", "barrier", "GlooSyncBatchNorm",
           "use_sync_batchnorm"]
