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

from ..errors import SkdslError
from .config import TrainConfig
from .config_file import check_settings


class APIError(SkdslError):
    """skdsl.train(...) given something it cannot train or read: a model that is neither a
    spec nor a module, data that is neither a Dataset nor a DataLoader, one split without the
    other, no `out`."""

    code = "SK652"


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


class GivenSplit:
    """A Dataset given from Python, indexed as the run's samplers index a Split: by (epoch,
    index) keys in training, by plain indices in evaluation. Its items are used as they are."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset[key[1] if isinstance(key, tuple) else key]


def given_source(train_data, val_data, seed: int, analysis):
    """A data.Source over Datasets (or DataLoaders' datasets) given from Python; its classes are
    the network's outputs (None when the module is no skdsl network)."""
    from torch.utils.data import DataLoader

    from .data import Source

    def split(data):
        return GivenSplit(data.dataset if isinstance(data, DataLoader) else data)

    classes = analysis.output[0] if analysis is not None and len(analysis.output) == 1 else None
    return Source("python", classes, split(train_data), split(val_data))


__all__ = ["train", "APIError", "GivenSplit", "given_source"]
