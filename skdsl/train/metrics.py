"""Metrics: top-k counts, the metrics.jsonl log, and loss/accuracy curves (optional matplotlib).

metrics.jsonl holds one JSON object per line:

    {"event": "step", "epoch": 1, "batch": 17, "step": 95, "loss": 1.73, "top1": 0.41,
     "lr": 0.1, "images_per_s": 412.0}
    {"event": "epoch", "epoch": 1, "step": 156, "train_loss": ..., "train_top1": ...,
     "val_loss": ..., "val_top1": ..., "val_top5": ..., "lr": ..., "seconds": ...}

Epochs count from 1 in the log and on screen; steps are optimiser steps over the whole run.
An epoch record also holds images_per_s (training images a second over the epoch), data_wait
(the fraction of it spent waiting for the loader), peak_memory_mib, and with --ema the
ema_val_loss, ema_val_top1 and ema_val_top5 of the moving average.

metrics.csv holds the epoch records as a table, rewritten after every epoch; with the
`tensorboard` extra installed, --out/tensorboard/ holds event files of the same numbers.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from torch import Tensor

from ..base import files, plotting
from ..base.errors import declare_settings
from ..base.errors import SettingError

declare_settings("plot")


def topk_correct(logits: Tensor, labels: Tensor, k: int = 5) -> tuple[Tensor, Tensor]:
    """How many of the batch are right at top-1 and at top-k (k capped at the class count)."""
    k = min(k, logits.shape[1])
    best = logits.topk(k, dim=1).indices  # N×k
    hits = best == labels[:, None]  # N×k, at most one True per row
    return hits[:, 0].sum(), hits.sum()


class MetricsLog:
    """Appends records to metrics.jsonl; on resume, first drops records past the checkpoint."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is None:
            files.write_text(path, "")
        elif path.exists():
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= resume_step]
            # An epoch record at the resumed step was logged before the checkpoint: keep it once.
            files.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self.file = open(path, "a", encoding="utf-8")  # the regular file just written

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


CSV_FIRST = ("epoch", "step", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
             "lr", "seconds", "images_per_s", "data_wait", "peak_memory_mib")


def write_csv(history: list[dict], path: Path) -> None:
    """The epoch records as a CSV table: the usual columns first, any others after them."""
    columns = [c for c in CSV_FIRST if any(c in r for r in history)]
    columns += sorted({key for r in history for key in r} - set(columns) - {"event"})
    with files.atomic_path(path) as temporary, open(temporary, "w", newline="",
                                                    encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


class TensorBoardLog:
    """Scalars for TensorBoard (--out/tensorboard/), when the `tensorboard` extra is installed:
    train/loss, train/top1 and train/lr per step; epoch/<name> per epoch, at the epoch's step."""

    def __init__(self, writer):
        self.writer = writer

    @classmethod
    def open(cls, out: Path, resume_step: int | None) -> "TensorBoardLog | None":
        """A log in out/tensorboard, or None without tensorboard. On resume, events past the
        checkpoint's step are purged, as metrics.jsonl is cut back."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional extra: pip install 'skdsl[tensorboard]'
            return None
        purge = resume_step + 1 if resume_step is not None else None
        return cls(SummaryWriter(str(out / "tensorboard"), purge_step=purge))

    def write(self, record: dict) -> None:
        if record["event"] == "step":
            for key in ("loss", "top1", "lr"):
                self.writer.add_scalar(f"train/{key}", record[key], record["step"])
            return
        for key, value in record.items():
            if key not in ("event", "epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def peak_memory_mib(device) -> float:
    """The most memory this epoch held: CUDA's peak allocation since the epoch began; on a CPU
    the process's peak resident size so far (the kernel keeps no per-epoch peak)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a line cut short by a crash is skipped."""
    records = []
    for line in files.read_text(path, files.MAX_TEXT_BYTES).splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut short by a crash, or a number no float holds
            continue
    return records


def require_matplotlib() -> None:
    """--plot needs matplotlib (the `plot` extra): say so before training, not after."""
    if not plotting.available():
        raise SettingError("{plot} needs matplotlib", code="SK513",
                           hint="pip install 'skdsl[plot]'  (or: pip install matplotlib)")


def plot_curves(records: list[dict], path: Path) -> None:
    """Training loss per step, and train/val top-1 per epoch, as one PNG."""
    plt = plotting.pyplot()

    steps = [r for r in records if r["event"] == "step"]
    epochs = [r for r in records if r["event"] == "epoch"]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axes.plot([r["step"] for r in steps], [r["loss"] for r in steps], linewidth=0.8,
                   label="train (per step)")
    loss_axes.plot([r["step"] for r in epochs], [r["val_loss"] for r in epochs], "o-",
                   label="validation")
    loss_axes.set(xlabel="step", ylabel="loss", title="loss")
    loss_axes.legend()
    for key, label in (("train_top1", "train top-1"), ("val_top1", "validation top-1"),
                       ("val_top5", "validation top-5")):
        accuracy_axes.plot([r["epoch"] for r in epochs], [100 * r[key] for r in epochs], "o-",
                           label=label)
    accuracy_axes.set(xlabel="epoch", ylabel="%", title="accuracy")
    accuracy_axes.legend()
    figure.tight_layout()
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def summary_table(history: list[dict], best_epoch: int | None):
    """The per-epoch results as a table fitted to the terminal (report.FittedTable: never a cut
    number), the best epoch marked; train loss, lr and time are left out first when narrow."""
    from ..report.network import Column, FittedTable

    def cells(format_record) -> list[str]:
        return [format_record(record) for record in history]

    columns = [
        Column("epoch", cells(lambda r: f"{r['epoch']}{' *' if r['epoch'] == best_epoch else ''}"),
               justify="right"),
        Column("train loss", cells(lambda r: f"{r['train_loss']:.4f}"), justify="right",
               drop_order=3),
        Column("train top-1", cells(lambda r: f"{100 * r['train_top1']:.2f}%"), justify="right",
               drop_order=4),
        Column("val loss", cells(lambda r: f"{r['val_loss']:.4f}"), justify="right",
               drop_order=5),
        Column("val top-1", cells(lambda r: f"{100 * r['val_top1']:.2f}%"), justify="right"),
        Column("val top-5", cells(lambda r: f"{100 * r['val_top5']:.2f}%"), justify="right",
               drop_order=6),
        Column("lr", cells(lambda r: f"{r['lr']:.4g}"), justify="right", drop_order=2),
        Column("time", cells(lambda r: f"{r['seconds']:.0f}s"), justify="right", drop_order=1),
    ]
    caption = ["* best validation top-1 (best.pt)"] if best_epoch is not None else []
    return FittedTable(columns, title="training summary", caption=caption)


__all__ = ["topk_correct", "MetricsLog", "read_metrics", "require_matplotlib", "plot_curves",
           "summary_table", "write_csv", "TensorBoardLog", "peak_memory_mib"]
