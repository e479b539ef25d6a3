"""`skdsl train` and `skdsl eval`: their flags, checked into typed configs, and the runs.

    register(subparsers)          adds both commands to a parser (program.py's two)
    run_train(args) -> int        exit status: 0 done, 128+n stopped by signal n (saved)
    run_eval(args) -> int

This module imports no torch: registering the commands must not slow down `skdsl build`. Every
flag is read as text and checked here, so a bad value is one `CliError` (SK510) naming the flag,
the value and what would do, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os

from ..base.errors import CliError, did_you_mean
from ..core.settings import (AUGMENTS, DEVICES, INTEGER_RANGES, LARGEST_NUMBER, OPTIMIZERS,
                            PRECISIONS, RECIPE_NAMES, SCHEDULES, EvalConfig, TrainConfig)
from .arguments import (MAX_DIGITS, add_command, add_spec_argument, add_switches, add_values,
                        clipped, flag, is_whole_number, parse_data_source,
                        parse_overrides, quoted, whole_number)

TRAIN_EPILOG = """\
examples:
  skdsl train specs/sknet_tiny.sk --data synthetic --epochs 2 --out runs/tiny
  skdsl train specs/sknet_tiny.sk --data synthetic --epochs 4 --out runs/tiny --resume
  skdsl train specs/sknet50.sk --data imagefolder:/data/imagenet --out runs/sknet50 \\
      --precision bf16 --channels-last --compile
  torchrun --nproc_per_node 2 -m skdsl train specs/sknet_tiny.sk --out runs/ddp --sync-bn
  skdsl train specs/sknet50.sk --init sknet50.pt --classes 5 --data imagefolder:flowers \
      --out runs/flowers      # fine-tune converted weights to 5 classes

exit status: 0 done, 2 a mistake in a flag, spec, data or checkpoint, 130/143 stopped by
SIGINT/SIGTERM after saving last.pt (continue with --resume).
"""

EVAL_EPILOG = """\
examples:
  skdsl eval specs/sknet_tiny.sk --checkpoint runs/tiny/best.pt
  skdsl eval specs/sknet_tiny.sk --checkpoint runs/tiny/last.pt --data synthetic --json
"""


def register(subparsers) -> None:
    """Add `train` and `eval` to an argparse subparsers object (skdsl's, or main's below)."""
    _add_train(subparsers)
    _add_eval(subparsers)


def _command(subparsers, name: str, run, summary: str, description: str,
             epilog: str) -> argparse.ArgumentParser:
    """The parser of `train` or `eval`, running `run`, with the flags both take."""
    parser = add_command(subparsers, name, run, summary, description, epilog)
    add_spec_argument(parser, carried=True)
    add_values(parser,
               data=("SOURCE", "synthetic (default; options: synthetic:train=N,val=N,scale=LO-HI), "
                               "cifar10:DIR, cifar100:DIR or imagefolder:DIR"),
               batch_size=("B", "the global batch, split evenly over the processes"),
               precision=("{fp32,bf16,fp16}", "fp32 (default), bf16 autocast, or fp16 autocast "
                                              "with a grad scaler (CUDA only)"))
    add_switches(parser, default=None,
                 channels_last="NHWC memory format (faster convolutions on tensor cores)")
    add_values(parser,
               workers=("N", "data loader processes per training process (default: 0 on CPU, "
                             "a share of the cores with a GPU)"),
               device=("{auto,cpu,cuda}",
                       "auto (default): this process's GPU if CUDA is there, else the CPU"),
               seed=("S", "seeds weights, data order and augmentation (0 to 2**63-1)"),
               classes=("N", "replace the spec's `classes` (a head written `fc classes` "
                             "follows): fine-tuning to another class count"),
               memory_budget=("SIZE", "memory one process may use, such as 8GiB (default: what "
                                      "the device has free); a run that would not fit is "
                                      "refused before it starts"))
    return parser


def _add_train(subparsers) -> None:
    parser = _command(
        subparsers, "train", run_train,
        "train a spec's network: data, the paper's recipe, checkpoints",
        "Train the network of a spec, writing last.pt, best.pt and metrics.jsonl to "
        "--out. Flags left out take the recipe's values, or on --resume the run's.", TRAIN_EPILOG)
    add_values(parser,
               out=("DIR", "where checkpoints and metrics go (required)"),
               epochs=("N", "epochs in all (paper: 100, cifar: 300)"),
               lr=("LR", "peak learning rate (default: the recipe's, scaled by batch/256, "
                         "or batch/128 for cifar)"),
               recipe=("{paper,paper-light,cifar}",
                       "the optimiser, schedule and loss: paper (default for imagefolder), "
                       "paper-light (wd 4e-5) or cifar (default for cifar and synthetic)"),
               schedule=("{step,cosine}", "learning-rate decay (default: the recipe's step decay)"),
               warmup_epochs=("E", "linear warm-up (default 0)"),
               weight_decay=("WD", "default: the recipe's"),
               label_smoothing=("EPS", "default: the recipe's (paper 0.1, cifar 0)"))
    add_switches(parser, default=None,
                 compile="torch.compile the model",
                 sync_bn="BatchNorm statistics over the global batch when several processes "
                         "train",
                 deterministic="deterministic algorithms only (bit-exact --resume on GPUs too)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="auto",
                        help="continue the run in --out from its last.pt; `--resume auto`: "
                             "only if --out holds one (else start a new run there)")
    add_values(parser,
               config=("FILE", "settings from a TOML file (keys as these flags: epochs = 4, "
                               "batch-size = 64, ...); flags given here override it"),
               threads=("N", "intra-op threads per process (default: the cores this process may "
                             "run on ÷ the processes on this machine)"),
               opt=("{sgd,adamw}", "sgd (the recipe's; weight decay on all) or adamw (lr 1e-3 and "
                                   "weight decay 0.05 per 256 images unless given; none on norm "
                                   "and bias parameters)"),
               ema=("DECAY", "keep a moving average of the weights (such as 0.9998), evaluated "
                             "each epoch and saved beside them"),
               clip_grad=("NORM", "clip the global gradient norm to NORM before each step"),
               accum_steps=("K", "gather K batches into one optimiser step (K × --batch-size "
                                 "images)"),
               mixup=("ALPHA", "mixup with Beta(ALPHA, ALPHA), such as 0.2"),
               cutmix=("ALPHA", "cutmix with Beta(ALPHA, ALPHA), such as 1.0"),
               augment=("{standard,randaugment}", "standard (the source's crop and flip) or "
                                                  "randaugment (2 ops, magnitude 9, after them)"),
               crop_scale=("LO-HI", "imagefolder's random-resized-crop area range (default "
                                    "0.08-1; paper-light 0.25-1)"),
               warmup_steps=("N", "linear warm-up over N optimiser steps (instead of "
                                  "--warmup-epochs)"),
               init=("FILE", "start from these weights (an skdsl checkpoint, `skdsl weights "
                             "convert` output or a state dict); a head of another class count "
                             "is left out and initialised afresh"),
               max_steps=("N", "stop after N optimiser steps in all"),
               log_every=("N", "steps between reading losses back from the device (default: 1 "
                               "on CPU, 10 on GPU)"))
    add_switches(parser, default=None,
                 plot="write curves.png (needs matplotlib: pip install 'skdsl[plot]')")


def _add_eval(subparsers) -> None:
    parser = _command(
        subparsers, "eval", run_eval, "top-1 and top-5 of a checkpoint on a validation split",
        "Evaluate a checkpoint written by `skdsl train` on the validation split of a "
        "data source (by default the one it was trained on).", EVAL_EPILOG)
    add_values(parser, checkpoint=("FILE", "last.pt or best.pt (required)"))
    add_switches(parser, json="the results as one JSON object",
                 ema="evaluate the moving average of the weights (a run with --ema)")


# -- flags into configs -------------------------------------------------------------------------


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags ask for, every value checked; None where a flag was left out."""
    from ..train.config_file import read_config_file

    from_file = read_config_file(args.config) if args.config else {}  # checked before anything
    out = args.out or from_file.get("out")
    if not out:
        raise CliError("--out DIR is required: where checkpoints and metrics go", code="SK510",
                       hint="skdsl train SPEC --out runs/my_run")
    return TrainConfig(
        spec=args.spec, out=out, data=parse_data_source(args.data), overrides=_overrides(args.overrides),
        recipe=_choice(args.recipe, "--recipe", RECIPE_NAMES),
        epochs=_integer(args.epochs, "--epochs", 1),
        batch_size=_integer(args.batch_size, "--batch-size", 2),
        lr=_number(args.lr, "--lr", low=0, low_open=True),
        weight_decay=_number(args.weight_decay, "--weight-decay", low=0),
        label_smoothing=_number(args.label_smoothing, "--label-smoothing", low=0, high=1,
                                high_open=True),
        schedule=_choice(args.schedule, "--schedule", SCHEDULES),
        warmup_epochs=_number(args.warmup_epochs, "--warmup-epochs", low=0),
        precision=_choice(args.precision, "--precision", PRECISIONS),
        channels_last=args.channels_last, compile=args.compile, sync_bn=args.sync_bn,
        workers=_integer(args.workers, "--workers", 0),
        seed=_integer(args.seed, "--seed", 0),
        device=_choice(args.device, "--device", DEVICES),
        deterministic=args.deterministic, resume=_resume(args.resume),
        max_steps=_integer(args.max_steps, "--max-steps", 1),
        log_every=_integer(args.log_every, "--log-every", 1), plot=args.plot,
        init=args.init, classes=_integer(args.classes, "--classes", 1),
        memory_budget=_memory_budget(args.memory_budget),
        allow_imports_outside=bool(args.allow_imports_outside), config_file=args.config,
        threads=_integer(args.threads, "--threads", 1),
        opt=_choice(args.opt, "--opt", OPTIMIZERS),
        ema=_number(args.ema, "--ema", low=0, high=1, low_open=True, high_open=True),
        clip_grad=_number(args.clip_grad, "--clip-grad", low=0, low_open=True),
        accum_steps=_integer(args.accum_steps, "--accum-steps", 1),
        mixup=_number(args.mixup, "--mixup", low=0), cutmix=_number(args.cutmix, "--cutmix", low=0),
        augment=_choice(args.augment, "--augment", AUGMENTS),
        crop_scale=_crop_scale(args.crop_scale),
        warmup_steps=_integer(args.warmup_steps, "--warmup-steps", 0))


def _resume(value) -> bool | str:
    """--resume (True), --resume auto, or left out (False)."""
    if value in (True, False, "auto"):
        return value
    raise CliError(f"--resume {quoted(value)}: expected no value, or 'auto'", code="SK510",
                   hint="--resume continues the run in --out; --resume auto does when there is one")


def _crop_scale(text: str | None) -> tuple[float, float] | None:
    """'0.08-1' -> (0.08, 1.0): two area fractions, 0 < LO <= HI <= 1."""
    if text is None:
        return None
    low, _, high = text.partition("-")
    try:
        scale = (float(low), float(high))
    except ValueError:
        scale = None
    if scale is None or not 0 < scale[0] <= scale[1] <= 1:
        raise CliError(f"--crop-scale {quoted(text)}: expected LO-HI, two area fractions with "
                       f"0 < LO <= HI <= 1", code="SK510", hint="such as --crop-scale 0.08-1")
    return scale


def eval_config(args: argparse.Namespace) -> EvalConfig:
    if not args.checkpoint:
        raise CliError("--checkpoint FILE is required: the weights to evaluate", code="SK510",
                       hint="skdsl eval SPEC --checkpoint runs/my_run/best.pt")
    return EvalConfig(
        spec=args.spec, checkpoint=args.checkpoint, data=parse_data_source(args.data),
        overrides=_overrides(args.overrides) or {},
        batch_size=_integer(args.batch_size, "--batch-size", 2) or 256,
        workers=_integer(args.workers, "--workers", 0),
        precision=_choice(args.precision, "--precision", PRECISIONS) or "fp32",
        channels_last=bool(args.channels_last),
        device=_choice(args.device, "--device", DEVICES) or "auto",
        seed=_integer(args.seed, "--seed", 0), json=args.json,
        classes=_integer(args.classes, "--classes", 1),
        allow_imports_outside=bool(args.allow_imports_outside), ema=args.ema,
        memory_budget=_memory_budget(args.memory_budget))


def _memory_budget(text: str | None) -> int | None:
    from ..core.resources import ResourceError, parse_size

    if text is None:
        return None
    try:
        return parse_size(text)
    except ResourceError as error:
        raise CliError(f"--memory-budget {error.message}", code="SK510", hint=error.hint) from None


def _integer(text: str | None, option: str, minimum: int) -> int | None:
    """A whole number of at least `minimum` and at most the setting's INTEGER_RANGES bound."""
    if text is None:
        return None
    value = whole_number(text)
    if value is None:
        if not is_whole_number(text):
            raise CliError(f"{option} {quoted(text)}: expected a whole number", code="SK510")
        value = -math.inf if text.strip().startswith("-") else math.inf  # too many digits to read
    if value < minimum:
        reason = " (BatchNorm needs 2 images per batch)" if option == "--batch-size" else ""
        raise CliError(f"{option} {clipped(text.strip(), 24)}: must be at least {minimum}{reason}",
                       code="SK510")
    _, maximum = INTEGER_RANGES.get(option[2:].replace("-", "_"), (minimum, None))
    if maximum is not None and value > maximum:
        raise CliError(f"{option} {clipped(text.strip(), 24)}: must be at most {maximum:,}",
                       code="SK510")
    if math.isinf(value):
        raise CliError(f"{option} {clipped(text.strip(), 24)}: a whole number of more than "
                       f"{MAX_DIGITS} digits", code="SK510")
    return value


def _number(text: str | None, option: str, low: float, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"{option} {quoted(text)}: expected a number such as 0.1",
                       code="SK510") from None
    too_low = value <= low if low_open else value < low
    if high is None:  # torch holds these numbers in float32
        high = LARGEST_NUMBER
    too_high = value >= high if high_open else value > high
    if too_low or too_high or value != value or value in (float("inf"), float("-inf")):
        bounds = f"{'>' if low_open else '>='} {low:g} and {'<' if high_open else '<='} {high:g}"
        raise CliError(f"{option} {clipped(text, 24)}: must be a finite number {bounds}",
                       code="SK510")
    return value


def _choice(text: str | None, option: str, choices: tuple[str, ...]) -> str | None:
    if text is None or text in choices:
        return text
    raise CliError(f"{option} {quoted(text)}: expected one of {', '.join(choices)}", code="SK510",
                   hint=did_you_mean(text, choices))




def _overrides(items: list[str] | None) -> dict | None:
    return None if items is None else parse_overrides(items)


# -- running --------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    config = train_config(args)
    from ..train.threads import prefer_passive_waiting

    prefer_passive_waiting()  # before torch loads OpenMP (skdsl/train/threads.py says why)
    from ..train.runner import train

    return train(config, spelled=flag).exit_status


def run_eval(args: argparse.Namespace) -> int:
    config = eval_config(args)
    from ..train.runner import evaluate_checkpoint

    results = evaluate_checkpoint(config)
    if os.environ.get("RANK", "0") != "0":  # under torchrun every process has the same results
        return 0
    if config.json:
        print(json.dumps(results))
    else:
        where = (f"epoch {results['epoch']}, step {results['step']}"
                 if results["epoch"] is not None else "weights")
        print(f"{results['checkpoint']} ({where}) on "
              f"{results['data']} validation, {results['images']:,} images: top-1 "
              f"{100 * results['top1']:.2f}%  top-5 {100 * results['top5']:.2f}%  loss "
              f"{results['loss']:.4f}")
    return 0


__all__ = ["register", "run_train", "run_eval", "train_config", "eval_config"]
