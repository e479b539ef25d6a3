"""What several test files share (`from helpers import ...`): the tiny network, a checkpoint
payload as `skdsl train` writes it, spec files in a test's folder, a short training run, and the
train and eval command lines parsed."""

import argparse
from pathlib import Path

import torch

import skdsl
from skdsl.commands import train as train_commands
from skdsl.train import TrainConfig, train
from skdsl.train import checkpoint as C

# Three classes on 8×8 images, one convolution: the smallest network with a body and a head.
TINY_SPEC = """\
network tiny:
    input 3x8x8
    classes 3
    stage body: conv 3x3, 4
    stage head:
        avgpool global
        fc classes
"""


def write_spec(text: str, folder: Path, name: str = "net.sk") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def trained_run(text: str, folder: Path, name: str, **settings) -> tuple[Path, Path]:
    """Write the spec `text` to folder/name and train it into folder/run with `settings`
    (TrainConfig's): the spec's path and the run's folder."""
    spec = write_spec(text, folder, name)
    train(TrainConfig(str(spec), out=str(folder / "run"), **settings))
    return spec, folder / "run"


def checkpoint_payload() -> dict:
    """A checkpoint's payload as `skdsl train` writes it, after one SGD step on TINY_SPEC."""
    network = skdsl.parse(TINY_SPEC)
    spec_json, sha = C.spec_fingerprint(network)
    model = skdsl.compile(network)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model(torch.randn(2, *network.input)).sum().backward()
    optimizer.step()
    return {"spec_name": network.name, "spec_source": TINY_SPEC, "spec_json": spec_json,
            "spec_sha256": sha, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": {}, "schedule": {"peak": 0.1}, "epoch": 1, "batch_in_epoch": 0, "step": 4,
            "best_top1": 0.5, "best_epoch": 1, "epoch_totals": {},
            "history": [{"event": "epoch", "epoch": 1, "step": 4, "train_loss": 1.0,
                         "train_top1": 0.4, "val_loss": 1.1, "val_top1": 0.5, "val_top5": 1.0}],
            "rng": [C.rng_state()],
            "config": TrainConfig("tiny.sk", "run", data="synthetic:train=8,val=4", seed=3,
                                  batch_size=4, epochs=2).to_dict()}


def parse_train_or_eval(*argv: str) -> argparse.Namespace:
    """`skdsl train ...` or `skdsl eval ...` parsed by a parser of those two commands alone."""
    parser = argparse.ArgumentParser(prog="skdsl")
    train_commands.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))
