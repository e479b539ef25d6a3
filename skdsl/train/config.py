"""The settings of a training or evaluation run, as typed values.

A field left None was not given: the recipe decides it, or, when a run resumes, the checkpoint's
own setting. That is what lets `--resume` be typed without repeating every flag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

# The names each choice flag takes; here, without torch, so `skdsl --help` stays light.
DATA_KINDS = ("synthetic", "cifar10", "cifar100", "imagefolder")
RECIPE_NAMES = ("paper", "paper-light", "cifar")
SCHEDULES = ("step", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")

# Settings that shape the trajectory of the weights: resuming with another value would not
# continue the same run, so `--resume` refuses a change.
FIXED_ON_RESUME = ("data", "seed", "recipe", "batch_size", "lr", "weight_decay", "label_smoothing",
                   "schedule", "warmup_epochs", "sync_bn", "overrides")
# What a resumed run takes from the checkpoint when left out: the above, and how the run was
# started. --max-steps, --workers, --device, --log-every and --plot belong to one invocation.
CARRIED_ON_RESUME = FIXED_ON_RESUME + ("epochs", "precision", "channels_last", "compile",
                                       "deterministic")


@dataclass(frozen=True)
class TrainConfig:
    """`skdsl train`: one field per flag (docs/training.md describes each)."""

    spec: str
    out: str
    data: str | None = None  # synthetic (default), cifar10:DIR, cifar100:DIR, imagefolder:DIR
    overrides: dict | None = None  # --set NAME=VALUE, the spec's params
    recipe: str | None = None  # paper, paper-light, cifar; None: recipe.default_recipe(data)
    epochs: int | None = None
    batch_size: int | None = None  # global: split evenly over the processes
    lr: float | None = None  # peak lr; None: the recipe's, scaled with the batch
    weight_decay: float | None = None
    label_smoothing: float | None = None
    schedule: str | None = None  # step, cosine
    warmup_epochs: float | None = None
    precision: str | None = None  # fp32 (default), bf16, fp16
    channels_last: bool | None = None
    compile: bool | None = None
    sync_bn: bool | None = None
    workers: int | None = None  # loader processes per training process; None: automatic
    seed: int | None = None
    device: str | None = None  # auto, cpu, cuda
    deterministic: bool | None = None
    resume: bool = False
    max_steps: int | None = None  # stop after this many optimiser steps in all
    log_every: int | None = None  # steps between reading losses back from the device
    plot: bool | None = None

    def with_defaults(self, saved: "TrainConfig | None" = None) -> "TrainConfig":
        """Unset fields from `saved` (a resumed run's CARRIED_ON_RESUME), else from DEFAULTS."""
        if saved is not None:
            return replace(self, **{name: getattr(saved, name) for name in CARRIED_ON_RESUME
                                    if getattr(self, name) is None})
        return replace(self, **{f.name: getattr(DEFAULTS, f.name) for f in fields(self)
                                if getattr(self, f.name) is None})

    def changed_on_resume(self, saved: "TrainConfig") -> list[str]:
        """The trajectory-shaping settings given now that differ from the checkpoint's."""
        return [name for name in FIXED_ON_RESUME
                if getattr(self, name) is not None and getattr(self, name) != getattr(saved, name)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


# What an unset field means when nothing else decides it (the recipe and its numbers stay None:
# the runner picks a recipe for the data source, and the recipe its numbers).
DEFAULTS = TrainConfig(spec="", out="", data="synthetic", overrides={}, precision="fp32",
                       channels_last=False, compile=False, sync_bn=False, seed=0, device="auto",
                       deterministic=False, plot=False)


@dataclass(frozen=True)
class EvalConfig:
    """`skdsl eval`: a checkpoint's top-1 and top-5 on a source's validation split."""

    spec: str
    checkpoint: str
    data: str | None = None  # None: the source the checkpoint was trained on
    overrides: dict = field(default_factory=dict)
    batch_size: int = 256
    workers: int | None = None
    precision: str = "fp32"
    channels_last: bool = False
    device: str = "auto"
    seed: int | None = None  # None: the checkpoint's (it chose the synthetic validation images)
    json: bool = False


__all__ = ["TrainConfig", "EvalConfig", "DEFAULTS", "FIXED_ON_RESUME", "CARRIED_ON_RESUME",
           "DATA_KINDS", "RECIPE_NAMES", "SCHEDULES", "PRECISIONS", "DEVICES"]
