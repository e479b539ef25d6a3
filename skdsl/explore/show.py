"""`skdsl explore show DIR` and `skdsl explore compare A B ...`: what study folders say.

show: how many points of the space were ok, over budget or rejected (by error code); the spread
of the built points' parameters and multiply-adds; the trained trials' Pareto front of error
against multiply-adds, the best trial, and the EDF of error at a few levels (RegNet's F(e), the
fraction of models with error below e); and the figures of figures.py.

compare: the studies' EDFs on one plot, and a table comparing them at equal cost: each space's
best and median error among its trials inside the multiply-add range that every study reaches,
since a space of larger networks would otherwise win by being larger.

No torch. matplotlib only for the figures; rich only inside the functions that print (through
report.network's tables). Nothing here prints unless handed a console, or exits.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

from ..base import files
from ..base.errors import SkdslError
from ..report.network import giga, millions, short_count
from . import figures
from .points import OK, OVER_BUDGET, REJECTED, STATUSES, Point, read_points

POINTS, TRIALS = "points.jsonl", "trials.jsonl"
COMPLETE = "complete"
# The EDF is read at the best error plus these many points of top-1 error: how much of a space
# comes close to its best.
EDF_OFFSETS = (1.0, 2.0, 5.0)
SHOW_FIGURES = {"space": "space.png", "front": "error_macs.png", "edf": "edf.png"}
COMPARE_FILES = ("edf.png", "edf_macs.png", "compare.csv")
_HINT = "a study folder is what `skdsl explore SPEC --out DIR` writes: run that first"


# -- reading a study folder -----------------------------------------------------------------------


@dataclass
class Trial:
    """One line of trials.jsonl: a trained point (`point`: its index in points.jsonl, None for
    a point not drawn from the table). `error` is the final top-1 error in %."""

    number: int
    point: int | None
    values: dict
    state: str
    error: float | None = None
    best_error: float | None = None
    time_s: float | None = None
    reason: str | None = None
    run: str | None = None
    params: int | None = None
    macs: int | None = None
    activations: int | None = None
    peak_bytes: int | None = None

    @classmethod
    def from_row(cls, row: dict, names: list[str]) -> "Trial":
        optional = ("error", "best_error", "time_s", "reason", "run", "params", "macs",
                    "activations", "peak_bytes")
        trial = cls(number=row["number"], point=row.get("point"), state=row["state"],
                    values={name: row[name] for name in names if name in row},
                    **{key: row.get(key) for key in optional})
        trial.check()
        return trial

    def check(self) -> None:
        """ValueError for a field of the wrong kind: the numbers are compared and summed."""
        if not isinstance(self.number, int) or not isinstance(self.state, str):
            raise ValueError("'number' must be a whole number and 'state' a word")
        for key in ("error", "best_error", "time_s", "params", "macs"):
            if not _is_number(getattr(self, key), allow_none=True):
                raise ValueError(f"'{key}' is {getattr(self, key)!r}, not a number")

    @property
    def scored(self) -> bool:
        """Complete, with a finite error: a model the EDF and the front count."""
        return self.state == COMPLETE and self.error is not None and math.isfinite(self.error)

    @property
    def setting(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.values.items())


@dataclass
class Study:
    """A study folder read back: the parameter names, the points of the space, the trials."""

    folder: Path
    names: list[str]
    points: list[Point]
    trials: list[Trial] = field(default_factory=list)

    @property
    def built(self) -> list[Point]:
        """The points that have counts: ok and over budget."""
        return [point for point in self.points
                if point.status in (OK, OVER_BUDGET) and point.params is not None
                and point.macs is not None]

    @property
    def scored(self) -> list[Trial]:
        return [trial for trial in self.trials if trial.scored]

    @property
    def errors(self) -> list[float]:
        return [trial.error for trial in self.scored]


def load_study(folder: str | Path) -> Study:
    """The study in `folder`; SK562 when it is missing, or its points.jsonl (required) or
    trials.jsonl (read when present) is not what `skdsl explore` writes."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "no such folder" if not folder.exists() else "it is not a folder"
        raise _unusable(folder, what)
    names, points = _read_points(folder)
    return Study(folder, names, points, _read_trials(folder, names))


def _unusable(folder: Path, what: str) -> SkdslError:
    return SkdslError(f"cannot read the study '{folder}': {what}", code="SK562", hint=_HINT)


def _read_points(folder: Path) -> tuple[list[str], list[Point]]:
    try:
        # stat only: a FIFO or a huge file is refused before read_points opens it
        files.check_readable(folder / POINTS, files.MAX_TEXT_BYTES)
        names, points = read_points(folder)
        for point in points:
            _check_point(point)
    except files.FileProblem as problem:
        what = f"no {POINTS} in it" if problem.kind == "missing" else f"{POINTS}: {problem}"
        raise _unusable(folder, what) from None
    except OSError as error:
        raise _unusable(folder, f"cannot read {POINTS}: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise _unusable(folder, f"{POINTS} is not a table of points ({_why(error)})") from None
    return names, points


def _check_point(point: Point) -> None:
    """ValueError for a point whose status or counts are not what explore writes."""
    if point.status not in STATUSES:
        raise ValueError(f"point {point.index} has the status {point.status!r}")
    for key in ("params", "macs"):
        if not _is_number(getattr(point, key), allow_none=True):
            raise ValueError(f"point {point.index}'s '{key}' is {getattr(point, key)!r}, "
                             f"not a number")


def _read_trials(folder: Path, names: list[str]) -> list[Trial]:
    """The trials of trials.jsonl; none when no point was trained (no such file)."""
    path = folder / TRIALS
    if not path.exists():
        return []
    try:
        text = files.read_text(path, files.MAX_TEXT_BYTES)
    except files.FileProblem as problem:
        raise _unusable(folder, f"cannot read {TRIALS}: {problem}") from None
    trials = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                trials.append(Trial.from_row(json.loads(line), names))
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise _unusable(folder, f"{TRIALS} line {number} is not a trial "
                                        f"({_why(error)})") from None
    return trials


def _why(error: Exception) -> str:
    """What was wrong with a line, in words: the message of this module's checks (ValueError)
    and json's; a generic one for JSON of another shape (Python's would read 'list indices
    must be integers')."""
    if isinstance(error, KeyError):
        return f"no key {error}"
    if isinstance(error, json.JSONDecodeError):
        return f"not JSON: {error.msg}"
    if isinstance(error, (TypeError, AttributeError)):
        return "a line is not a JSON object of the expected fields"
    return str(error)


def _is_number(value, allow_none: bool = False) -> bool:
    if value is None:
        return allow_none
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- the numbers ----------------------------------------------------------------------------------


def pareto_front(pairs: Sequence[tuple[float, float]]) -> list[int]:
    """The indices of the non-dominated (cost, error) pairs, cheapest first. A pair is dominated
    when another costs no more and errs no more, and one of the two strictly less; equal pairs
    do not dominate each other, so all of them stay."""
    order = sorted(range(len(pairs)), key=lambda index: pairs[index])
    front: list[int] = []
    for index in order:
        # Sorted by cost, then error: a pair is on the front when it errs less than every
        # cheaper pair (whose least error is the last front pair's), or repeats that pair.
        if not front or pairs[index][1] < pairs[front[-1]][1] or pairs[index] == pairs[front[-1]]:
            front.append(index)
    return front


def front_trials(trials: Sequence[Trial]) -> list[Trial]:
    """The Pareto front of the scored trials that have multiply-adds, cheapest first."""
    costed = [trial for trial in trials if trial.scored and trial.macs is not None]
    return [costed[index] for index in pareto_front([(t.macs, t.error) for t in costed])]


def edf(values: Sequence[float], level: float) -> float:
    """RegNet's empirical distribution function: the fraction of `values` below `level`
    (0 for no values)."""
    return sum(value < level for value in values) / len(values) if values else 0.0


def edf_levels(errors: Sequence[float], offsets: Sequence[float] = EDF_OFFSETS) -> list[float]:
    """The error levels a summary reads the EDF at: the best error plus each offset."""
    return [min(errors) + offset for offset in offsets] if errors else []


class Spread(NamedTuple):
    low: float
    median: float
    high: float


def spread(values: Sequence[float]) -> Spread | None:
    return Spread(min(values), statistics.median(values), max(values)) if values else None


# -- explore show ---------------------------------------------------------------------------------


@dataclass
class Summary:
    """What `explore show` says of a study."""

    study: Study
    statuses: dict[str, int]         # ok, over budget, rejected: how many points
    rejected: dict[str, int]         # rejected points by error code, the most frequent first
    examples: dict[str, str]         # a message for each code
    params: Spread | None            # of the built points
    macs: Spread | None
    states: dict[str, int]           # trials by state
    front: list[Trial]
    best: Trial | None
    levels: list[tuple[float, float]]  # (error level, F(level))
    figures: list[Path] = field(default_factory=list)


def summarize(study: Study) -> Summary:
    statuses = Counter(point.status for point in study.points)
    rejected = [point for point in study.points if point.status == REJECTED]
    codes = Counter(point.error or "?" for point in rejected)
    examples = {}
    for point in rejected:
        examples.setdefault(point.error or "?", point.message or "")
    built, errors = study.built, study.errors
    scored = study.scored
    return Summary(
        study=study, statuses={status: statuses[status] for status in (OK, OVER_BUDGET, REJECTED)},
        rejected=dict(codes.most_common()), examples=examples,
        params=spread([p.params for p in built]), macs=spread([p.macs for p in built]),
        states=dict(Counter(trial.state for trial in study.trials).most_common()),
        front=front_trials(study.trials),
        best=min(scored, key=lambda t: (t.error, t.macs or 0, t.number)) if scored else None,
        levels=[(level, edf(errors, level)) for level in edf_levels(errors)])


def show(folder: str | Path, out: str | Path | None = None, *, plot: bool = True,
         formats: Sequence[str] = ("png",)) -> Summary:
    """The summary of the study in `folder`, and with `plot` its figures written to `out` (the
    study folder when None): histograms of the space, error against multiply-adds and the EDF
    of error (the last two when some trial is complete). SK562 for a folder that is no study,
    SK564 for `plot` without matplotlib, SK504 when a figure cannot be written."""
    study = load_study(folder)
    summary = summarize(study)
    if plot:
        figures.require()
        target = _output_folder(study.folder if out is None else Path(out),
                                SHOW_FIGURES.values())
        summary.figures = write_figures(summary, target, formats)
    return summary


def write_figures(summary: Summary, folder: Path,
                  formats: Sequence[str] = ("png",)) -> list[Path]:
    """The figures of one study that it has data for, in `folder`; the paths written."""
    study, written = summary.study, []
    built = study.built
    written += figures.histograms(
        folder / SHOW_FIGURES["space"], [p.params for p in built], [p.macs for p in built],
        [p.status == OVER_BUDGET for p in built], rejected=summary.statuses[REJECTED],
        formats=formats)
    costed = [trial for trial in study.scored if trial.macs is not None]
    if costed:
        pairs = [(trial.macs, trial.error) for trial in costed]
        written += figures.error_against_macs(
            folder / SHOW_FIGURES["front"], [p[0] for p in pairs], [p[1] for p in pairs],
            pareto_front(pairs), formats=formats)
    if study.errors:
        written += figures.edf(folder / SHOW_FIGURES["edf"], {label(study): study.errors},
                               formats=formats)
    return written


def label(study: Study) -> str:
    """A study's name in tables and legends: its folder's."""
    return study.folder.resolve().name or str(study.folder)


def print_summary(console, summary: Summary) -> None:
    """The summary as tables that fit `console` (a rich Console)."""
    console.print(points_table(summary), crop=False)
    if summary.params is not None:
        console.print(counts_table(summary), crop=False)
    if not summary.study.trials:
        console.print(f"no trials: {TRIALS} is absent, no point was trained yet", crop=False)
    else:
        if summary.front:
            console.print(front_table(summary), crop=False)
        if summary.levels:
            console.print(edf_table(summary), crop=False)
        if not summary.study.scored:
            console.print(f"no complete trial yet ({_states_text(summary.states)})", crop=False)
    if summary.figures:
        console.print("figures: " + ", ".join(map(str, summary.figures)), crop=False)


def points_table(summary: Summary):
    from ..report.network import Column, FittedTable

    total = sum(summary.statuses.values())
    rows = [(status, count, "") for status, count in summary.statuses.items()]
    rows += [(f"  {code}", count, summary.examples.get(code, ""))
             for code, count in summary.rejected.items()]
    return FittedTable([
        Column("status", [row[0] for row in rows]),
        Column("points", [f"{row[1]:,}" for row in rows], justify="right"),
        Column("share", [_share(row[1], total) for row in rows], justify="right"),
        Column("for example", [row[2] for row in rows], wrap=True, drop_order=1),
    ], title=f"{label(summary.study)}: {total:,} points of the space",
        caption=["rejected: the point does not build, or breaks a `where`; by error code"]
        if summary.rejected else [])


def counts_table(summary: Summary):
    from ..report.network import Column, FittedTable

    built = len(summary.study.built)
    params, macs = summary.params, summary.macs
    return FittedTable([
        Column("count", ["params", "GMACs"]),
        *(Column(name, [millions(p, 2), giga(m, 3)], compact=[short_count(round(p)),
                                                                giga(m, 2)], justify="right")
          for name, p, m in zip(("min", "median", "max"), params, macs)),
    ], title=f"counts of the {built:,} built points (ok and over budget)",
        caption=["GMACs: multiply-adds × 10⁻⁹"])


def front_table(summary: Summary):
    from ..report.network import Column, FittedTable

    front, best = summary.front, summary.best
    scored = len(summary.study.scored)
    return FittedTable([
        Column("trial", [f"{t.number}{' *' if t is best else ''}" for t in front],
               justify="right"),
        Column("setting", [t.setting for t in front], wrap=True, drop_order=2),
        Column("params", [millions(t.params, 2) if t.params is not None else "" for t in front],
               justify="right", drop_order=1),
        Column("GMACs", [giga(t.macs, 3) for t in front], justify="right"),
        Column("error", [_error(t.error) for t in front], justify="right"),
    ], title=f"Pareto front: {len(front)} of {scored:,} complete trials",
        caption=_front_caption(summary))


def _front_caption(summary: Summary) -> list[str]:
    lines = ["the lowest error at each cost: no trial is both cheaper and better"]
    best = summary.best
    if best is not None:
        where = f", run {best.run}" if best.run else ""
        lines.append(f"* the best trial: {best.number} ({_error(best.error)}{where})")
    lines.append(f"trials: {_states_text(summary.states)}")
    return lines


def edf_table(summary: Summary):
    from ..report.network import Column, FittedTable

    scored = len(summary.study.scored)
    best = min(summary.study.errors)
    return FittedTable([
        Column("error below", [f"{_error(level)} (best + {level - best:g})"
                               for level, _ in summary.levels]),
        Column("F(e)", [f"{fraction:.2f}" for _, fraction in summary.levels], justify="right"),
        Column("trials", [f"{round(fraction * scored):,} of {scored:,}"
                          for _, fraction in summary.levels], justify="right"),
    ], title="EDF of error", caption=["F(e): the share of complete trials with error below e"])


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else ""


def _error(error: float | None) -> str:
    return "" if error is None else f"{error:.2f}%"


def _states_text(states: dict[str, int]) -> str:
    return ", ".join(f"{count:,} {state}" for state, count in states.items())


def _output_folder(folder: Path, names) -> Path:
    """`folder`, made if missing, after checking that `names` can be written in it; SK504."""
    try:
        files.check_output_folder(folder, names)
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SkdslError(f"cannot write into '{folder}': {error.strerror or error}",
                         code="SK504") from None
    return folder


# -- explore compare ------------------------------------------------------------------------------


@dataclass
class Row:
    """One study of a comparison: its trials' errors overall and inside the common cost range."""

    label: str
    study: Study
    errors: list[float]
    equal_cost: list[float]          # errors of the trials inside the common range
    fractions: list[float]           # F at the comparison's levels

    @property
    def best(self) -> float | None:
        return min(self.errors) if self.errors else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.errors) if self.errors else None


@dataclass
class Comparison:
    rows: list[Row]
    cost_range: tuple[int, int] | None  # multiply-adds every study's trials reach
    levels: list[float]
    files: list[Path] = field(default_factory=list)


def common_range(studies: Sequence[Study]) -> tuple[int, int] | None:
    """The multiply-adds from the highest cheapest trial to the lowest dearest one, over the
    studies with scored trials; None when those ranges do not overlap, or no study has any."""
    ranges = [(min(costs), max(costs)) for costs in
              ([t.macs for t in study.scored if t.macs is not None] for study in studies) if costs]
    if not ranges:
        return None
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return (low, high) if low <= high else None


def comparison(studies: Sequence[Study]) -> Comparison:
    """The studies side by side, read at the same error levels (the best error of all plus
    EDF_OFFSETS) and inside the same multiply-add range."""
    cost_range = common_range(studies)
    levels = edf_levels([error for study in studies for error in study.errors])
    rows = []
    for name, study in zip(labels(studies), studies):
        inside = [t.error for t in study.scored if cost_range and t.macs is not None
                  and cost_range[0] <= t.macs <= cost_range[1]]
        rows.append(Row(name, study, study.errors, inside,
                        [edf(study.errors, level) for level in levels]))
    return Comparison(rows, cost_range, levels)


def labels(studies: Sequence[Study]) -> list[str]:
    """Folder names; where two folders share a name, their paths as given; the same folder
    named twice, numbered."""
    names = [label(study) for study in studies]
    places = [study.folder.resolve() for study in studies]
    found = [str(study.folder) if names.count(name) > 1 and places.count(place) == 1 else name
             for name, place, study in zip(names, places, studies)]
    return [f"{name} #{found[:index].count(name) + 1}" if found.count(name) > 1 else name
            for index, name in enumerate(found)]


def compare(folders: Sequence[str | Path], out: str | Path, *, plot: bool = True,
            formats: Sequence[str] = ("png",)) -> Comparison:
    """Read every study (SK562 for one that is not), compare them, and write to `out` (made if
    missing) compare.csv and, with `plot`, the EDF of error of all studies on one plot
    (edf.png; when some trial is complete) and the EDF of the built points' multiply-adds
    (edf_macs.png). SK564 for `plot` without matplotlib, SK504 when a file cannot be written."""
    studies = [load_study(folder) for folder in folders]
    if plot:
        figures.require()
    result = comparison(studies)
    target = _output_folder(Path(out), COMPARE_FILES)
    if plot:
        result.files += write_comparison_figures(result, target, formats)
    table = target / "compare.csv"
    try:
        files.write_text(table, comparison_csv(result))
    except OSError as error:
        raise SkdslError(f"cannot write '{table}': {error.strerror or error}",
                         code="SK504") from None
    result.files.append(table)
    return result


def write_comparison_figures(result: Comparison, folder: Path,
                             formats: Sequence[str] = ("png",)) -> list[Path]:
    written = []
    if any(row.errors for row in result.rows):
        written += figures.edf(folder / "edf.png", {row.label: row.errors for row in result.rows},
                               formats=formats)
    written += figures.edf(folder / "edf_macs.png",
                           {row.label: [p.macs for p in row.study.built] for row in result.rows},
                           quantity="multiply-adds (G)", scale=1e9, formats=formats)
    return written


def comparison_csv(result: Comparison) -> str:
    """One line per study, exact numbers; F at each level as `F(<23.10)`."""
    levels = [f"F(<{level:.2f})" for level in result.levels]
    low, high = result.cost_range or ("", "")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["study", "folder", "points", "built", "complete_trials", "best_error",
                     "median_error", "equal_cost_low_macs", "equal_cost_high_macs",
                     "equal_cost_trials", "equal_cost_best_error", "equal_cost_median_error",
                     *levels])
    for row in result.rows:
        inside = spread(row.equal_cost)
        writer.writerow([row.label, str(row.study.folder), len(row.study.points),
                         len(row.study.built), len(row.errors), _blank(row.best),
                         _blank(row.median), low, high, len(row.equal_cost),
                         _blank(inside and inside.low), _blank(inside and inside.median),
                         *(f"{fraction:.4f}" for fraction in row.fractions)])
    return out.getvalue()


def _blank(value) -> object:
    return "" if value is None else value


def comparison_table(result: Comparison):
    from ..report.network import Column, FittedTable

    rows = result.rows
    inside = [spread(row.equal_cost) for row in rows]
    columns = [
        Column("study", [row.label for row in rows], wrap=True),
        Column("trials", [f"{len(row.errors):,}" for row in rows], justify="right"),
        Column("best", [_error(row.best) for row in rows], justify="right", drop_order=3),
        Column("median", [_error(row.median) for row in rows], justify="right", drop_order=2),
        Column("equal-cost\ntrials", [f"{len(row.equal_cost):,}" for row in rows],
               justify="right"),
        Column("equal-cost\nbest", [_error(s and s.low) for s in inside], justify="right"),
        Column("equal-cost\nmedian", [_error(s and s.median) for s in inside], justify="right"),
    ]
    columns += [Column(f"F(<{level:.2f}%)", [f"{row.fractions[index]:.2f}" for row in rows],
                       justify="right", drop_order=1)
                for index, level in enumerate(result.levels)]
    return FittedTable(columns, title=f"{len(rows)} design spaces compared",
                       caption=_comparison_caption(result))


def _comparison_caption(result: Comparison) -> list[str]:
    if result.cost_range is None:
        equal = "equal cost: the studies' trials share no multiply-add range"
    else:
        low, high = result.cost_range
        equal = (f"equal cost: the trials with {giga(low, 3)} to {giga(high, 3)} G "
                 f"multiply-adds, the range every study's trials reach")
    lines = ["trials, best, median: the complete trials and their top-1 error", equal]
    if result.levels:
        lines.append("F(<e): the fraction of a study's complete trials with error below e, at "
                     "the best error of all plus " + ", ".join(f"{o:g}" for o in EDF_OFFSETS))
    return lines


def print_comparison(console, result: Comparison) -> None:
    """The comparison as a table that fits `console` (a rich Console), then the files written."""
    console.print(comparison_table(result), crop=False)
    if result.files:
        console.print("written: " + ", ".join(map(str, result.files)), crop=False)


__all__ = ["Trial", "Study", "Summary", "Spread", "Row", "Comparison", "load_study",
           "summarize", "show", "write_figures", "print_summary", "pareto_front",
           "front_trials", "edf", "edf_levels", "spread", "common_range", "comparison",
           "compare", "comparison_csv", "print_comparison", "labels", "label"]
