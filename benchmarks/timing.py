"""Timing on a shared machine: interleaved repeats, medians, paired ratios.

Colleagues' test runs share this machine's two cores, so a lone timing says little. Every
comparison here runs its candidates in turn within one repeat (alternating the order between
repeats), after warm-up, and reports each candidate's median time and the median over repeats
of its time divided by the baseline's time *in the same repeat*: a burst of load that slows one
repeat slows both sides of its ratio.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Timing:
    seconds: float  # median wall-clock time of one call
    ratio: float  # median of (this / baseline) over the repeats; 1.0 for the baseline
    runs: int
    cpu_ratio: float = float("nan")  # the same ratio in this process's CPU time, which a
    # colleague's process taking the core does not inflate (meaningful with one thread)

    def text(self) -> str:
        return f"{_duration(self.seconds)} ({self.ratio:.3f}×)"


def compare(candidates: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
            synchronize: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Time each candidate `repeats` times, interleaved; the first one is the baseline.

    `synchronize` (torch.cuda.synchronize on a GPU) runs before each clock read, so that the
    time covers the kernels launched and not just their launch.
    """
    sync = synchronize or (lambda: None)
    for call in candidates.values():
        for _ in range(warmup):
            call()
    sync()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    cpu_times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            start, cpu_start = time.perf_counter(), time.process_time()
            candidates[name]()
            sync()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)
    return {name: Timing(statistics.median(times[name]),
                         _paired_ratio(times[name], times[names[0]]), repeats,
                         _paired_ratio(cpu_times[name], cpu_times[names[0]]))
            for name in names}


def _paired_ratio(values: list[float], baseline: list[float]) -> float:
    ratios = [value / base for value, base in zip(values, baseline) if base > 0]
    return statistics.median(ratios) if ratios else float("nan")


def median_time(call: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    return compare({"only": call}, repeats, warmup)["only"].seconds


def step(model: torch.nn.Module, x: torch.Tensor, train: bool) -> Callable[[], None]:
    """One inference forward (no_grad) or one training forward+backward of `model` on `x`."""
    if not train:
        def forward() -> None:
            with torch.no_grad():
                model(x)
        return forward

    def forward_backward() -> None:
        model(x).float().mean().backward()
        for parameter in model.parameters():
            parameter.grad = None  # as optimizer.zero_grad(set_to_none=True)
    return forward_backward


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


__all__ = ["Timing", "compare", "median_time", "step"]
