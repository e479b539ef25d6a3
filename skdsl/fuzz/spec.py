"""Grammar-aware fuzzing of the front end: every input ends in a spec or a located SkdslError.

    python -m skdsl.commands.fuzz [--count N] [--seed S] [--timeout SECONDS] [--save DIR]

Mutants are the shipped specs (specs/, skdsl/lang/std/) edited token by token and line by line,
token soup from the grammar's keywords and terminals, and small folders of files that import
each other (cycles through subfolders, paths leaving the folder, networks in imported files).
Each runs as `skdsl check FILE` and `skdsl build FILE --json` in a worker process with a
time limit; the run prints how many were tried, ended ok, in a located error, in an internal
error (exit 70, or a dead worker) or in a hang, and saves the first offenders to reproduce.
`mutants()` is the same generator as a hypothesis strategy, for tests/fuzz/test_fuzz.py.

The command line under test is given to `run_in_process` and `campaign` as `main` (an entry point
such as `skdsl.commands.main`): the library does not import it (skdsl/commands/fuzz.py does).
What a campaign generates and how a case runs is its `Target`: SPEC here, the command-line
fuzzer's in skdsl/fuzz/cli.py; the worker process, the tally and the saving of offenders are
shared.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..lang.expand import STD_DIR
from ..lang.parser import GRAMMAR, LAYER_KEYWORDS, STATEMENT_KEYWORDS

PACKAGE = Path(__file__).resolve().parents[1]
SEED_FOLDERS = (PACKAGE.parent / "specs", STD_DIR)
MAIN = "main.sk"
HEADER = "network n:\n    input 3x32x32\n    classes 10\n    stage s: conv 3x3, 8\n"

# Values at and past the language's limits, and the characters that trip lexers.
EXTREMES = ["0", "-1", "2147483648", "9223372036854775808", "9" * 5000, "0" * 5000 + "7",
            "1e309", "1e-400", "0.0", "3x0", "0x0", "1x1x1x1", "99999x99999", "x0",
            "x1000000000000", "x9999", "27.5M", "9" * 400 + "G", "nan", "inf", '"/etc/passwd"',
            '"' + "a" * 5000 + '"']
ODD_TEXT = ["\x00", "\ufeff", "×", "é", "\u2028", "\r", "\t", "\f", "\\\n", "\n", "\n    ",
            "\n        ", "#", "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace")]
SAMPLES = ["3", "64", "3x3", "3x224x224", "0.2", "4k", "x3", "relu", "none", "global", "dw",
           "width", "M", "G=32", "stride 2", "r=16", '"std/resnext.sk"', "sk_unit(64, 128)",
           "if", "else", "for", "in", "==", "int(", "round(", "make_divisible(", "in_channels",
           "upsample", "scale", "to", "x depth", "if stride == 1:", "residual if in_channels == c:",
           "for c, n in (16, 1), (24, 2):", "make_divisible(64 * 0.75, 8)", "upsample to input"]


@dataclass
class Mutant:
    """Files of one test case, by path relative to a fresh folder; MAIN is the one checked."""

    files: dict[str, str]
    origin: str  # how it was made, for the offender's report


@dataclass
class Outcome:
    kind: str  # ok, error (located or not), internal, hang; a target may add its own
    located: bool = False
    detail: str = ""
    retire: bool = False  # the worker is out of date (skdsl changed on disk): start another


KINDS = ("ok", "error", "internal", "hang")
# How `summary` names the kinds other targets add.
KIND_NAMES = {"usage": "usage errors", "garbage": "accepted garbage",
              "silent": "silent successes", "side-effect": "side effects"}


@dataclass
class Tally:
    tried: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    located: int = 0
    offenders: list[tuple[int, object, Outcome]] = field(default_factory=list)


# -- generating ------------------------------------------------------------------------------


def _grammar_words() -> list[str]:
    quoted = re.findall(r'"([^"\\]+)"', GRAMMAR.read_text(encoding="utf-8"))
    return sorted(set(quoted) | set(LAYER_KEYWORDS) | set(STATEMENT_KEYWORDS) | {"SK", "SUM"})


VOCABULARY = _grammar_words() + SAMPLES + EXTREMES + ODD_TEXT


def seed_texts() -> list[tuple[str, str]]:
    """(name, text) of every shipped spec: those of a source checkout and the standard library."""
    found = []
    for folder in SEED_FOLDERS:
        for path in sorted(folder.rglob("*.sk")) if folder.is_dir() else []:
            found.append((path.name, path.read_text(encoding="utf-8")))
    return found or [("header", HEADER)]


_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _edit_tokens(rng: random.Random, text: str) -> str:
    tokens = _tokens(text) or [""]
    _edit_one(rng, tokens, {
        "replace": lambda token: [rng.choice(VOCABULARY)],
        "insert": lambda token: [rng.choice((" ", "")) + rng.choice(VOCABULARY) + " ", token]})
    return "".join(tokens)


def _edit_lines(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    _edit_one(rng, lines, {
        "indent": lambda line: [" " * rng.choice((1, 2, 4, 8)) + line],
        "dedent": lambda line: [line.lstrip()]})
    return "\n".join(lines)


def _edit_one(rng: random.Random, items: list[str],
              own_edits: dict[str, Callable[[str], list[str]]]) -> None:
    """Delete, duplicate or swap one of `items` in place, or put in its stead what one of
    `own_edits` (the tokens' or the lines' own) makes of it."""
    edits = {"delete": lambda item: [], "duplicate": lambda item: [item, item], "swap": None,
             **own_edits}
    index = rng.randrange(len(items))
    action = rng.choice(tuple(edits))
    if action == "swap":
        other = rng.randrange(len(items))
        items[index], items[other] = items[other], items[index]
    else:
        items[index:index + 1] = edits[action](items[index])


def _extreme_number(rng: random.Random, text: str) -> str:
    numbers = list(re.finditer(r"\b\d+\b|\bx\d+\b", text))
    if not numbers:
        return text + rng.choice(EXTREMES)
    match = rng.choice(numbers)
    return text[:match.start()] + rng.choice(EXTREMES) + text[match.end():]


def _truncate(rng: random.Random, text: str) -> str:
    return text[:rng.randrange(len(text) + 1)]


def _odd_character(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + rng.choice(ODD_TEXT) * rng.choice((1, 1, 3)) + text[at:]


def _deep_nesting(rng: random.Random, text: str) -> str:
    depth = rng.choice((10, 70, 300, 1000))
    kind = rng.randrange(3)
    if kind == 0:
        return _extreme_number_with(rng, text, "(" * depth + "8" + ")" * depth)
    if kind == 1:
        return _extreme_number_with(rng, text, "+".join(["1"] * depth * 20))
    body = "".join(f"{'    ' * (i + 2)}residual:\n" for i in range(depth))
    return text + f"network deep:\n    input 3x8x8\n    stage s:\n{body}{'    ' * (depth + 2)}bn\n"


def _extreme_number_with(rng: random.Random, text: str, replacement: str) -> str:
    numbers = list(re.finditer(r"\b\d+\b", text))
    if not numbers:
        return text + replacement
    match = rng.choice(numbers)
    return text[:match.start()] + replacement + text[match.end():]


def _long_line(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    index = rng.randrange(len(lines))
    lines[index] += rng.choice((", 1", " + 1", " #", "x")) * rng.choice((100, 5000, 100_000))
    return "\n".join(lines)


MUTATIONS = (_edit_tokens, _edit_tokens, _edit_tokens, _edit_lines, _edit_lines,
             _extreme_number, _truncate, _odd_character, _deep_nesting, _long_line)


def _token_soup(rng: random.Random) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(rng.randrange(1, 60)))


def _import_folder(rng: random.Random, text: str) -> dict[str, str]:
    """A few files that import each other, in a folder with a subfolder."""
    body = text if "network" in text else text + HEADER
    cases = [
        {MAIN: 'use "sub/x.sk"\n' + body, "sub/x.sk": 'use "../main.sk"\n'},
        {MAIN: 'use "main.sk"\n' + body},
        {MAIN: 'use "sub/x.sk"\n' + body, "sub/x.sk": HEADER},
        {MAIN: 'use "sub/x.sk"\n' + body, "sub/x.sk": 'use "y.sk"\n', "sub/y.sk": 'use "x.sk"\n'},
        {MAIN: 'use "/etc/passwd"\n' + body},
        {MAIN: 'use "std/../../../../../../etc/passwd"\n' + body},
        {MAIN: 'use "../outside.sk"\n' + body},
        {MAIN: f'use "{"d/" * 400}x.sk"\n' + body},
        {MAIN: f'use "{"a" * 300}.sk"\n' + body},
        {MAIN: 'use "sub"\n' + body, "sub/x.sk": "\n"},
        {MAIN: 'use "a.sk"\nuse "b.sk"\n' + body, "a.sk": 'use "c.sk"\n', "b.sk": 'use "c.sk"\n',
         "c.sk": "block c(w):\n    conv 3x3, w\n"},
    ]
    return rng.choice(cases)


def generate(rng: random.Random, seeds: list[tuple[str, str]] | None = None) -> Mutant:
    """One mutant: mostly a shipped spec with one to four edits."""
    seeds = seeds or _SEEDS
    roll = rng.random()
    if roll < 0.08:
        return Mutant({MAIN: _token_soup(rng)}, "token soup")
    name, text = rng.choice(seeds)
    edits = []
    for _ in range(rng.choice((1, 1, 2, 3, 4))):
        mutation = rng.choice(MUTATIONS)
        text = mutation(rng, text)
        edits.append(mutation.__name__.lstrip("_"))
    origin = f"{name}: {', '.join(edits)}"
    if roll < 0.16:
        files = _import_folder(rng, text)
        return Mutant(files, origin + ", in an import folder")
    return Mutant({MAIN: text}, origin)


_SEEDS = seed_texts()


def mutants():
    """The generator as a hypothesis strategy (hypothesis is needed only here)."""
    from hypothesis import strategies as st

    return st.integers(0, 2**64 - 1).map(lambda seed: generate(random.Random(seed)))


# -- running ---------------------------------------------------------------------------------


def write(mutant: Mutant, folder: Path) -> Path:
    for name, text in mutant.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return folder / MAIN


COMMANDS = (("check",), ("build", "--json"))
_LOCATED = re.compile(r"^\S.*:\d+:\d+: error SK\d{3}", re.M)
Main = Callable[[list[str]], int]  # a command line's entry point: arguments in, exit status out


def run_in_process(mutant: Mutant, main: Main) -> Outcome:
    """What `skdsl check` and `skdsl build --json` (run by `main`) make of the mutant, in this
    process."""
    with tempfile.TemporaryDirectory(prefix="skdsl-fuzz-") as folder:
        path = str(write(mutant, Path(folder)))
        outcomes = []
        for command in COMMANDS:
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                status = main([command[0], path, *command[1:]])
            outcomes.append(_classify(status, err.getvalue(), command))
    internal = [o for o in outcomes if o.kind == "internal"]
    return internal[0] if internal else max(outcomes, key=lambda o: o.kind == "error")


def _classify(status: int, stderr: str, command: tuple[str, ...]) -> Outcome:
    if status == 0:
        return Outcome("ok")
    if status == 2 and "error SK" in stderr:
        return Outcome("error", bool(_LOCATED.search(stderr)), stderr)
    return Outcome("internal", False, f"skdsl {' '.join(command)} exited {status}:\n{stderr}")


Run = Callable[[object, Main], Outcome]  # one case through `main`, in the worker process


def _worker(connection, memory_bytes: int, main: Main, run: Run = run_in_process) -> None:
    """A process that runs the cases sent to it until its parent closes the pipe."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    sys.setrecursionlimit(1000)
    while True:
        try:
            case = connection.recv()
        except EOFError:
            return
        connection.send(run(case, main))


class _Worker:
    """The worker process. `start` is multiprocessing's start method: "fork" starts fast (skdsl
    is imported already); "spawn" starts a clean interpreter, for cases that fork again once
    this process may have run torch (OpenMP does not survive a fork). `run` and `main` must
    then be importable by name."""

    def __init__(self, memory_bytes: int, main: Main, run: Run = run_in_process,
                 start: str = "fork"):
        import multiprocessing

        context = multiprocessing.get_context(start)
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, memory_bytes, main, run),
                                       daemon=True)
        self.process.start()
        self.broken = False  # it hung or died: start another

    def run(self, case, timeout: float) -> Outcome:
        self.connection.send(case)
        if not self.connection.poll(timeout):
            self.broken = True
            return Outcome("hang", False, f"no answer within {timeout:g} s")
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            self.broken = True
            return Outcome("internal", False, f"the worker died (exit {self.process.exitcode})")

    def stop(self) -> None:
        self.process.kill()
        self.process.join()


@dataclass(frozen=True)
class Target:
    """What a campaign fuzzes: how a case is made (`generate`, from a seeded Random), run in the
    worker (`run`), told in one line (`describe`) and saved to reproduce (`save`, into a new
    folder, with OUTCOME.txt: the origin, how to reproduce, a blank line, the outcome)."""

    noun: str  # "mutants"
    generate: Callable[[random.Random], object]
    run: Run
    describe: Callable[[object], str]
    save: Callable[[object, Outcome, Path], None]
    kinds: tuple[str, ...] = KINDS
    offending: tuple[str, ...] = ("internal", "hang")
    start: str = "fork"  # the worker's start method (see _Worker)
    slack: float = 0.0  # seconds the worker may take beyond the campaign's timeout
    fresh_worker: bool = True  # a new worker after every offender, not only after a broken one


def campaign(count: int, seed: int, timeout: float, main: Main, memory_mb: int = 2048,
             report=print, target: Target | None = None) -> Tally:
    """Run `count` cases of `target` (default SPEC's mutants) from `seed` through `main`,
    restarting the worker after a hang or a crash."""
    target = target or SPEC
    rng, tally = random.Random(seed), Tally(counts=dict.fromkeys(target.kinds, 0))

    def start() -> _Worker:
        return _Worker(memory_mb * 2**20, main, target.run, target.start)

    worker, began = start(), time.monotonic()
    try:
        for index in range(count):
            case = target.generate(rng)
            outcome = worker.run(case, timeout + target.slack)
            offends = outcome.kind in target.offending
            if worker.broken or outcome.retire or (offends and target.fresh_worker):
                worker.stop()
                worker = start()
            if offends:
                tally.offenders.append((index, case, outcome))
                first = _first_line(outcome)
                report(f"  {index:06d} {outcome.kind}: {target.describe(case)[:300]}\n"
                       f"      {first[:300]}")
            tally.tried += 1
            tally.counts[outcome.kind] = tally.counts.get(outcome.kind, 0) + 1
            tally.located += outcome.located
            if (index + 1) % 500 == 0:
                minutes = (time.monotonic() - began) / 60
                report(f"  {index + 1:,} tried in {minutes:.1f} min: {summary(tally)}")
    finally:
        worker.stop()
    return tally


def summary(tally: Tally) -> str:
    counts = tally.counts
    others = "".join(f", {KIND_NAMES.get(kind, kind)} {number:,}"
                     for kind, number in counts.items() if kind not in KINDS)
    return (f"ok {counts['ok']:,}, errors {counts['error']:,} ({tally.located:,} located), "
            f"internal errors {counts['internal']:,}, hangs {counts['hang']:,}{others}")


def _first_line(outcome: Outcome) -> str:
    return next((line for line in outcome.detail.splitlines() if line.strip()), "")


def save_offenders(tally: Tally, folder: Path, limit: int = 50,
                   target: Target | None = None) -> list[Path]:
    """The first `limit` offenders, each in a folder of its own; every offender is listed in
    offenders.txt, one line each."""
    target = target or SPEC
    saved, lines = [], []
    for number, (index, case, outcome) in enumerate(tally.offenders):
        first = _first_line(outcome)
        lines.append(f"{index:06d} {outcome.kind}: {target.describe(case)}\n    {first[:300]}")
        if number < limit:
            saved.append(folder / f"{index:06d}-{outcome.kind}")
            target.save(case, outcome, saved[-1])
    if lines:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "offenders.txt").write_text("\n".join(lines) + "\n", encoding="utf-8",
                                              errors="replace")
    return saved


def _save_mutant(mutant: Mutant, outcome: Outcome, case: Path) -> None:
    write(mutant, case)
    (case / "OUTCOME.txt").write_text(
        f"made from {mutant.origin}\nreproduce: skdsl check {case / MAIN}\n\n{outcome.detail}",
        encoding="utf-8", errors="replace")


SPEC = Target("mutants", generate, run_in_process, lambda mutant: mutant.origin, _save_mutant)
