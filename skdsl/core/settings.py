"""The settings of a training or evaluation run, as typed values.

A field left None was not given: the recipe decides it, or, when a run resumes, the checkpoint's
own setting. That is what lets `--resume` be typed without repeating every flag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from ..base.errors import declare_settings

# The names each choice flag takes; here, without torch, so `skdsl --help` stays light.
DATA_KINDS = ("synthetic", "cifar10", "cifar100", "imagefolder")
RECIPE_NAMES = ("paper", "paper-light", "cifar")
SCHEDULES = ("step", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("sgd", "adamw")
AUGMENTS = ("standard", "randaugment")  # standard: the source's own crop and flip

# Settings that shape the trajectory of the weights: resuming with another value would not
# continue the same run, so `--resume` refuses a change.
FIXED_ON_RESUME = ("data", "seed", "recipe", "batch_size", "lr", "weight_decay", "label_smoothing",
                   "schedule", "warmup_epochs", "sync_bn", "overrides", "classes",
                   "opt", "ema", "clip_grad", "accum_steps", "mixup", "cutmix", "augment",
                   "crop_scale", "warmup_steps")
# What a resumed run takes from the checkpoint when left out: the above, and how the run was
# started. --max-steps, --workers, --device, --log-every and --plot belong to one invocation.
CARRIED_ON_RESUME = FIXED_ON_RESUME + ("epochs", "precision", "channels_last", "compile",
                                       "deterministic", "init")

# The ranges the numeric settings may take, for the flags, the Python API and a checkpoint's
# record alike: a seed torch's generators take with room for rank and epoch added, loader
# processes a machine can start, sizes whose tensors can exist.
MAX_SEED = 2**63 - 1
MAX_WORKERS = 64
INTEGER_RANGES = {"epochs": (1, 1_000_000), "batch_size": (2, 1 << 24), "workers": (0, MAX_WORKERS),
                  "seed": (0, MAX_SEED), "max_steps": (1, 1 << 62), "log_every": (1, 1 << 62),
                  "classes": (1, 1 << 24), "memory_budget": (1, 1 << 60),
                  "threads": (1, 4096), "accum_steps": (1, 1 << 16), "warmup_steps": (0, 1 << 62)}
NUMBERS = ("lr", "weight_decay", "label_smoothing", "warmup_epochs", "clip_grad", "mixup",
           "cutmix")
# The largest of them: torch keeps the optimiser's numbers in float32, whose largest is about
# 3.4e38 (a --weight-decay of 1e300 failed inside torch's step, not at the command line).
LARGEST_NUMBER = 3.4e38
# Numbers strictly between two bounds: an EMA decay of 0 or 1 would copy or freeze the weights.
OPEN_RANGES = {"ema": (0.0, 1.0)}
CHOICES = {"recipe": RECIPE_NAMES, "schedule": SCHEDULES, "precision": PRECISIONS,
           "device": DEVICES, "opt": OPTIMIZERS, "augment": AUGMENTS}
FLAGS = ("channels_last", "compile", "sync_bn", "deterministic", "plot")
TEXTS = ("spec", "out", "data", "init", "config_file")


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
    resume: bool | str = False  # True: continue the run in `out`; "auto": if it holds one
    max_steps: int | None = None  # stop after this many optimiser steps in all
    log_every: int | None = None  # steps between reading losses back from the device
    plot: bool | None = None
    init: str | None = None  # weights to start from: a checkpoint, converted weights, a state dict
    classes: int | None = None  # the spec's `classes`, replaced (fine-tuning to other classes)
    # bytes one process may use for training (resources.guard_training); None: what the
    # device has free now, shared by the processes of this machine
    memory_budget: int | None = None
    threads: int | None = None  # intra-op threads; None: this process's share of its cores
    opt: str | None = None  # sgd (the recipe's) or adamw (no decay on norm and bias parameters)
    ema: float | None = None  # decay of an exponential moving average of the weights; None: off
    clip_grad: float | None = None  # largest global gradient norm; None: no clipping
    accum_steps: int | None = None  # batches of `batch_size` per optimiser step (default 1)
    mixup: float | None = None  # alpha of mixup's Beta(alpha, alpha); None: off
    cutmix: float | None = None  # alpha of cutmix's Beta(alpha, alpha); None: off
    augment: str | None = None  # standard, randaugment (2 ops, magnitude 9, on tensors)
    crop_scale: tuple[float, float] | None = None  # random-resized crop's area range (imagefolder)
    warmup_steps: int | None = None  # linear warm-up in optimiser steps (else warmup_epochs)
    config_file: str | None = None  # a TOML file of these settings; fields set here win
    allow_imports_outside: bool = False  # `use` may read files outside the spec's folder, std/

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
        values = {key: value for key, value in values.items() if key in known}
        if isinstance(values.get("crop_scale"), list):  # a JSON round trip makes tuples lists
            values["crop_scale"] = tuple(values["crop_scale"])
        return cls(**values)


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
    classes: int | None = None  # None: the checkpoint's (a fine-tuned run's --classes)
    ema: bool = False  # evaluate the checkpoint's moving average of the weights (train --ema)
    allow_imports_outside: bool = False  # `use` may read files outside the spec's folder, std/
    memory_budget: int | None = None  # bytes one process may use; None: what its device has


# Training and evaluation messages name these fields as settings: `{batch_size}`, `{resume}`.
declare_settings(*(f.name for f in fields(TrainConfig)), *(f.name for f in fields(EvalConfig)))


def config_problem(values) -> str | None:
    """What is wrong with the first setting of a TrainConfig (as a dict) of the wrong type or
    out of its range, or None. Unset (None) is always fine."""
    for name, value in values.items():
        trouble = None if value is None else _setting_problem(name, value)
        if trouble:
            return f"setting {name} {trouble}"
    return None


def _setting_problem(name: str, value) -> str | None:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if name in INTEGER_RANGES:
        low, high = INTEGER_RANGES[name]
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            return f"is {shown}, not a whole number from {low} to {high}"
    elif name in NUMBERS:
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and 0 <= value < float("inf")):
            return f"is {shown}, not a finite number >= 0"
    elif name in OPEN_RANGES:
        low, high = OPEN_RANGES[name]
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and low < value < high):
            return f"is {shown}, not a number between {low:g} and {high:g} (both excluded)"
    elif name == "crop_scale":
        if not (isinstance(value, (tuple, list)) and len(value) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                and 0 < value[0] <= value[1] <= 1):
            return f"is {shown}, not two area fractions LO, HI with 0 < LO <= HI <= 1"
    elif name == "resume" and value not in (True, False, "auto"):
        return f"is {shown}, not true, false or 'auto'"
    elif name in CHOICES and value not in CHOICES[name]:
        return f"is {shown}, not one of {', '.join(CHOICES[name])}"
    elif name in FLAGS and not isinstance(value, bool):
        return f"is {shown}, not true or false"
    elif name in TEXTS and not isinstance(value, str):
        return f"is {shown}, not text"
    elif name == "overrides" and not (isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, (int, float, str)) for k, v in value.items())):
        return f"is {shown}, not a dict of parameter values"
    return None


__all__ = ["TrainConfig", "EvalConfig", "DEFAULTS", "config_problem", "INTEGER_RANGES", "MAX_SEED",
           "MAX_WORKERS", "FIXED_ON_RESUME", "CARRIED_ON_RESUME",
           "DATA_KINDS", "RECIPE_NAMES", "SCHEDULES", "PRECISIONS", "DEVICES", "OPTIMIZERS",
           "AUGMENTS", "OPEN_RANGES", "NUMBERS", "CHOICES", "FLAGS", "TEXTS"]
