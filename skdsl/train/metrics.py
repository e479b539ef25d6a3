"""Metrics: top-k counts, the metrics.jsonl log, and loss/accuracy curves (optional matplotlib).

metrics.jsonl holds one JSON object per line:

    {"event": "step", "epoch": 1, "batch": 17, "step": 95, "loss": 1.73, "top1": 0.41,
     "lr": 0.1, "images_per_s": 412.0}
    {"event": "epoch", "epoch": 1, "step": 156, "train_loss": ..., "train_top1": ...,
     "val_loss": ..., "val_top1": ..., "val_top5": ..., "lr": ..., "seconds": ...}

Epochs count from 1 in the log and on screen; steps are optimiser steps over the whole run.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from ..errors import CliError


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
            path.write_text("")
        elif path.exists():
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= resume_step]
            # An epoch record at the resumed step was logged before the checkpoint: keep it once.
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.file = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a line cut short by a crash is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def require_matplotlib() -> None:
    """--plot needs matplotlib (the `plot` extra): say so before training, not after."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError("--plot needs matplotlib", code="SK513",
                       hint="pip install 'skdsl[plot]'  (or: pip install matplotlib)") from None


def plot_curves(records: list[dict], path: Path) -> None:
    """Training loss per step, and train/val top-1 per epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

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
    figure.savefig(path, dpi=120)
    plt.close(figure)


def summary_table(history: list[dict], best_epoch: int | None):
    """The per-epoch results as a rich table, the best epoch marked."""
    from rich.table import Table

    table = Table(title="training summary", title_justify="left")
    for column in ("epoch", "train loss", "train top-1", "val loss", "val top-1", "val top-5",
                   "lr", "time"):
        table.add_column(column, justify="right")
    for record in history:
        mark = " *" if record["epoch"] == best_epoch else ""
        table.add_row(f"{record['epoch']}{mark}", f"{record['train_loss']:.4f}",
                      f"{100 * record['train_top1']:.2f}%", f"{record['val_loss']:.4f}",
                      f"{100 * record['val_top1']:.2f}%", f"{100 * record['val_top5']:.2f}%",
                      f"{record['lr']:.4g}", f"{record['seconds']:.0f}s")
    if best_epoch is not None:
        table.caption = "* best validation top-1 (best.pt)"
    return table


__all__ = ["topk_correct", "MetricsLog", "read_metrics", "require_matplotlib", "plot_curves",
           "summary_table"]
