"""Arguments several commands share: SPEC and its flags, --input, --count, --sweep.

`add_command` makes a command's parser; `add_switches` and `add_values` declare flags named after
their settings (`fuse_bn`: --fuse-bn). Each other `add_*` puts one argument on a parser; each
`parse_*` turns its text into a value, or a CliError (SK50x) naming the flag. `load_spec(args)`
loads the SPEC the flags name.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Callable

from ..base.errors import CliError, SkdslError, SpecWarning, did_you_mean, named

_DIMS = re.compile(r"(\d+)[x×X](\d+)[x×X](\d+)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[+-]?\d+")
# Digits of a whole number on the command line: 2**63 - 1 has 19. Longer ones are refused before
# int() reads them (past 4,300 digits Python itself refuses, with no word of which flag).
MAX_DIGITS = 19
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def add_command(commands, name: str, run: Callable[[argparse.Namespace], int], summary: str,
                description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser of command `name`, which runs `run`: `summary` in `skdsl --help`, and its
    `description` and `epilog` shown as written."""
    parser = commands.add_parser(name, help=summary, description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)
    return parser


def add_switches(parser: argparse.ArgumentParser, default: bool | None = False,
                 **helps: str) -> None:
    """On/off flags, one per keyword with its help; `default` None tells a flag left out from
    one given (a resumed run keeps its own)."""
    for setting, text in helps.items():
        parser.add_argument(flag(setting), action="store_true", default=default, help=text)


def add_values(parser: argparse.ArgumentParser, **flags: tuple[str, str]) -> None:
    """Flags that take a value, kept as text for the command to check: setting=(METAVAR, help)."""
    for setting, (metavar, text) in flags.items():
        parser.add_argument(flag(setting), metavar=metavar, help=text)


# The flag of each setting whose flag is not its name with dashes (`batch_size`: --batch-size).
FLAGS = {"overrides": "--set", "sweeps": "--sweep", "num_classes": "--classes",
         "origin": "--from", "input_shape": "--input", "config_file": "--config"}


def flag(setting: str) -> str:
    """The command-line flag of a setting (one named in an error): batch_size -> --batch-size."""
    return FLAGS.get(setting, "--" + setting.replace("_", "-"))


def add_spec_argument(parser: argparse.ArgumentParser, optional: bool = False,
                      carried: bool = False) -> None:
    """SPEC, its --set overrides and --allow-imports-outside, as every command that reads one
    spec takes them."""
    parser.add_argument("spec", metavar="SPEC", nargs="?" if optional else None,
                        help="a .sk spec file, or a .json spec written by `skdsl spec --json`")
    add_overrides_argument(parser, "of the spec", carried)
    add_imports_argument(parser, carried)
    add_strict_argument(parser, "spec")


def add_imports_argument(parser: argparse.ArgumentParser, carried: bool = False) -> None:
    """--allow-imports-outside into args.allow_imports_outside (None when carried and not given)."""
    parser.add_argument("--allow-imports-outside", action="store_true",
                        default=None if carried else False,
                        help="let `use` read files outside the spec's folder and std/")


def add_strict_argument(parser: argparse.ArgumentParser, *specs: str) -> None:
    """--strict into args.strict; `specs`: the arguments that name the command's specs, whose
    warnings skdsl prints before the command runs (`spec_warnings`)."""
    parser.add_argument("--strict", action="store_true",
                        help="make the spec's warnings (SK7xx) errors: exit with status 2 "
                             "before doing anything")
    parser.set_defaults(linted=specs)


def spec_warnings(args: argparse.Namespace) -> list[SpecWarning]:
    """The warnings of the .sk specs the command's arguments name (see `add_strict_argument`).
    A spec with an error gives none here: the command shows the error alone, which --strict
    would otherwise hide behind the warnings."""
    from ..core.graph import lower
    from ..lang.loading import lint, load

    found: list[SpecWarning] = []
    outside = bool(getattr(args, "allow_imports_outside", False))
    for path in dict.fromkeys(_named_specs(args)):
        try:
            warnings = lint(path, outside)
            if warnings:  # only then: a spec that reads clean costs no second build
                lower(load(path, allow_imports_outside=outside))
        except SkdslError:
            continue
        found += warnings
    return found


def _named_specs(args: argparse.Namespace) -> list[str]:
    """The values of the arguments that may name specs; a list (explore's `SPEC | show DIR`)
    gives each item, and those that are no spec are left to the command."""
    values = [getattr(args, dest, None) for dest in getattr(args, "linted", ())]
    return [item for value in values for item in (value if isinstance(value, list) else [value])
            if isinstance(item, str)]


class WarningsAsErrors(SkdslError):
    """A spec's warnings under --strict: each printed as the error it becomes (status 2)."""

    def __init__(self, warnings: list[SpecWarning]):
        count = len(warnings)
        super().__init__(f"{count} warning{'s' * (count != 1)} made errors by --strict",
                         code=warnings[0].code)
        self.warnings = tuple(warnings)

    def render(self, spelled: Callable[[str], str] = named) -> str:
        return "\n".join(warning.as_error("a warning, made an error by --strict").render(spelled)
                         for warning in self.warnings)


def add_overrides_argument(parser: argparse.ArgumentParser, whose: str,
                           carried: bool = False) -> None:
    """--set NAME=VALUE into args.overrides; `carried`: None when not given, so that a
    resumed run keeps the overrides it was started with."""
    parser.add_argument("--set", metavar="NAME=VALUE", action="append",
                        default=None if carried else [], dest="overrides",
                        help=f"override a `param` {whose} (repeatable): --set M=3")


def add_input_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", metavar="CxHxW",
                        help="the input shape instead of the spec's, such as 3x320x320")


def add_count_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", metavar="CLASSES",
                        help="also count these op classes in the multiply-adds, comma-separated: "
                             "bn, act, pool, add, mul, softmax, or all (docs/analysis.md)")


def add_sweep_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sweep", metavar="NAME=V1,V2,...", action="append", default=[],
                        dest="sweeps",
                        help="one row per value of a `param` (repeatable: the cross product)")


def clipped(text: str, limit: int = 40) -> str:
    """A value as a message shows it: cut to `limit` characters, the last one '…'."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def quoted(text: str, limit: int = 40) -> str:
    """A value as a message shows it, quoted: 'abc', or cut as `clipped` cuts it."""
    return repr(clipped(text, limit))


def is_whole_number(text: str) -> bool:
    """Does `text` spell a whole number, of any length?"""
    return bool(_INT.fullmatch(text.strip()))


def whole_number(text: str) -> int | None:
    """The int `text` spells, or None when it spells none or one of more than MAX_DIGITS digits."""
    text = text.strip()
    if not is_whole_number(text) or len(text.lstrip("+-").lstrip("0")) > MAX_DIGITS:
        return None
    return int(text)


def parse_input_shape(text: str | None) -> tuple[int, int, int] | None:
    """'3x320x320' -> (3, 320, 320); None stays None (the spec's own input)."""
    from ..core.spec import LARGEST

    if text is None:
        return None
    match = _DIMS.fullmatch(text.strip())
    if not match:
        raise CliError(f"--input {quoted(text)}: expected channels×height×width such as "
                       f"3x224x224", code="SK501")
    shape = tuple(whole_number(size) for size in match.groups())
    if any(size is None or size > LARGEST for size in shape):
        raise CliError(f"--input {quoted(text)}: every size must be at most {LARGEST:,}",
                       code="SK501")
    if min(shape) < 1:
        raise CliError(f"--input {quoted(text)}: every size must be at least 1", code="SK501")
    return shape


def parse_overrides(items: list[str]) -> dict[str, int | float | str]:
    """['M=3', 'act=silu'] -> {'M': 3, 'act': 'silu'}: an int if it reads as one, else a float,
    else the word itself."""
    overrides: dict[str, int | float | str] = {}
    for item in items:
        name, equals, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        if not equals or not _NAME.fullmatch(name) or not raw:
            raise CliError(f"--set {quoted(item)}: expected NAME=VALUE, such as --set M=3",
                           code="SK502")
        if name in overrides:
            raise CliError(f"--set {name} is given twice", code="SK502",
                           hint="keep one --set per parameter")
        overrides[name] = _value(raw, "--set", name, "SK502")
    return overrides


def _value(raw: str, option: str, name: str, code: str) -> int | float | str:
    """An int if `raw` reads as one, else a float, else the word itself; a CliError for a
    number no spec can hold (over MAX_DIGITS digits, or beyond a float's range)."""
    if is_whole_number(raw):
        value = whole_number(raw)
        if value is None:
            raise CliError(f"{option} {name}={quoted(raw, 24)}: a whole number of more than "
                           f"{MAX_DIGITS} digits", code=code,
                           hint="a spec's integers are at most 9,223,372,036,854,775,807")
        return value
    if _FLOAT.fullmatch(raw):
        number = float(raw)
        if number in (float("inf"), float("-inf")):
            raise CliError(f"{option} {name}={quoted(raw, 24)}: a number beyond about 1.8e308",
                           code=code, hint="a spec's numbers are finite")
        return number
    return raw


def parse_data_source(text: str | None) -> str | None:
    """The --data text, its kind checked here; its directory is checked when a run opens it."""
    from ..core.settings import DATA_KINDS

    if text is None:
        return None
    kind = text.partition(":")[0]
    if kind not in DATA_KINDS:
        raise CliError(f"--data {quoted(text)}: unknown source {quoted(kind)}", code="SK511",
                       hint=did_you_mean(kind, DATA_KINDS) or f"use one of: {', '.join(DATA_KINDS)}")
    return text


def parse_count(text: str | None) -> tuple[str, ...]:
    """`--count bn,add` -> ("bn", "add"); `all` -> every class; None (no --count) -> ()."""
    from ..core.analysis import EXTRA_COUNTS

    if text is None:
        return ()
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise CliError(f"--count {quoted(text)}: name at least one op class", code="SK506",
                       hint=f"choose from {', '.join(EXTRA_COUNTS)} or all; leave out --count "
                            f"for the paper's convention")
    if names == ["all"]:
        return tuple(EXTRA_COUNTS)
    for name in names:
        if name not in EXTRA_COUNTS:
            raise CliError(f"--count {clipped(text)}: no op class {quoted(name)}", code="SK506",
                           hint=did_you_mean(name, EXTRA_COUNTS) or
                           f"choose from {', '.join(EXTRA_COUNTS)} or all")
    return tuple(names)


def parse_sweeps(items: list[str]) -> dict[str, list[int | float | str]]:
    """['M=1,2,3', 'act=relu,silu'] -> {'M': [1, 2, 3], 'act': ['relu', 'silu']}."""
    sweeps: dict[str, list[int | float | str]] = {}
    for item in items:
        name, equals, raw = item.partition("=")
        name = name.strip()
        values = [value.strip() for value in raw.split(",")]
        if not equals or not _NAME.fullmatch(name) or not all(values):
            raise CliError(f"--sweep {quoted(item)}: expected NAME=V1,V2,... such as "
                           f"--sweep M=1,2,3", code="SK540")
        if name in sweeps:
            raise CliError(f"--sweep {name} is given twice", code="SK540",
                           hint=f"list all its values in one --sweep {name}=...")
        parsed = [_value(value, "--sweep", name, "SK540") for value in values]
        if len(set(map(repr, parsed))) != len(parsed):
            raise CliError(f"--sweep {quoted(item)}: a value is listed twice", code="SK540")
        sweeps[name] = parsed
    return sweeps


def variant_flags(args: argparse.Namespace) -> tuple:
    """--input, --count, --set and --sweep, checked: (input shape, count, overrides, sweeps)."""
    overrides = parse_overrides(args.overrides)
    sweeps = parse_sweeps(args.sweeps)
    clash = sorted(set(overrides) & set(sweeps))
    if clash:
        raise CliError(f"--set {clash[0]} and --sweep {clash[0]} name the same parameter",
                       code="SK540", hint="give its values in --sweep alone")
    return parse_input_shape(args.input), parse_count(args.count), overrides, sweeps


def load_spec(args: argparse.Namespace, overrides: dict | None = None,
              num_classes: int | None = None):
    """The spec SPEC names, with `overrides` (default: the --set flags) and `num_classes`."""
    from ..lang.loading import load

    if overrides is None:
        overrides = parse_overrides(args.overrides)
    return load(args.spec, overrides, num_classes=num_classes,
                allow_imports_outside=bool(args.allow_imports_outside))


def add_latency_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--latency CALIBRATION: predicted times beside the counts (docs/latency.md)."""
    parser.add_argument("--latency", metavar="CALIBRATION",
                        help=f"add {what} predicted time from a latency calibration "
                             "(`skdsl latency calibrate`)")


def latency_calibration(path: str | None):
    """The calibration --latency names (None without one), each way it is not this machine's
    printed as a warning: predicting for another device is a use, not a mistake."""
    if not path:
        return None
    from ..core.latency import check_device, host_device, load_calibration

    calibration = load_calibration(path)
    for difference in check_device(calibration, host_device(calibration), allow_other=True):
        print(f"warning: the calibration is not this machine's: {difference}", file=sys.stderr)
    return calibration
