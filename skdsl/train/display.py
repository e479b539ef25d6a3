"""What a person sees while training: a rich progress bar on a terminal, plain lines otherwise.

A CI log or a file gets one line every `interval` seconds and one at the end of each epoch, not
a redrawn bar. Only rank 0 shows anything; the other processes get a `Display(enabled=False)`.
A line that names a setting writes it `spelled(name)`: its name from Python, its flag from the
command line (which passes its own speller to runner.train).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

from ..base.errors import named
from ..base.terminal import rich_environment


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

    def __init__(self, enabled: bool = True, stream=None, interval: float = 10.0,
                 spelled: Callable[[str], str] = named):
        self.enabled = enabled
        self.spelled = spelled  # how a line writes a setting: `epochs`, or the CLI's `--epochs`
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
                             TimeRemainingColumn(), console=Console(file=self.stream, _environ=rich_environment()),
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


def banner_lines(facts: dict) -> list[str]:
    """The run's first lines, from the facts runner._announce gathers: how it runs (device,
    threads, precision, memory format, compile), the network (parameters and multiply-adds from
    skdsl.analyze), the recipe, and the data (split sizes, global batch, steps per epoch)."""
    from ..report.network import grouped, short_count

    config, recipe, source = facts["config"], facts["recipe"], facts["source"]
    world = facts["world_size"]
    processes = f" in each of {world} processes" if world > 1 else ""
    mult_adds = ("multiply-adds unknown (not an skdsl network)" if facts["mult_adds"] is None
                 else f"{short_count(facts['mult_adds'])} multiply-adds per image")
    size = f" at {'×'.join(map(str, facts['input']))}" if facts["input"] else ""
    return [
        f"device {facts['device']}, {facts['threads']} thread(s){processes}, {config.precision}, "
        f"{'channels_last' if config.channels_last else 'contiguous'} memory, "
        f"{'torch.compile' if config.compile else 'no compile'}",
        f"network {facts['network']}: {grouped(facts['params'])} parameters, {mult_adds}{size}",
        f"recipe {recipe_text(recipe)}",
        f"data {source.name}: {len(source.train):,} train / {len(source.val):,} val images"
        + (f", {source.classes} classes" if source.classes else "")
        + f"; global batch {recipe.batch_size}"
        + (f" × {recipe.accum_steps} accumulated = {recipe.step_batch} images a step"
           if recipe.accum_steps > 1 else "")
        + f", {counted(facts['steps_per_epoch'], 'step')} an epoch, "
          f"{counted(recipe.epochs, 'epoch')}",
    ]


def counted(number: int, noun: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def recipe_text(recipe) -> str:
    """'cifar: sgd lr 0.1, weight decay 0.0005, step schedule (÷10 after 150, 225), ...'."""
    schedule = (f"step schedule (÷10 after epochs {', '.join(map(str, recipe.milestones))})"
                if recipe.schedule == "step" else "cosine schedule")
    warmup = (f"{recipe.warmup_steps} steps" if recipe.warmup_steps is not None
              else f"{recipe.warmup_epochs:g} epochs")
    knobs = [f"{name} {value:g}" for name, value in (
        ("label smoothing", recipe.label_smoothing), ("clip-grad", recipe.clip_grad),
        ("ema", recipe.ema_decay), ("mixup", recipe.mixup), ("cutmix", recipe.cutmix)) if value]
    if recipe.augment != "standard":
        knobs.append(recipe.augment)
    return (f"{recipe.name}: {recipe.optimizer} lr {recipe.lr:.4g}, weight decay "
            f"{recipe.weight_decay:g}, {schedule}, warm-up {warmup}"
            + "".join(f", {knob}" for knob in knobs))


def _metrics(progress: Progress) -> str:
    return (f"loss {progress.loss:.4f}  top-1 {100 * progress.top1:5.1f}%  "
            f"{progress.images_per_s:,.0f} img/s  lr {progress.lr:.4g}")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


__all__ = ["Display", "Progress", "banner_lines", "recipe_text", "counted"]
