"""Training and evaluation of compiled skdsl networks (docs/training.md).

    from skdsl.train import TrainConfig, train, evaluate
    result = train(TrainConfig("specs/sknet_tiny.sk", out="runs/tiny", epochs=2))
    result.best_top1, result.out / "best.pt"
    evaluate(EvalConfig("specs/sknet_tiny.sk", checkpoint="runs/tiny/best.pt"))["top1"]

The settings themselves (TrainConfig, EvalConfig) are core/settings.py's, since checkpoint I/O
below this package checks them too. Modules, one job each: data (sources, transforms, loaders),
recipe (optimiser, schedule, loss), checkpoint (atomic, checked files), distributed (torchrun,
collectives, SyncBatchNorm), runner (the loop), display and metrics (what is shown and logged),
api (the `skdsl.train(...)` call). The `train` and `eval` commands are skdsl/commands/train.py. Importing
this package does not import torch; `train` does.
"""

from __future__ import annotations

import sys
import types

from ..core.settings import EvalConfig, TrainConfig


def train(config: TrainConfig):
    """Train as `config` says; returns a `runner.Result` (status, best top-1, history, out).
    `skdsl.train(model_or_spec, ...)`, the package called, takes modules and Datasets too."""
    from .runner import train as _train

    return _train(config)


def evaluate(config: EvalConfig) -> dict:
    """A checkpoint's loss, top-1 and top-5 on a validation split."""
    from .runner import evaluate_checkpoint

    return evaluate_checkpoint(config)


class _CallablePackage(types.ModuleType):
    """This package, which can also be called: `skdsl.train(model_or_spec, train_data=...,
    val_data=..., **config)` is api.train. A function named `train` in skdsl/__init__.py would
    hide the package itself: `import skdsl.train.runner as runner` then fails."""

    def __call__(self, model_or_spec, train_data=None, val_data=None, **config):
        from .api import train as train_model

        return train_model(model_or_spec, train_data, val_data, **config)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = ["TrainConfig", "EvalConfig", "train", "evaluate"]
