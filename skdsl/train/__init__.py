"""Training and evaluation of compiled skdsl networks (docs/training.md).

    from skdsl.train import TrainConfig, train, evaluate
    result = train(TrainConfig("specs/sknet_tiny.sk", out="runs/tiny", epochs=2))
    result.best_top1, result.out / "best.pt"
    evaluate(EvalConfig("specs/sknet_tiny.sk", checkpoint="runs/tiny/best.pt"))["top1"]

Modules, one job each: config (settings), data (sources, transforms, loaders), recipe (optimiser,
schedule, loss), checkpoint (atomic, checked files), distributed (torchrun, collectives,
SyncBatchNorm), runner (the loop), display and metrics (what is shown and logged), commands (the
`train` and `eval` subcommands). Importing this package does not import torch; `train` does.
"""

from __future__ import annotations

from .config import EvalConfig, TrainConfig


def train(config: TrainConfig):
    """Train as `config` says; returns a `runner.Result` (status, best top-1, history, out)."""
    from .runner import train as _train

    return _train(config)


def evaluate(config: EvalConfig) -> dict:
    """A checkpoint's loss, top-1 and top-5 on a validation split."""
    from .runner import evaluate_checkpoint

    return evaluate_checkpoint(config)


__all__ = ["TrainConfig", "EvalConfig", "train", "evaluate"]
