"""Training recipes: the optimiser, the learning-rate schedule and the loss.

`paper` is section 4.1 of the SKNet paper (docs/training.md quotes it): synchronous SGD with
momentum 0.9, weight decay 1e-4, batch 256 at lr 0.1 (scaled linearly with the batch), divided by
10 every 30 epochs over 100, label smoothing. `paper-light` is the same with weight decay 4e-5 and
less aggressive scale augmentation, as the paper trains ShuffleNetV2 + SK. `cifar` is the usual
CIFAR ResNeXt schedule (the supplementary material with SKNet-29's exact recipe is not available):
batch 128 at lr 0.1, weight decay 5e-4, 300 epochs, divided by 10 after epochs 150 and 225.

Step milestones are epochs, as the paper gives them: a shorter `--epochs` simply stops before the
later ones, and a run extended with `--resume --epochs N` goes on exactly as if N had been asked
for from the start (cosine, whose shape depends on the run's length, cannot promise that). The
schedule is a pure function of the optimiser step: the step, saved in every checkpoint, is the
scheduler's whole state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from torch import nn, optim

from .config import RECIPE_NAMES, SCHEDULES


@dataclass(frozen=True)
class Recipe:
    """How to train: every number a run's optimiser, schedule and loss depend on."""

    name: str
    epochs: int
    batch_size: int  # the global batch, over all processes
    lr: float  # the peak learning rate, for `batch_size`
    momentum: float
    weight_decay: float
    label_smoothing: float
    schedule: str  # "step" or "cosine"
    milestones: tuple[int, ...]  # epochs after which a step schedule divides lr by 10
    warmup_epochs: float
    light_augmentation: bool  # less aggressive random-resized-crop scales (0.25-1, not 0.08-1)

    def to_dict(self) -> dict:
        return asdict(self)


PAPER = Recipe("paper", epochs=100, batch_size=256, lr=0.1, momentum=0.9, weight_decay=1e-4,
               label_smoothing=0.1, schedule="step", milestones=(30, 60, 90),
               warmup_epochs=0.0, light_augmentation=False)
RECIPES: dict[str, Recipe] = {
    "paper": PAPER,
    "paper-light": replace(PAPER, name="paper-light", weight_decay=4e-5, light_augmentation=True),
    "cifar": Recipe("cifar", epochs=300, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
                    label_smoothing=0.0, schedule="step", milestones=(150, 225),
                    warmup_epochs=0.0, light_augmentation=False),
}
assert tuple(RECIPES) == RECIPE_NAMES


def default_recipe(data: str) -> str:
    """paper for photographs (imagefolder); cifar for the 32×32 sources (cifar10/100, synthetic),
    whose small datasets and images suit its batch of 128 and its longer, gentler schedule."""
    return "paper" if data.startswith("imagefolder") else "cifar"


def resolve(name: str, *, epochs: int | None = None, batch_size: int | None = None,
            lr: float | None = None, weight_decay: float | None = None,
            label_smoothing: float | None = None, schedule: str | None = None,
            warmup_epochs: float | None = None) -> Recipe:
    """The named recipe with the values a user set; None keeps the recipe's own.

    Without an explicit lr, the recipe's lr scales linearly with the batch (Goyal et al.):
    0.1 × batch/256 for the paper's recipes, 0.1 × batch/128 for cifar.
    """
    base = RECIPES[name]
    batch = batch_size or base.batch_size
    changes = {
        "epochs": epochs, "batch_size": batch, "weight_decay": weight_decay,
        "lr": lr if lr is not None else base.lr * batch / base.batch_size,
        "label_smoothing": label_smoothing, "schedule": schedule, "warmup_epochs": warmup_epochs,
    }
    return replace(base, **{key: value for key, value in changes.items() if value is not None})


@dataclass(frozen=True)
class LrSchedule:
    """The learning rate at each optimiser step: linear warm-up, then step decay or cosine."""

    peak: float
    total_steps: int
    warmup_steps: int
    kind: str
    milestones: tuple[int, ...]  # steps where a step schedule divides by 10

    @classmethod
    def for_run(cls, recipe: Recipe, steps_per_epoch: int) -> "LrSchedule":
        total = recipe.epochs * steps_per_epoch
        milestones = tuple(epoch * steps_per_epoch for epoch in recipe.milestones)
        warmup = round(recipe.warmup_epochs * steps_per_epoch)
        return cls(recipe.lr, total, warmup, recipe.schedule, milestones)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if self.kind == "cosine":
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            return self.peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.peak * 0.1 ** sum(step >= milestone for milestone in self.milestones)


def set_lr(optimizer: optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(model: nn.Module, recipe: Recipe) -> optim.SGD:
    """SGD with momentum; weight decay on every parameter, BN's included, as the paper's Caffe."""
    return optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                     weight_decay=recipe.weight_decay)


def make_loss(recipe: Recipe) -> nn.CrossEntropyLoss:
    return nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)


__all__ = ["Recipe", "RECIPES", "SCHEDULES", "default_recipe", "resolve", "LrSchedule", "set_lr",
           "make_optimizer", "make_loss"]
