"""`skdsl.train(model_or_spec, train_data=..., val_data=..., **config)`: training from Python.

    import skdsl
    result = skdsl.train("specs/sknet_tiny.sk", out="runs/tiny", data="synthetic", epochs=2)
    result = skdsl.train(model, train_data=my_dataset, val_data=my_val, out="runs/mine",
                         epochs=5, opt="adamw", ema=0.999)

`model_or_spec` is a spec file, a zoo name, or a module (skdsl.compile's, or any nn.Module
whose output is one score per class, which is then trained in place). `train_data` and
`val_data` are torch Datasets of (C×H×W float image, int label), used with the run's own
sampler, seeded order and batch, or DataLoaders, used as they are (the global batch is then
the loader's batch × processes). Without them the run reads `data` (a --data source). The
keyword arguments are TrainConfig's fields, checked by the same pydantic model as a --config
file before anything starts; `out` is required.
"""

from __future__ import annotations

from pathlib import Path

from ..base.errors import APIError
from ..core.settings import TrainConfig
from .config_file import check_settings


def train(model_or_spec, train_data=None, val_data=None, **config):
    """Train a spec, a zoo network or a module on a --data source or on Datasets/DataLoaders;
    returns runner.Result (status, best_top1, history, out)."""
    from .threads import prefer_passive_waiting

    prefer_passive_waiting()  # before torch loads OpenMP, when it has not yet (threads.py)
    from torch import nn

    from .runner import Given, train as run

    settings = check_settings(config, "skdsl.train()")
    if not settings.get("out"):
        raise APIError("skdsl.train() needs out=DIR: where checkpoints and metrics go",
                       hint="skdsl.train(spec, out='runs/my_run', ...)")
    model = model_or_spec if isinstance(model_or_spec, nn.Module) else None
    if model is None and not isinstance(model_or_spec, (str, Path)):
        raise APIError(f"skdsl.train() trains a spec file, a zoo name or an nn.Module, not "
                       f"{type(model_or_spec).__name__}")
    _check_data(train_data, val_data, settings)
    spec = "" if model is not None else str(model_or_spec)
    return run(TrainConfig(spec=spec, **settings), Given(model, train_data, val_data))


def _check_data(train_data, val_data, settings: dict) -> None:
    from torch.utils.data import DataLoader, Dataset

    for name, data in (("train_data", train_data), ("val_data", val_data)):
        if data is not None and not isinstance(data, (Dataset, DataLoader)):
            raise APIError(f"{name} is a {type(data).__name__}, not a torch Dataset or DataLoader",
                           hint="wrap it: a Dataset's __getitem__ returns (image, label)")
    if (train_data is None) != (val_data is None):
        missing = "val_data" if val_data is None else "train_data"
        raise APIError(f"skdsl.train() was given one split without the other: {missing} is "
                       f"missing", hint="pass both train_data and val_data, or neither (and "
                                        "data=SOURCE)")
    if train_data is not None and settings.get("data"):
        raise APIError("skdsl.train() was given both data= and train_data/val_data",
                       hint="leave out one of them")


__all__ = ["train", "APIError"]
