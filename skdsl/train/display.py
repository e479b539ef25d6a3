"""What a person sees while training: a rich progress bar on a terminal, plain lines otherwise.

A CI log or a file gets one line every `interval` seconds and one at the end of each epoch, not
a redrawn bar. Only rank 0 shows anything; the other processes get a `Display(enabled=False)`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass


@dataclass
class Progress:
    """Where an epoch stands, as shown: counts, the latest smoothed loss and accuracy, speed."""

    epoch: int  # from 1
    epochs: int
    batch: int  # batches done in this epoch
    batches: int
    batch_images: int  # images per global batch
    loss: float
    top1: float
    images_per_s: float
    lr: float

    def eta_seconds(self) -> float:
        remaining_images = (self.batches - self.batch) * self.batch_images
        return remaining_images / self.images_per_s if self.images_per_s > 0 else 0.0


class Display:
    """One epoch at a time: `start`, `update` as losses come back, `finish` with its results."""

    def __init__(self, enabled: bool = True, stream=None, interval: float = 10.0):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.interval = interval
        self.interactive = enabled and self.stream.isatty()
        self._bar = None
        self._task = None
        self._last_line = 0.0

    def start(self, epoch: int, epochs: int, batches: int, done: int) -> None:
        if not self.interactive:
            self._last_line = time.monotonic()
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self._bar = Progress(TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(),
                             MofNCompleteColumn(), TextColumn("{task.fields[metrics]}"),
                             TimeRemainingColumn(), console=Console(file=self.stream),
                             transient=True)
        self._bar.start()
        self._task = self._bar.add_task("train", total=batches, completed=done, metrics="")

    def update(self, progress: Progress) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=progress.batch, metrics=_metrics(progress))
        elif time.monotonic() - self._last_line >= self.interval:
            self._last_line = time.monotonic()
            self.line(f"epoch {progress.epoch}/{progress.epochs}  batch "
                      f"{progress.batch}/{progress.batches}  {_metrics(progress)}  "
                      f"eta {_clock(progress.eta_seconds())}")

    def finish(self, epoch: int, epochs: int, results: dict) -> None:
        self.stop()
        self.line(f"epoch {epoch}/{epochs}  train loss {results['train_loss']:.4f}  top-1 "
                  f"{100 * results['train_top1']:.2f}%  |  val loss {results['val_loss']:.4f}  "
                  f"top-1 {100 * results['val_top1']:.2f}%  top-5 {100 * results['val_top5']:.2f}%"
                  f"  |  {results['seconds']:.0f}s")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)


def _metrics(progress: Progress) -> str:
    return (f"loss {progress.loss:.4f}  top-1 {100 * progress.top1:5.1f}%  "
            f"{progress.images_per_s:,.0f} img/s  lr {progress.lr:.4g}")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


__all__ = ["Display", "Progress"]
