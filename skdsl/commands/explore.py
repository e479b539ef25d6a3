"""`skdsl explore`: sample a spec's design space, count every point, train a chosen few, show it.

    skdsl explore SPEC --sample N --out DIR [--sampler S] [--seed S] [--where BUDGET]
                       [--space NAME=DOMAIN] [--train K --epochs E --data SOURCE]
    skdsl explore --worker --storage URL --study NAME     (train a shared study's trials)
    skdsl explore show DIR                                (reprint a study, write its figures)
    skdsl explore compare DIR DIR ... --out FIGURES       (EDFs of several spaces on one plot)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..base.errors import CliError
from .arguments import (_NAME, add_imports_argument, add_input_argument, add_overrides_argument,
                        add_strict_argument, parse_data_source, parse_input_shape,
                        parse_overrides, quoted)

SUBCOMMANDS = ("show", "compare")

DESCRIPTION = """\
Explore a design space: draw points of the space a spec declares (param G = 32 in {16, 32, 64};
docs/explore.md), count each exactly (parameters, multiply-adds, activations, inference memory),
keep those inside a --where budget, and with --train train K of them with the built-in runner in
an Optuna study (an SQLite file in --out; --storage for workers on several machines).

  skdsl explore SPEC ...            sample, count, and with --train train
  skdsl explore --worker ...        join a study and train its trials until none is left
  skdsl explore show DIR            reprint a study and write its figures
  skdsl explore compare A B ...     EDFs of several studies on one plot, a table at equal cost"""

EPILOG = """\
examples:
  skdsl explore specs/cifar/sknet29_space.sk --sample 1000 --out runs/sk --where "macs <= 1.5G"
  skdsl explore examples/sknet50_options.sk --space M={1,2,3} --space G={16,32,64} --sample 50 \\
      --out runs/m
  skdsl explore specs/cifar/sknet29_space.sk --sample 200 --out runs/sk --train 8 --epochs 1 \\
      --data synthetic --max-steps 20
  skdsl explore show runs/sk
  skdsl explore compare runs/sk runs/resnext --out runs/compare"""


def register(commands) -> None:
    parser = commands.add_parser(
        "explore", help="sample a design space, count every point, train the promising ones",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="SPEC | show DIR | compare DIR...", nargs="*",
                        help="a spec with a design space; or show DIR; or compare DIR DIR ...")
    add_overrides_argument(parser, "that the space leaves fixed")
    add_imports_argument(parser)
    add_strict_argument(parser, "target")
    add_input_argument(parser)
    parser.add_argument("--space", metavar="NAME=DOMAIN", action="append", default=[],
                        help="a param's domain, added or replacing the spec's (repeatable): "
                             "--space G={16,32,64}, --space w=32..256 step 16")
    parser.add_argument("--sample", metavar="N", type=int, default=100,
                        help="points to draw (default 100; a grid stops at the space's size)")
    parser.add_argument("--sampler", choices=("random", "grid", "sobol", "tpe", "nsga2"),
                        default="random", help="how points are drawn (default random); tpe and "
                        "nsga2 choose the points --train trains, from the errors so far")
    parser.add_argument("--seed", metavar="S", type=int, default=0,
                        help="the sampler's seed (default 0): the same seed draws the same points")
    parser.add_argument("--where", metavar="BUDGET",
                        help='keep points inside a budget: "params <= 25M and macs <= 4.5G" '
                             "(params, macs, flops, activations, peak; latency in ms with "
                             "--calibration)")
    parser.add_argument("--calibration", metavar="FILE",
                        help="a latency calibration (`skdsl latency calibrate`): every point "
                             "gets its predicted latency_ms, and --where may read latency")
    parser.add_argument("--out", metavar="DIR",
                        help="the study folder (explore); where compare writes its figures")
    parser.add_argument("--resume", action="store_true",
                        help="go on with the study in --out: finished trials are kept, one "
                             "left running by a dead worker is retried")
    parser.add_argument("--no-plot", action="store_true",
                        help="write no figures (they need matplotlib: the plot extra)")
    training = parser.add_argument_group("training the chosen points (--train)")
    training.add_argument("--train", metavar="K", type=int, default=0,
                          help="train K points: stratified over the multiply-adds of those in "
                               "budget (random, grid, sobol), or chosen by tpe/nsga2")
    training.add_argument("--epochs", metavar="E", type=int, default=1,
                          help="epochs per trial (default 1: a short schedule)")
    training.add_argument("--data", metavar="SOURCE", default="synthetic",
                          help="as for skdsl train: synthetic (default), cifar10:DIR, ...")
    training.add_argument("--max-steps", metavar="N", type=int,
                          help="stop each trial after N optimiser steps")
    training.add_argument("--batch-size", metavar="N", type=int,
                          help="each trial's batch size (default: the recipe's)")
    training.add_argument("--workers", metavar="W", type=int, default=1,
                          help="trials trained at once on this machine; they share its cores "
                               "(default 1)")
    training.add_argument("--storage", metavar="URL",
                          help="an Optuna storage URL shared by workers on several machines "
                               "(default: sqlite in --out)")
    training.add_argument("--study", metavar="NAME", default="explore",
                          help="the study's name in the storage (default explore)")
    training.add_argument("--worker", action="store_true",
                          help="join the study --study in --storage and train its trials")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    target = list(args.target)
    if args.worker:
        return _work(args, target)
    if target and target[0] in SUBCOMMANDS and (len(target) > 1 or not Path(target[0]).exists()):
        return _show(args, target[1:]) if target[0] == "show" else _compare(args, target[1:])
    if len(target) != 1:
        raise CliError("skdsl explore takes one SPEC (or show DIR, or compare DIR DIR ...)",
                       code="SK566", hint="skdsl explore SPEC --sample 100 --out runs/space")
    _check_numbers(args)
    if not args.out:
        raise CliError("skdsl explore SPEC needs --out DIR: the study's folder", code="SK566",
                       hint="skdsl explore SPEC --sample 100 --out runs/space")
    return _explore(args, target[0])


def _check_numbers(args) -> None:
    for name, value, least in (("--sample", args.sample, 1), ("--train", args.train, 0),
                               ("--epochs", args.epochs, 1), ("--workers", args.workers, 1),
                               ("--max-steps", args.max_steps, 1),
                               ("--batch-size", args.batch_size, 1)):
        if value is not None and value < least:
            raise CliError(f"{name} {value}: at least {least}", code="SK566")
    if args.sample > MAX_SAMPLE:
        raise CliError(f"--sample {args.sample:,}: at most {MAX_SAMPLE:,} points a run",
                       code="SK566", hint="explore in several runs, each with its own --seed")
    if args.train > args.sample:
        raise CliError(f"--train {args.train} is more than the {args.sample} points drawn",
                       code="SK566", hint="draw more with --sample, or train fewer")


MAX_SAMPLE = 1_000_000


def parse_spaces(items: list[str]) -> dict[str, str]:
    """['G={16,32}', 'w=32..256 step 16'] -> {'G': '{16,32}', 'w': '32..256 step 16'}."""
    spaces: dict[str, str] = {}
    for item in items:
        name, equals, domain = item.partition("=")
        name = name.strip()
        if not equals or not _NAME.fullmatch(name) or not domain.strip():
            raise CliError(f"--space {quoted(item)}: expected NAME=DOMAIN, such as "
                           "--space G={16,32,64} or --space w=32..256", code="SK560")
        if name in spaces:
            raise CliError(f"--space {name} is given twice", code="SK560")
        spaces[name] = domain
    return spaces


def _explore(args, spec: str) -> int:
    from ..explore.budget import Budget, measured_by
    from ..explore.counting import Counter
    from ..explore.space_run import explore_space

    counter = Counter(spec, parse_spaces(args.space), parse_overrides(args.overrides),
                      parse_input_shape(args.input), bool(args.allow_imports_outside),
                      calibration=args.calibration)
    budget = Budget(args.where, counted=measured_by(counter)) if args.where else None
    with _progress(f"counting {args.sample:,} points") as progress:
        exploration = explore_space(counter, args.out, args.sample, sampler=args.sampler,
                                    seed=args.seed, budget=budget, resume=args.resume,
                                    progress=progress)
    _say_counted(exploration)
    if args.train:
        _train(args, counter, exploration, budget)
    return _show(args, [args.out], figures_to=args.out)


def _say_counted(exploration) -> None:
    statuses = exploration.statuses
    total = len(exploration.points)
    how = "read back (--resume)" if exploration.resumed else (
        f"drawn in {exploration.drawing:.1f} s, counted in {exploration.seconds:.1f} s "
        f"({1e3 * exploration.seconds / max(total, 1):.2f} ms a point)")
    print(f"{total:,} points {how}: {statuses['ok']:,} ok, {statuses['over budget']:,} over "
          f"budget, {statuses['rejected']:,} rejected -> {exploration.folder}/points.csv",
          file=sys.stderr)


def _train(args, counter, exploration, budget) -> None:
    from ..explore import study

    study.train_points(exploration.folder, counter, exploration.points, k=args.train,
                       sampler=args.sampler, seed=args.seed, epochs=args.epochs,
                       data=parse_data_source(args.data), workers=args.workers,
                       storage=args.storage, study_name=args.study, resume=args.resume,
                       budget=budget, settings=_trial_settings(args), progress=_say)


def _trial_settings(args) -> dict:
    settings = {}
    if args.max_steps is not None:
        settings["max_steps"] = args.max_steps
    if args.batch_size is not None:
        settings["batch_size"] = args.batch_size
    return settings


def _work(args, target: list[str]) -> int:
    from ..explore import study

    if target:
        raise CliError("--worker takes no SPEC: the study's storage holds it", code="SK566",
                       hint="skdsl explore --worker --storage URL --study NAME")
    if not args.storage:
        raise CliError("--worker needs --storage URL: the study to join", code="SK566",
                       hint="skdsl explore --worker --storage sqlite:///runs/sk/study.db "
                            "--study explore")
    study.work(args.storage, args.study, workers=args.workers, progress=_say)
    return 0


def _say(line: str) -> None:
    """A study's progress, one line an event, on stderr (stdout keeps the tables)."""
    print(line, file=sys.stderr, flush=True)


def _show(args, folders: list[str], figures_to: str | None = None) -> int:
    from ..explore import show
    from .output import rich_console

    if len(folders) != 1:
        raise CliError("skdsl explore show takes one study folder: show DIR", code="SK566",
                       hint="skdsl explore compare A B ... puts several side by side")
    summary = show.show(folders[0], figures_to, plot=_plotting(args))
    show.print_summary(rich_console(), summary)
    return 0


def _compare(args, folders: list[str]) -> int:
    from ..explore import show
    from .output import rich_console

    if len(folders) < 2:
        raise CliError("skdsl explore compare takes two or more study folders", code="SK566")
    if not args.out and _plotting(args):
        raise CliError("skdsl explore compare needs --out DIR for its figures (or --no-plot)",
                       code="SK566")
    result = show.compare(folders, args.out or ".", plot=_plotting(args))
    show.print_comparison(rich_console(), result)
    return 0


def _plotting(args) -> bool:
    """Figures unless --no-plot; without matplotlib, a note and none (the tables still print)."""
    if args.no_plot:
        return False
    from ..explore import figures

    if not figures.available():
        print("note: no figures: matplotlib is not installed (pip install 'skdsl[plot]')",
              file=sys.stderr)
        return False
    return True


class _progress:
    """A rich progress bar on stderr while points are counted, when stderr is a terminal."""

    def __init__(self, description: str):
        self.description = description
        self.bar = None

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.__enter__()
        task = self.bar.add_task(self.description, total=None)
        return lambda done, total: self.bar.update(task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
