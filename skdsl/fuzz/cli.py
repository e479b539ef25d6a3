"""Fuzzing the command line: every misuse ends in an SK error, and nothing is written but outputs.

    python -m skdsl.commands.fuzz --target cli [--count N] [--seed S] [--timeout SECONDS]

A case is one command line: a command of the real parser (its commands, flags and the kinds of
their values are read from the argparse tree, so a new flag is fuzzed without a word here), in
a valid invocation with tiny settings, then edited: a value swapped for a boundary or garbage
one (empty, huge, unicode, a missing file, a directory, a FIFO, a character device, a symlink
to the FIFO, random bytes, an empty file, a truncated checkpoint), a flag repeated, dropped,
left without its value, abbreviated or misspelt, and the environment varied (COLUMNS, LINES,
OMP_NUM_THREADS, NO_COLOR, TERM, the SKDSL_* variables skdsl reads, torchrun's). It runs in a
fresh folder that is its working directory, holding those files: forked from a worker that has
skdsl and torch imported (its environment set in the child), or, when it varies a variable read
only at start-up (STARTUP_VARIABLES) and for a few others, in a new interpreter.

Beyond skdsl/fuzz/spec.py's ok / error / internal error / hang, a case may end in
- a usage error: argparse's (exit 2, no SK code; counted apart, not an offender);
- accepted garbage: exit 0 although a flag kept a value its documented type cannot take (a
  non-number for N, an empty --count, a missing --config file);
- a silent success: exit 0, nothing on stdout and no file written (rank > 0 of torchrun aside);
- a side effect: a path created, changed or removed in the folder other than the outputs the
  command line names (--output, -o, --out, OUT), a FIFO, device or symlink replaced or written
  (even when named as an output), a file left in TMPDIR (torch's torchinductor_USER cache
  folder aside), or anything changed in the shipped specs (the source tree's specs/,
  skdsl/specs, skdsl/lang/std) or new in the working directory of the campaign or the source
  tree's root.

A worker whose skdsl modules have changed on disk since it imported them (an edit during a
campaign) runs its case in a new interpreter and is replaced: its children would mix old and new
code.

`command_tree` reads the parser, `generate` makes a case, `run_case` runs one (it forks: call it
in a process that has not run torch, such as the spawned worker of a campaign), `session` gives
the campaign's Target. The parser and the entry point are given to them by the caller, as in
skdsl/fuzz/spec.py: this library does not import the command line.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import os
import random
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import spec as fuzz
from .spec import Main, Outcome

PACKAGE = Path(__file__).resolve().parents[1]
SOURCE_SPECS = PACKAGE.parent / "specs"  # a source checkout's; skdsl/specs is the shipped copy
TINY_NAME = "sknet_tiny.sk"
# The command line's parser factory (program.build_parser): this library does not import argparse,
# nor the command line; it reads the parser it is given, its actions told apart by their class.
ParserFactory = Callable[[], object]

KINDS = ("ok", "error", "usage", "internal", "hang", "garbage", "silent", "side-effect")
OFFENDING = ("internal", "hang", "garbage", "silent", "side-effect")

# -- the parser's tree ---------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One argument of a command, as argparse declares it."""

    flags: tuple[str, ...]  # ("--output", "-o"); () for a positional
    dest: str
    kind: str  # what its values are: int, spec, output, switch, ... (see _kind)
    nargs: object = None  # None: one value; "?", "+"; 0: a switch
    required: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # ("weights", "convert"); () is skdsl itself
    args: tuple[Arg, ...]
    subcommands: tuple[str, ...] = ()  # a group, which needs one of these

    @property
    def name(self) -> str:
        return " ".join(self.path) or "skdsl"


# The kind of a value, by the setting it goes to, else by its metavar; argparse's `type=int`
# and `choices` come first, an unknown one is "text" (fuzzed with the odd values of any kind).
DEST_KINDS = {"output": "output", "out": "outdir", "spec": "spec", "specs": "spec",
              "baseline": "spec", "checkpoint": "weights", "init": "weights",
              "source": "weights", "config": "config", "manifest": "manifest",
              "resume": "resume", "data": "data", "overrides": "set", "sweeps": "sweep",
              "count": "count", "input": "shape", "units": "units", "scales": "scales",
              "crop_scale": "range", "memory_budget": "size"}
METAVAR_KINDS = {"N": "int", "B": "int", "S": "int", "K": "int", "E": "float", "LR": "float",
                 "WD": "float", "EPS": "float", "NORM": "float", "ALPHA": "float",
                 "DECAY": "float", "SIZE": "size", "LO-HI": "range", "S,S,...": "scales",
                 "NAME,...": "units", "CxHxW": "shape", "NAME=VALUE": "set",
                 "NAME=V1,V2,...": "sweep", "CLASSES": "count", "SOURCE": "data",
                 "SPEC": "spec", "FILE": "file", "TOML": "manifest", "DIR": "outdir",
                 "PATH": "output", "IN": "weights", "OUT": "output"}
OUTPUT_KINDS = ("output", "outdir")


def _kind(action) -> tuple[str, tuple[str, ...]]:
    """(kind, choices) of an argparse action."""
    if type(action).__name__ in ("_HelpAction", "_VersionAction"):
        return type(action).__name__[1:-6].lower(), ()
    if action.nargs == 0:
        return "switch", ()
    if action.type is int or action.type is float:
        return action.type.__name__, ()
    if action.choices:
        return "choice", tuple(map(str, action.choices))
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if metavar.startswith("{") and metavar.endswith("}"):
        return "choice", tuple(metavar[1:-1].split(","))
    if action.dest in DEST_KINDS:
        return DEST_KINDS[action.dest], ()
    return METAVAR_KINDS.get(metavar, "text"), ()


@functools.lru_cache(maxsize=8)
def command_tree(build_parser: ParserFactory) -> tuple[Command, ...]:
    """Every command of the parser `build_parser` makes, groups and skdsl itself included."""
    commands: list[Command] = []

    def walk(parser, path: tuple[str, ...]) -> None:
        args, subcommands = [], ()
        for action in parser._actions:
            if type(action).__name__ == "_SubParsersAction":
                subcommands = tuple(action.choices)
                for name, sub in action.choices.items():
                    walk(sub, path + (name,))
                continue
            kind, choices = _kind(action)
            args.append(Arg(tuple(action.option_strings), action.dest, kind, action.nargs,
                            bool(action.required), choices))
        commands.append(Command(path, tuple(args), subcommands))

    walk(build_parser(), ())
    return tuple(sorted(commands, key=lambda command: command.path))


# -- values ----------------------------------------------------------------------------------

HUGE = "9" * 5000  # past int()'s 4,300 digits
LONG = "a" * 100_000  # under Linux's 128 KiB per argument
UNICODE = "ünïcödé×名前"
UNDECODABLE = "\udcff\udcfe"  # bytes that are not UTF-8, as Python decodes them from argv
LONG_NAME = "n" * 300 + ".sk"  # longer than a file name may be
DEEP_NAME = "d/" * 2100 + "x.sk"  # longer than a path may be
ODD = ["", "-1", "0", HUGE, "1e309", "nan", UNICODE, LONG, "-", " ", "x\ny", UNDECODABLE]

TINY_DATA = "synthetic:train=16,val=8"
# Files every case's folder holds. FIFO, device and symlink are made by `materialise`.
BAD_FILES = ("missing.sk", "folder", "fifo", "chardev", "fifo-link", "random.bin", "empty.sk",
             "truncated.pt")
SPECIAL_FILES = {"fifo": "FIFO", "chardev": "character device", "fifo-link": "symlink to the FIFO"}
CONFIGS = {"config.toml": f'data = "{TINY_DATA}"\nepochs = 1\nmax-steps = 2\nbatch-size = 4\n',
           "config-out.toml": f'data = "{TINY_DATA}"\nepochs = 1\nmax-steps = 2\nout = "cfg-run"\n',
           "bad.toml": "epochs = [\n", "unknown.toml": "bogus = 1\n",
           "wrongtype.toml": 'epochs = "three"\n'}
CONFIG_OUTPUTS = {"config-out.toml": "cfg-run"}
MANIFEST = ('[[tables]]\nid = "t1"\ntitle = "Tiny — one row"\n\n[[tables.rows]]\nid = "tiny"\n'
            'label = "SKNet-tiny"\nspec = "specs/tiny.sk"\n')
# Paths that name a good file, and no usable file, for each kind of input file.
USABLE = {"weights": ("good.pt",), "file": ("good.pt",),
          "config": ("config.toml", "config-out.toml", "empty.sk"),
          "manifest": ("specs/paper_tables.toml",)}
UNUSABLE = {"spec": (*BAD_FILES, "", "-", LONG_NAME, DEEP_NAME, UNICODE + ".sk",
                     UNDECODABLE + ".sk", "good.pt", "config.toml"),
            "weights": (*BAD_FILES, "tiny.sk", "", "-", "config.toml", LONG_NAME,
                        UNICODE + ".pt"),
            "config": ("bad.toml", "unknown.toml", "wrongtype.toml", "random.bin", "folder",
                       "fifo", "chardev", "fifo-link", "missing.toml", "", "tiny.sk"),
            "manifest": ("random.bin", "folder", "fifo", "chardev", "fifo-link", "missing.toml",
                         "", "bad.toml", "tiny.sk", "empty.sk")}
UNUSABLE["file"] = UNUSABLE["weights"]
# Made only for the cases that name them: from the run `_prepare` trains once per campaign.
ON_DEMAND = ("good.pt", "truncated.pt", "run", "specs/paper_tables.toml")

# Commands that import torch and run a network: only the tiny spec is a good value for them,
# and their cases are mostly misuse. Tiny settings, by setting, for each command.
HEAVY = ("train", "eval", "export", "weights convert", "weights export", "inspect attention",
         "doctor", "latency calibrate", "latency check")
TINY = {"train": {"spec": "tiny.sk", "data": TINY_DATA, "epochs": "1", "max_steps": "2",
                  "batch_size": "4", "out": "run-new"},
        "eval": {"spec": "tiny.sk", "checkpoint": "good.pt", "data": TINY_DATA, "batch_size": "8"},
        "export": {"spec": "tiny.sk", "checkpoint": "good.pt", "format": "torchscript",
                   "output": "model.ts"},
        "weights convert": {"origin": "timm", "spec": "tiny.sk", "source": "good.pt",
                            "output": "converted.pt"},
        "weights export": {"to": "timm", "spec": "tiny.sk", "source": "good.pt",
                           "output": "exported.pt"},
        "latency calibrate": {"per_class": "1", "out": "cal.json"},
        "latency check": {"specs": "tiny.sk"},
        "inspect attention": {"spec": "tiny.sk", "checkpoint": "good.pt", "data": TINY_DATA,
                              "limit": "4", "batch_size": "4", "scales": "1,2"},
        "tables": {"manifest": "specs/paper_tables.toml"}}
SLOW_SWITCHES = ("compile",)  # would make a valid case run for minutes: kept to misuse


def _shipped_specs() -> list[str]:
    folder = PACKAGE / "specs"
    return sorted(f"specs/{path.relative_to(folder).as_posix()}" for path in folder.rglob("*.sk"))


SHIPPED = _shipped_specs()
ABSOLUTE_TINY = str(SOURCE_SPECS / TINY_NAME) if (SOURCE_SPECS / TINY_NAME).is_file() else None
_INT = re.compile(r"\s*[+-]?[\d_]+\s*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHAPE = re.compile(r"(\d+)[x×X](\d+)[x×X](\d+)")
_SIZE = re.compile(r"\s*\d+(\.\d*)?\s*([KMGT]i?B?|[KMGT]?B)?\s*", re.I)


def _pools(arg: Arg, command: Command) -> tuple[list[str], list[str]]:
    """(good values, odd values: boundary and garbage) of an argument of `command`."""
    heavy = command.name in HEAVY
    kind = arg.kind
    if kind == "int":
        return ["1", "2", "4"], ["0", "-1", "+3", " 2", "64", "4096", "99999", "2147483648",
                                 "9223372036854775808", HUGE, "1_0", "", "abc", "1.5", "1e3",
                                 "nan", "0x10", "٣", UNICODE]
    if kind == "float":
        return ["0.1", "0.5"], ["0", "-1", "1", "1e-300", "1e300", "-0.0", HUGE, "", "abc",
                                "nan", "inf", "-inf", "1e309", "1,5", "0x1p3"]
    if kind == "choice":
        first = arg.choices[0]
        return list(arg.choices), ["", "bogus", first.upper(), first[:-1], first + " ", UNICODE]
    if kind == "shape":
        return ["3x32x32", "3x64x64", "3×32×32"], [
            "1x1x1", "3X32X32", " 3x32x32 ", "3x4096x4096", "3x99999x99999", HUGE + "x1x1",
            "", "3x32", "3x0x32", "0x32x32", "-3x32x32", "axbxc", "3x32x32x3", "3.0x32x32"]
    if kind == "set":
        return ["M=2", "M=3"], ["M=1", "M=0", "M=-1", "M=64", "X=1", "M=2.5", "M=relu",
                                "M=1000000", "M=" + HUGE, "", "M", "=3", "M=", "1M=2", "M = "]
    if kind == "sweep":
        return ["M=1,2"], ["M=1,2,3", "X=1,2", "M=1", "M=" + HUGE, "", "M", "M=", "M=1,,2",
                           "M=1,1", "=1,2"]
    if kind == "count":
        return ["bn", "all", "bn,add", "act,pool,mul,softmax"], ["", ",", "bogus", "bn,bogus",
                                                                 "BN", "all,bn", " bn "]
    if kind == "data":
        # (not a bare "synthetic": its 2,000 + 500 images make a valid case run for a minute)
        return [TINY_DATA], ["synthetic:train=1,val=1", TINY_DATA + ",scale=0.3-0.6",
                             "cifar10:folder", "cifar100:missing", "imagefolder:folder",
                             "imagefolder:tiny.sk", "cifar10:fifo", "", "bogus", "bogus:x",
                             "synthetic:train=-1", "synthetic:bogus=1", "synthetic:train=abc",
                             "cifar10:", "imagefolder", "Synthetic"]
    if kind == "size":
        return ["1GiB", "512MiB"], ["1", "0.5GB", "1TiB", HUGE + "GiB", "", "abc", "GiB",
                                    "-1GiB", "1.2.3GB", "nan", "0"]
    if kind == "range":
        return ["0.08-1", "0.25-1"], ["1-1", "", "1-0.5", "0-1", "abc", "0.5", "nan-1", "0.5-2"]
    if kind == "scales":
        return ["1,2", "1.0,1.5,2.0"], ["1", "1,8", "", "abc", "1,nan", "0.5", "9", "1,,2",
                                        "inf"]
    if kind == "units":
        return ["SK_2_1", "conv2.block1.sk"], ["", ",", "SK_9_9", "bogus", UNICODE]
    if kind == "resume":
        return [None, "auto"], ["yes", "", "Auto", "true"]
    if kind == "spec":
        good = ["tiny.sk", "sknet_tiny", "specs/" + TINY_NAME]
        if ABSOLUTE_TINY and not _has_positional_output(command):
            good.append(ABSOLUTE_TINY)
        if not heavy:
            good += ["sknet50", "resnext50_32x4d", *SHIPPED]
        return good, [*UNUSABLE["spec"], "tiny", "std/resnext.sk"]
    if kind in UNUSABLE:  # weights, file, config, manifest
        return list(USABLE[kind]), list(UNUSABLE[kind])
    if kind == "output":
        return ["out.dat", "nested/dir/out.dat", "-"], [
            "fifo", "chardev", "fifo-link", "folder", "tiny.sk", "", LONG_NAME,
            UNICODE + ".out", UNDECODABLE + ".out", DEEP_NAME, "fifo/x", "tiny.sk/x", "."]
    if kind == "outdir":
        return ["run-new", "nested/run"], ["run", "fifo", "chardev", "fifo-link", "folder",
                                           "tiny.sk", "", LONG_NAME, UNICODE, ".", "tiny.sk/sub"]
    return ["x"], ODD


def _has_positional_output(command: Command) -> bool:
    """A shuffled positional of such a command could become its output: no paths outside."""
    return any(not arg.flags and arg.kind in OUTPUT_KINDS for arg in command.args)


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def garbage_reason(arg: Arg, text: str | None) -> str | None:
    """Why `text` is a value the documented type of `arg` cannot take, or None when it may be
    one (boundary values such as 0 or -1 are not garbage: their checks are the commands')."""
    if text is None:
        return None
    kind = arg.kind
    if kind == "int" and not _INT.fullmatch(text):
        return "not a whole number"
    if kind == "float" and _finite(text) is None:
        return "not a finite number"
    if kind == "choice" and text not in arg.choices:
        return f"not one of {', '.join(arg.choices)}"
    if kind == "shape":
        match = _SHAPE.fullmatch(text.strip())
        if not match or any(size.strip("0") == "" for size in match.groups()):
            return "not CxHxW with sizes of at least 1"
    if kind in ("set", "sweep"):
        name, equals, raw = text.partition("=")
        values = [value.strip() for value in raw.split(",")] if kind == "sweep" else [raw.strip()]
        if not equals or not _NAME.fullmatch(name.strip()) or not all(values):
            return "not NAME=VALUE" if kind == "set" else "not NAME=V1,V2,..."
        if len(set(values)) != len(values):
            return "a value listed twice"
    if kind == "count":
        from ..core.analysis import EXTRA_COUNTS

        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names or any(name not in EXTRA_COUNTS and name != "all" for name in names):
            return "names no op class"
    if kind == "data":
        from ..core.settings import DATA_KINDS

        source, colon, folder = text.partition(":")
        if source not in DATA_KINDS or (source != "synthetic" and not folder):
            return "not a data source"
    if kind == "size":
        match = _SIZE.fullmatch(text)
        if not match or not any(digit in "123456789" for digit in text):
            return "not a memory size of at least one byte"
    if kind == "range":
        low, _, high = text.partition("-")
        low, high = _finite(low), _finite(high)
        if low is None or high is None or not 0 < low <= high <= 1:
            return "not LO-HI with 0 < LO <= HI <= 1"
    if kind == "scales":
        scales = [_finite(scale) for scale in text.split(",")]
        if not all(scale is not None and 1 <= scale <= 8 for scale in scales):
            return "not scales from 1 to 8"
    if kind == "resume" and text != "auto":
        return "neither nothing nor 'auto'"
    if text in UNUSABLE.get(kind, ()):
        return "not a usable file of its kind"
    return None


# -- cases -----------------------------------------------------------------------------------


@dataclass
class Case:
    """One command line, run in a fresh folder that holds the fixture files."""

    argv: list[str]  # after `skdsl`
    env: dict[str, str | None] = field(default_factory=dict)  # variations; None: unset
    outputs: list[str] = field(default_factory=list)  # paths it may write (relative)
    garbage: list[tuple[str, str, str]] = field(default_factory=list)  # (dest, value, why)
    fixtures: list[str] = field(default_factory=list)  # of ON_DEMAND, to make for it
    fresh: bool = False  # run in a new interpreter rather than forked from the worker
    origin: str = ""
    noise: bytes = b""  # random.bin's bytes


@dataclass
class _Item:
    """An argument as written: a flag (with its value, or None for a switch or a missing
    value), a positional, or stray tokens."""

    arg: Arg | None
    value: str | None = None
    spelling: str = ""  # the flag as written; "" for a positional
    form: str = "apart"  # apart: --flag VALUE; joined: --flag=VALUE; attached: -oVALUE
    stray: tuple[str, ...] = ()

    def tokens(self) -> list[str]:
        if self.arg is None:
            return list(self.stray)
        if not self.spelling:
            return [] if self.value is None else [self.value]
        if self.value is None:
            return [self.spelling]
        if self.form == "joined":
            return [f"{self.spelling}={self.value}"]
        if self.form == "attached":
            return [self.spelling + self.value]
        return [self.spelling, self.value]


ENVIRONMENT: dict[str, list[str | None]] = {
    "COLUMNS": ["0", "1", "-3", "abc", "", "99999999", HUGE], "LINES": ["0", "-1", "abc"],
    "OMP_NUM_THREADS": ["0", "abc", "99999", "-1", ""], "NO_COLOR": ["1"], "FORCE_COLOR": ["1"],
    "TERM": ["dumb", ""], "PYTHONIOENCODING": ["ascii"], "LC_ALL": ["C"],
    "TMPDIR": ["missing-tmp", ""], "HOME": [None, "missing-home"], "PATH": [None],
    "WORLD_SIZE": ["abc", "-1", "0", "1", ""], "RANK": ["abc", "-1", "1"],
    "LOCAL_RANK": ["abc", "-1"], "LOCAL_WORLD_SIZE": ["abc", "0", "99999"]}
# Read once as an interpreter starts (its stdio encoding, OpenMP's thread pool): a case that
# varies one runs in a new interpreter; the others are forked, their environment set in the child.
STARTUP_VARIABLES = {"PYTHONIOENCODING", "LC_ALL", "OMP_NUM_THREADS"}
KEPT = ("PATH", "HOME")  # inherited unless a case changes them; the others are left out
# torch's own caches in TMPDIR, made when torch._dynamo is imported (torch.optim imports it):
# torch's doing, once per machine, not skdsl's output; anything else left there is a side effect
TORCH_CACHES = ("torchinductor_",)


@functools.lru_cache(maxsize=1)
def skdsl_variables() -> tuple[str, ...]:
    """The SKDSL_* environment variables named in skdsl's source."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        found.update(re.findall(r"[\"'](SKDSL_[A-Z0-9_]+)[\"']", path.read_text("utf-8")))
    return tuple(sorted(found))


def _variations() -> dict[str, list[str | None]]:
    return {**ENVIRONMENT, **{name: ["1", "abc", "", "-1", "nan"] for name in skdsl_variables()}}


def _short(text: str | None, limit: int = 40) -> str:
    if text is None:
        return "(none)"
    return repr(text) if len(text) <= limit else f"{text[:20]!r}…({len(text):,} chars)"


WEIGHTS = {"skdsl": 0.3, "doctor": 0.3}  # little to vary; groups get 0.2, the others 1


def _pick_command(rng: random.Random, tree: tuple[Command, ...]) -> Command:
    weights = [WEIGHTS.get(command.name, 0.2 if command.subcommands else 1.0)
               for command in tree]
    return rng.choices(tree, weights)[0]


def _value(rng: random.Random, arg: Arg, command: Command, odd_share: float) -> str | None:
    good, odd = _pools(arg, command)
    return rng.choice(odd if rng.random() < odd_share else good)


def _flag_item(rng: random.Random, arg: Arg, command: Command, odd_share: float) -> _Item:
    value = None if arg.nargs == 0 else _value(rng, arg, command, odd_share)
    return _Item(arg, value, rng.choice(arg.flags))


def _baseline(rng: random.Random, command: Command) -> list[_Item]:
    """A valid invocation: the required arguments and the command's tiny settings."""
    tiny = TINY.get(command.name, {})
    items = []
    for arg in command.args:
        if arg.kind in ("help", "version"):
            continue
        positional = not arg.flags
        wanted = (positional and arg.nargs != "?") or arg.required or arg.dest in tiny
        if not wanted and not (positional and rng.random() < 0.8):
            continue
        value = tiny.get(arg.dest) or rng.choice(_pools(arg, command)[0])
        for _ in range(rng.randint(1, 3) if arg.nargs == "+" else 1):
            items.append(_Item(arg, None if arg.nargs == 0 else value,
                               "" if positional else arg.flags[0]))
            value = rng.choice(_pools(arg, command)[0])
    optional = [arg for arg in command.args if arg.flags and arg.kind not in ("help", "version")
                and arg.kind not in OUTPUT_KINDS and arg.dest not in SLOW_SWITCHES]
    for arg in rng.sample(optional, min(len(optional), rng.choice((0, 0, 1, 2)))):
        items.append(_flag_item(rng, arg, command, 0.0))
    return items


def _abbreviation(rng: random.Random, spelling: str, command: Command) -> str:
    """A unique prefix of a long flag, as argparse accepts it; the flag itself otherwise."""
    longs = [flag for arg in command.args for flag in arg.flags if flag.startswith("--")]
    if not spelling.startswith("--"):
        return spelling
    prefixes = [spelling[:k] for k in range(3, len(spelling))
                if sum(flag.startswith(spelling[:k]) for flag in longs) == 1]
    return rng.choice(prefixes) if prefixes else spelling


def _mutate(rng: random.Random, items: list[_Item], command: Command,
            tree: tuple[Command, ...], odd_share: float) -> str:
    """Edit the items in place; what was done, for the case's origin."""
    valued = [item for item in items if item.arg is not None and item.arg.nargs != 0
              and item.arg.kind not in ("help", "version")]
    flags = [item for item in items if item.arg is not None and item.spelling]
    optional = [arg for arg in command.args if arg.flags and arg.kind not in ("help", "version")]
    action = rng.choices(("value", "flag", "duplicate", "drop", "no value", "stray", "spelling",
                          "shuffle", "switch value", "command"),
                         (6, 5, 2, 1, 0.5, 1, 2, 1, 0.3, 0.2))[0]  # most reach the command
    if action == "value" and valued:
        item = rng.choice(valued)
        good, odd = _pools(item.arg, command)
        item.value = rng.choice(odd if rng.random() < max(odd_share, 0.7) else good)
        return f"{item.spelling or item.arg.dest} {_short(item.value)}"
    if action in ("value", "flag") and optional:
        arg = rng.choice(optional)
        item = _flag_item(rng, arg, command, odd_share)
        items.insert(rng.randint(0, len(items)), item)
        return f"add {item.spelling} {_short(item.value)}"
    if action == "duplicate" and flags:
        item = rng.choice(flags)
        copy = _Item(item.arg, item.value, item.spelling, item.form)
        if copy.value is not None and rng.random() < 0.5:
            copy.value = _value(rng, copy.arg, command, odd_share)
        items.insert(rng.randint(0, len(items)), copy)
        return f"repeat {item.spelling} {_short(copy.value)}"
    if action == "drop" and items:
        item = items.pop(rng.randrange(len(items)))
        return f"drop {item.spelling or (item.arg.dest if item.arg else 'stray')}"
    if action == "no value" and [item for item in valued if item.spelling]:
        item = rng.choice([item for item in valued if item.spelling])
        item.value = None
        if rng.random() < 0.5:
            items.remove(item)
            items.append(item)
        return f"{item.spelling} without a value"
    if action == "spelling" and flags:
        item = rng.choice(flags)
        short = [flag for flag in item.arg.flags if not flag.startswith("--")]
        if short and item.value is not None and rng.random() < 0.5:
            item.spelling, item.form = short[0], "attached"
        elif item.value is not None and rng.random() < 0.5:
            item.form = "joined"
        else:
            item.spelling = _abbreviation(rng, item.spelling, command)
        return f"spell {item.tokens()[0][:30]!r}"
    if action == "shuffle":
        positionals = [item for item in items if item.arg is not None and not item.spelling]
        rng.shuffle(items)
        order, moved = iter(positionals), {id(item) for item in positionals}
        items[:] = [next(order) if id(item) in moved else item for item in items]  # flags only
        return "shuffle"
    if action == "switch value":
        switches = [arg for arg in optional if arg.kind == "switch"]
        if switches:
            arg = rng.choice(switches)
            items.append(_Item(arg, rng.choice(("1", "", "no")), arg.flags[0], "joined"))
            return f"{arg.flags[0]} with a value"
    if action == "command" and command.path:
        return "misspell the command"  # done by generate, which owns the path
    others = [arg for other in tree for arg in other.args if arg.flags and other is not command]
    tokens = rng.choice([["--bogus"], ["-x"], ["--" + "a" * 60], ["--"], ["-"], ["extra.sk"],
                         ["-h"], ["--version"], ["--json=1", "--json"], [UNICODE], [""],
                         [rng.choice(others).flags[0]] if others else ["--bogus"]])
    items.insert(rng.randint(0, len(items)), _Item(None, stray=tuple(tokens)))
    return f"stray {' '.join(map(_short, tokens))}"


def _keep_cheap(rng: random.Random, items: list[_Item], command: Command) -> str | None:
    """A case with a slow switch (--compile) is made misuse: a garbage whole number added."""
    if not any(item.arg is not None and item.arg.dest in SLOW_SWITCHES for item in items):
        return None
    numbers = [arg for arg in command.args if arg.kind == "int" and arg.flags]
    if not numbers:
        items[:] = [item for item in items
                    if item.arg is None or item.arg.dest not in SLOW_SWITCHES]
        return "slow switch dropped"
    arg = rng.choice(numbers)
    items.append(_Item(arg, "abc", arg.flags[0]))
    return f"{arg.flags[0]} 'abc' (kept from a slow run)"


def generate(rng: random.Random, tree: tuple[Command, ...]) -> Case:
    """One case: a command's valid invocation with tiny settings, edited zero to three times,
    sometimes in a varied environment."""
    command = _pick_command(rng, tree)
    heavy = command.name in HEAVY
    odd_share = 0.8 if heavy else 0.55
    items = _baseline(rng, command)
    edits = []
    path = list(command.path)
    for _ in range(rng.choice((1, 1, 2, 2, 3) if heavy else (0, 1, 1, 2, 2, 3))):
        edit = _mutate(rng, items, command, tree, odd_share)
        if edit == "misspell the command":
            index = rng.randrange(len(path))
            path[index] = rng.choice((path[index][:-1], path[index].upper(), path[index] + "s"))
        edits.append(edit)
    edits.append(_keep_cheap(rng, items, command) or "")
    env = {}
    if rng.random() < 0.25:
        variations = _variations()
        for name in rng.sample(sorted(variations), rng.choice((1, 1, 2))):
            env[name] = rng.choice(variations[name])
    argv = path + [token for item in items for token in item.tokens()]
    outputs, garbage = [], []
    for item in items:
        if item.arg is None or item.value is None:
            continue
        if item.arg.kind in OUTPUT_KINDS:
            outputs.append(item.value)
        if item.value in CONFIG_OUTPUTS:
            outputs.append(CONFIG_OUTPUTS[item.value])
        reason = garbage_reason(item.arg, item.value)
        if reason:
            garbage.append((item.arg.dest, item.value, f"{item.spelling or item.arg.dest} "
                                                       f"{_short(item.value)}: {reason}"))
    fixtures = [name for name in ON_DEMAND if any(item.value == name for item in items)]
    if command.name == "tables" and "specs/paper_tables.toml" not in fixtures:
        fixtures.append("specs/paper_tables.toml")  # so that `tables` reads the tiny manifest
    told = [edit for edit in edits if edit]
    told += [f"{name}={_short(value)}" if value is not None else f"-u {name}"
             for name, value in env.items()]
    fresh = bool(set(env) & STARTUP_VARIABLES) or rng.random() < 0.05
    return Case(argv, env, outputs, garbage, fixtures, fresh=fresh,
                origin=f"{command.name}: {'; '.join(told) or 'valid'}",
                noise=rng.randbytes(256))


def cases(build_parser: ParserFactory):
    """The generator as a hypothesis strategy (hypothesis is needed only here)."""
    from hypothesis import strategies as st

    tree = command_tree(build_parser)
    return st.integers(0, 2**64 - 1).map(lambda seed: generate(random.Random(seed), tree))


def command_line(case: Case, short: bool = True) -> str:
    """The shell command that reproduces the case, in its folder."""
    words = [f"{name}={(_short if short else shlex.quote)(value)}" if value is not None
             else f"-u {name}" for name, value in case.env.items()]
    argv = [_short(arg, 60) if short and len(arg) > 60 else shlex.quote(arg) for arg in case.argv]
    return " ".join((["env", *words] if words else []) + ["skdsl", *argv])


# -- the case's folder -----------------------------------------------------------------------

PAST = 978_307_200 * 10**9  # 2001: any write moves a fixture's time to now


def _tiny_text() -> str:
    for folder in (PACKAGE / "specs", SOURCE_SPECS):
        if (folder / TINY_NAME).is_file():
            return (folder / TINY_NAME).read_text(encoding="utf-8")
    return fuzz.HEADER


def materialise(case: Case, folder: Path, cache: str | None = None) -> dict[str, str]:
    """Make the case's files in `folder`; the special files made, by name, with their kind."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny = _tiny_text()
    for name, text in {"tiny.sk": tiny, **CONFIGS}.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "random.bin").write_bytes(case.noise or bytes(range(256)))
    (folder / "empty.sk").write_bytes(b"")
    (folder / "folder").mkdir()
    specials = {}
    os.mkfifo(folder / "fifo")
    specials["fifo"] = SPECIAL_FILES["fifo"]
    try:
        os.mknod(folder / "chardev", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        specials["chardev"] = SPECIAL_FILES["chardev"]
    except OSError:  # not permitted here: the cases that name it name a missing file
        pass
    os.symlink("fifo", folder / "fifo-link")
    specials["fifo-link"] = SPECIAL_FILES["fifo-link"]
    run = Path(cache) / "run" if cache else None
    for name in case.fixtures:
        if name == "specs/paper_tables.toml":
            (folder / "specs").mkdir(exist_ok=True)
            (folder / "specs" / "paper_tables.toml").write_text(MANIFEST, encoding="utf-8")
            (folder / "specs" / "tiny.sk").write_text(tiny, encoding="utf-8")
        elif run is None or not (run / "last.pt").is_file():
            continue  # no prepared run: the case names a missing file
        elif name == "run":
            shutil.copytree(run, folder / "run")
        elif name == "good.pt":
            shutil.copyfile(run / "last.pt", folder / "good.pt")
        elif name == "truncated.pt":
            data = (run / "last.pt").read_bytes()
            (folder / "truncated.pt").write_bytes(data[:len(data) // 2])
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            os.utime(os.path.join(top, name), ns=(PAST, PAST), follow_symlinks=False)
    return specials


def _prepare(cache: str, main: Main) -> None:
    """Train the tiny spec for two steps once, in `cache`/run: the good checkpoint."""
    cache = Path(cache)
    if (cache / "run" / "last.pt").is_file() or (cache / "prepare.log").exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "tiny.sk").write_text(_tiny_text(), encoding="utf-8")
    argv = ["train", "tiny.sk", "--data", "synthetic:train=8,val=8", "--epochs", "1",
            "--batch-size", "4", "--out", "run"]
    streams = cache / "prepare"
    streams.mkdir(exist_ok=True)
    pid = _fork(main, argv, dict(os.environ), cache, streams)
    status, _, _ = _wait(pid, 600)
    log = "".join((streams / name).read_text("utf-8", "replace") for name in ("stdout", "stderr"))
    (cache / "prepare.log").write_text(f"exit {status}\n{log}", encoding="utf-8")


# -- running ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _warm_up() -> None:
    """Import torch once, in the process the cases fork from (never running it: OpenMP's
    threads would not survive the fork), so that a case does not pay for it."""
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401


def _redirect(streams: Path) -> None:
    """stdin from /dev/null, stdout and stderr into files, at the descriptors and in sys."""
    for descriptor, path, flags in ((0, os.devnull, os.O_RDONLY),
                                    (1, streams / "stdout", os.O_WRONLY | os.O_CREAT),
                                    (2, streams / "stderr", os.O_WRONLY | os.O_CREAT)):
        opened = os.open(path, flags | (os.O_TRUNC if descriptor else 0), 0o644)
        os.dup2(opened, descriptor)
        os.close(opened)
    sys.stdin = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False,
                      buffering=1)


def _fork(main: Main, argv: list[str], env: dict[str, str], cwd: Path, streams: Path) -> int:
    """`main(argv)` in a child process of its own session, as `skdsl` would run it."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    # The command's own exit handlers run at its end, as in a process of its own (matplotlib's
    # temporary config folder is removed by one); the fuzzer's, inherited by the fork, do not.
    atexit._clear()
    try:
        os.setsid()
        import multiprocessing.process as processes

        # This child is no daemonic worker: its own children (data loaders) may start.
        processes.current_process()._config.pop("daemon", None)
        processes._children.clear()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _redirect(streams)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = None
        code = main(list(argv))
        status = 0 if code is None else code & 0xFF if isinstance(code, int) else 1
    except BaseException:  # noqa: BLE001 - as Python reports what escapes main
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


BOOT = "import sys; from {module} import {name} as main; sys.exit(main(sys.argv[1:]))"


def _spawn(main: Main, argv: list[str], env: dict[str, str | None], cwd: Path,
           streams: Path) -> int:
    """`main(argv)` in a new interpreter of its own session."""
    boot = BOOT.format(module=main.__module__, name=main.__name__)
    with open(streams / "stdout", "wb") as out, open(streams / "stderr", "wb") as err:
        process = subprocess.Popen([sys.executable, "-P", "-c", boot, *argv], cwd=cwd, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                   start_new_session=True)
    process.returncode = 0  # reaped by _wait, not by Popen
    return process.pid


def _wait(pid: int, timeout: float) -> tuple[int, float, bool]:
    """(exit status, negative for a signal; CPU seconds; whether it was killed at `timeout`),
    and every process it left in its session killed."""
    deadline, delay, hung = time.monotonic() + timeout, 0.001, False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            _kill_group(pid)
            done, status, usage = os.wait4(pid, 0)
            hung = True
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    _kill_group(pid)
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, hung


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _environment(case: Case, tmp: Path) -> dict[str, str]:
    variations = _variations()
    env = {name: value for name, value in os.environ.items()
           if name not in variations or name in KEPT}
    env["TMPDIR"] = str(tmp)
    for name, value in case.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _parsed(build_parser: ParserFactory, argv: list[str]) -> tuple[object | None, bool]:
    """(the namespace the parser makes of argv or None, whether it asks for help or version)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return build_parser().parse_args(argv), False
        except SystemExit as stop:
            return None, stop.code in (0, None)


def _output_dests(build_parser: ParserFactory) -> set[str]:
    return {arg.dest for command in command_tree(build_parser) for arg in command.args
            if arg.kind in OUTPUT_KINDS}


def run_case(case: Case, main: Main, timeout: float = 20.0,
             parser: ParserFactory | None = None, cache: str | None = None,
             watch: bool = False) -> Outcome:
    """What `main` makes of the case, in a child process, with a time limit, classified; with
    `parser`, the command line's own, its effective garbage values and outputs are read; with
    `watch` (a campaign's worker), a change to skdsl's files retires this process."""
    namespace, helped = _parsed(parser, case.argv) if parser else (None, False)
    outputs = list(case.outputs)
    if namespace is not None:
        for dest in _output_dests(parser):
            value = getattr(namespace, dest, None)
            outputs += [value] if isinstance(value, str) else []
    if any(os.path.isabs(path) or os.path.normpath(path).startswith("..")
           for path in outputs if path not in ("", "-")):
        return Outcome("skipped", False, "not run: it names an output outside its folder")
    _warm_up()
    if cache and any(name in case.fixtures for name in ("good.pt", "truncated.pt", "run")):
        _prepare(cache, main)
    retire = watch and _stale()
    if retire:  # a child forked from here would mix this process's modules with newer ones
        case = replace(case, fresh=True)
    run = _attempt(case, main, timeout, outputs, cache)
    limit = timeout
    if run.hung:  # past its time on a busy machine is not yet a hang: once more, with more time
        limit = RETRY * timeout
        run = _attempt(case, main, limit, outputs, cache)
    garbage = []
    if run.status == 0 and namespace is not None and not helped:
        garbage = [why for dest, value, why in case.garbage
                   if getattr(namespace, dest, None) == value
                   or (isinstance(getattr(namespace, dest, None), list)
                       and value in getattr(namespace, dest))]
    outcome = classify(case, run.status, run.stdout, run.stderr, run.effects, garbage,
                       hung=run.hung, cpu=run.cpu, timeout=limit, wrote=run.wrote)
    if limit != timeout and not run.hung:
        outcome.detail += f"\n(past {timeout:g} s once, then done in {run.seconds:.0f} s)"
    outcome.retire = retire
    return outcome


_LOADED: dict[str, int] = {}  # the skdsl modules of this process: their files' times when seen


def _stale() -> bool:
    """Has a file of a skdsl module this process holds changed since it was first seen (an
    edit while a campaign runs)?"""
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) if name.split(".")[0] == "skdsl" else None
        if path:
            try:
                seen = os.stat(path).st_mtime_ns
            except OSError:
                return True
            if _LOADED.setdefault(name, seen) != seen:
                return True
    return False


RETRY = 3  # a case past its time limit runs again with this many times the limit


@dataclass
class _Run:
    """What one run of a case did."""

    status: int  # negative: killed by that signal
    cpu: float  # seconds
    hung: bool  # killed at its time limit
    seconds: float
    effects: list[str]  # side effects
    stdout: str
    stderr: str
    wrote: bool  # made or changed a file in its folder


def _attempt(case: Case, main: Main, timeout: float, outputs: list[str],
             cache: str | None) -> _Run:
    """Run the case once, in a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="skdsl-cli-fuzz-") as top:
        top = Path(top)
        folder, tmp, streams = top / "case", top / "tmp", top / "io"
        tmp.mkdir()
        streams.mkdir()
        specials = materialise(case, folder, cache)
        before, outside = _snapshot(folder), _outside(top)
        env = _environment(case, tmp)
        start, began = _spawn if case.fresh else _fork, time.monotonic()
        status, cpu, hung = _wait(start(main, case.argv, env, folder, streams), timeout)
        seconds, after = time.monotonic() - began, _snapshot(folder)
        effects = _written_into(folder, specials)
        effects += _side_effects(before, after, outputs, specials)
        effects += _outside_changes(outside, _outside(top))
        effects += [f"left {name!r} in TMPDIR" for name in sorted(os.listdir(tmp))
                    if not name.startswith(TORCH_CACHES)]
        return _Run(status, cpu, hung, seconds, effects, _read(streams / "stdout"),
                    _read(streams / "stderr"), after != before)


def _read(path: Path, limit: int = 20_000) -> str:
    try:
        with open(path, "rb") as stream:
            return stream.read(limit).decode("utf-8", "replace")
    except FileNotFoundError:  # the child failed before it made it
        return ""


_SK = re.compile(r"error SK\d{3}")
_USAGE = re.compile(r"^skdsl\b[^\n]*: error: ", re.M)
DOCUMENTED_FAILURES = {1: ("doctor", "tables")}  # exit 1: a self-check failed, a stale page


def _quiet_rank(case: Case) -> bool:
    """Under torchrun, a process other than rank 0 prints nothing, by design."""
    return any(case.env.get(name) not in (None, "0") for name in ("RANK", "LOCAL_RANK"))


def classify(case: Case, status: int, stdout: str, stderr: str, effects: list[str],
             garbage: list[str], hung: bool = False, cpu: float = 0.0,
             timeout: float = 0.0, wrote: bool = True) -> Outcome:
    """The outcome of a case that exited with `status` (negative: killed by that signal),
    printed `stdout` and `stderr`, made `effects`, kept the `garbage` values, and `wrote`
    (made or changed a file)."""
    message = next((line for line in stderr.splitlines() if line.strip()), "(nothing on stderr)")
    told = f"exit {status}: {message}"
    if hung:
        state = "busy" if cpu > timeout / 2 else "blocked"
        kind, located, detail = "hang", False, (
            f"no exit within {timeout:g} s ({state}: {cpu:.1f} s of CPU; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    elif status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else -status
        kind, located, detail = "internal", False, f"killed by signal {name}: {message}"
    elif "Traceback (most recent call last)" in stderr and status != 70:
        kind, located, detail = "internal", False, f"exit {status} with a traceback: {message}"
    elif status == 0 and _SK.search(stderr):
        kind, located, detail = "garbage", False, f"exit 0 after an error: {message}"
    elif status == 0:
        kind, located, detail = "ok", False, told
    elif status == 2 and _SK.search(stderr):
        kind, located, detail = "error", bool(fuzz._LOCATED.search(stderr)), told
    elif status == 2 and _USAGE.search(stderr):
        kind, located, detail = "usage", False, told
    elif case.argv and case.argv[0] in DOCUMENTED_FAILURES.get(status, ()):
        kind, located, detail = "error", False, told
    else:
        kind, located, detail = "internal", False, told
    if effects and kind in ("ok", "error", "usage"):
        kind, detail = "side-effect", f"{'; '.join(effects)} ({told})"
    elif garbage and kind == "ok":
        kind, detail = "garbage", f"exit 0 with {'; '.join(garbage)}"
    elif kind == "ok" and not stdout.strip() and not wrote and not _quiet_rank(case):
        kind, detail = "silent", "exit 0, and nothing printed nor written"
    elif effects:
        detail += f"; and {'; '.join(effects)}"
    tail = stderr[-3000:] if len(stderr) > 3000 else stderr
    return Outcome(kind, located, f"{detail}\n\nstderr:\n{tail}\nstdout:\n{stdout[:1500]}")


# -- side effects ----------------------------------------------------------------------------


def _entry(path: str) -> tuple | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    kind = stat.S_IFMT(info.st_mode)
    if kind == stat.S_IFDIR:  # a folder's own times change with what it holds
        return kind, info.st_ino
    return kind, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_rdev


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under `folder` (links not followed): type, inode, size, times, device."""
    entries = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(top, name)
            entry = _entry(path)
            if entry is not None:
                entries[os.path.relpath(path, folder)] = entry
    return entries


def _declared(path: str, outputs: list[str]) -> bool:
    """Is `path` an output, under one, or a folder made for one?"""
    for output in outputs:
        if output in ("", "-"):
            continue
        named = os.path.normpath(output)
        if named == "." or path == named or path.startswith(named + os.sep) \
                or named.startswith(path + os.sep):
            return True
    return False


def _side_effects(before: dict[str, tuple], after: dict[str, tuple], outputs: list[str],
                  specials: dict[str, str]) -> list[str]:
    found = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if path in specials:
            what = ("removed" if new is None else "replaced" if new[:2] != old[:2]
                    else "wrote into")
            found.append(f"{what} the {specials[path]} {path!r}")
        elif not _declared(path, outputs):
            what = "created" if old is None else "removed" if new is None else "changed"
            found.append(f"{what} {path!r}, not an output")
    return found


def _written_into(folder: Path, specials: dict[str, str]) -> list[str]:
    """Bytes left in the FIFO: something opened it to write, and wrote."""
    path = folder / "fifo"
    try:
        if "fifo" not in specials or not stat.S_ISFIFO(os.lstat(path).st_mode):
            return []
    except FileNotFoundError:
        return []
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = os.read(descriptor, 4096)
    except BlockingIOError:
        data = b""
    finally:
        os.close(descriptor)
    return [f"wrote {len(data)}+ bytes into the FIFO 'fifo'"] if data else []


def _watched() -> list[Path]:
    return [folder for folder in (SOURCE_SPECS, PACKAGE / "specs", fuzz.SEED_FOLDERS[1])
            if folder.is_dir()]


def _outside(top: Path) -> dict[str, tuple]:
    """What a case must not change outside its folder: the shipped specs, and the names in the
    source tree's root, the working directory and the case's own temporary folder."""
    state = {}
    for folder in _watched():
        state.update({str(folder / path): entry for path, entry in _snapshot(folder).items()})
    for folder in {PACKAGE.parent, Path.cwd(), top}:
        with contextlib.suppress(OSError):
            state.update({str(folder / name): ("name",) for name in os.listdir(folder)
                          if not name.startswith(".")})
    return state


def _outside_changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    found = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old != new:
            what = "created" if old is None else "removed" if new is None else "changed"
            found.append(f"{what} {path!r} outside the case's folder")
    return found


# -- campaigns -------------------------------------------------------------------------------


def save_case(case: Case, outcome: Outcome, folder: Path, cache: str | None = None) -> None:
    """The case's folder as it was before it ran, reproduce.sh, and OUTCOME.txt."""
    if (folder / "case").exists():  # an earlier campaign's offender of the same number
        shutil.rmtree(folder / "case")
    materialise(case, folder / "case", cache)
    full = command_line(case, short=False)
    script = f'#!/bin/sh\ncd "$(dirname "$0")/case" && exec {full}\n'
    (folder / "reproduce.sh").write_bytes(os.fsencode(script))
    (folder / "reproduce.sh").chmod(0o755)
    (folder / "OUTCOME.txt").write_text(
        f"made from {case.origin}\nreproduce: cd {folder / 'case'} && {command_line(case)}"
        f"  (exactly: {folder / 'reproduce.sh'})\n\n{outcome.detail}",
        encoding="utf-8", errors="replace")


def target(build_parser: ParserFactory, timeout: float, cache: str) -> fuzz.Target:
    """The command-line fuzzer as a campaign's Target (`session` makes `cache`)."""
    tree = command_tree(build_parser)
    return fuzz.Target(
        "command lines", functools.partial(generate, tree=tree),
        functools.partial(run_case, timeout=timeout, parser=build_parser, cache=cache,
                          watch=True),
        command_line, functools.partial(save_case, cache=cache), KINDS, OFFENDING,
        start="spawn", slack=60.0 + 600.0, fresh_worker=False)


@contextlib.contextmanager
def session(build_parser: ParserFactory, timeout: float = 20.0):
    """The Target, with a folder for the run trained once (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="skdsl-cli-fuzz-cache-") as cache:
        yield target(build_parser, timeout, cache)
