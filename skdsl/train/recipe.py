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

The modern knobs (docs/training.md, "Recipe knobs") are fields here too, so the banner and the
checkpoint record one object: AdamW (decoupled weight decay, none on norm and bias parameters,
lr 1e-3 and weight decay 0.05 per 256 images unless given, as DeiT and timm use it), gradient
accumulation (the lr scales with the images per optimiser step), clipping, an EMA of the weights,
mixup and cutmix, RandAugment and the random-resized crop's scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from torch import nn, optim

from ..core.settings import RECIPE_NAMES, SCHEDULES

# AdamW's usual numbers (DeiT, timm): the SGD recipes' lr of 0.1 would diverge under Adam.
ADAMW_LR, ADAMW_WEIGHT_DECAY, ADAMW_BATCH = 1e-3, 0.05, 256


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
    optimizer: str = "sgd"  # or "adamw"
    accum_steps: int = 1  # batches of `batch_size` per optimiser step
    clip_grad: float = 0.0  # largest global gradient norm; 0: no clipping
    ema_decay: float = 0.0  # EMA of the weights; 0: none
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0: none
    cutmix: float = 0.0  # Beta(alpha, alpha) of cutmix; 0: none
    augment: str = "standard"  # or "randaugment"
    crop_scale: tuple[float, float] | None = None  # None: 0.08-1 (0.25-1 when light)
    warmup_steps: int | None = None  # linear warm-up in steps; None: warmup_epochs decides

    @property
    def step_batch(self) -> int:
        """Images per optimiser step (over all processes and accumulated batches)."""
        return self.batch_size * self.accum_steps

    @property
    def image_crop_scale(self) -> tuple[float, float]:
        return self.crop_scale or ((0.25, 1.0) if self.light_augmentation else (0.08, 1.0))

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
            warmup_epochs: float | None = None, opt: str | None = None,
            accum_steps: int | None = None, **knobs) -> Recipe:
    """The named recipe with the values a user set; None keeps the recipe's own.

    Without an explicit lr, the recipe's lr scales linearly with the images per optimiser step
    (batch × accum_steps; Goyal et al.): 0.1 × that/256 for the paper's recipes, /128 for cifar,
    and AdamW's 1e-3 × that/256. `knobs`: clip_grad, ema_decay, mixup, cutmix, augment,
    crop_scale, warmup_steps (None keeps the default).
    """
    base = RECIPES[name]
    batch, accum = batch_size or base.batch_size, accum_steps or 1
    adamw = opt == "adamw"
    base_lr, base_batch = (ADAMW_LR, ADAMW_BATCH) if adamw else (base.lr, base.batch_size)
    if adamw and weight_decay is None:
        weight_decay = ADAMW_WEIGHT_DECAY
    changes = {
        "epochs": epochs, "batch_size": batch, "weight_decay": weight_decay,
        "lr": lr if lr is not None else base_lr * batch * accum / base_batch,
        "label_smoothing": label_smoothing, "schedule": schedule, "warmup_epochs": warmup_epochs,
        "optimizer": opt, "accum_steps": accum, **knobs,
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
        """`steps_per_epoch`: optimiser steps, so accumulated batches count once."""
        total = recipe.epochs * steps_per_epoch
        milestones = tuple(epoch * steps_per_epoch for epoch in recipe.milestones)
        warmup = (recipe.warmup_steps if recipe.warmup_steps is not None
                  else round(recipe.warmup_epochs * steps_per_epoch))
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


def make_optimizer(model: nn.Module, recipe: Recipe) -> optim.Optimizer:
    """SGD with momentum, weight decay on every parameter, BN's included, as the paper's Caffe;
    or AdamW with two groups: decay on weights, none on norm and bias parameters (timm, DeiT)."""
    if recipe.optimizer == "sgd":
        return optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                         weight_decay=recipe.weight_decay)
    decayed, exempt = decay_groups(model)
    return optim.AdamW([{"params": decayed, "weight_decay": recipe.weight_decay},
                        {"params": exempt, "weight_decay": 0.0}], lr=recipe.lr)


def decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, exempt): norm layers' scales and shifts and every bias are exempt. They are
    the parameters of at most one dimension; a matrix or a kernel has two or more."""
    decayed, exempt = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (exempt if parameter.ndim <= 1 else decayed).append(parameter)
    return decayed, exempt


def make_loss(recipe: Recipe) -> nn.CrossEntropyLoss:
    return nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)


__all__ = ["Recipe", "RECIPES", "SCHEDULES", "default_recipe", "resolve", "LrSchedule", "set_lr",
           "make_optimizer", "decay_groups", "make_loss", "ADAMW_LR", "ADAMW_WEIGHT_DECAY"]
