"""`skdsl explore SPEC --sample N --out DIR`: draw N points, count each, keep those in budget.

DIR/points.csv and DIR/points.jsonl hold the points (points.py); DIR/explore.json what made
them (spec, space, sampler, seed, budget), so that `--resume` and `explore show` know.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..base import files
from ..base.errors import SkdslError
from .budget import Budget
from .counting import Counter
from .points import OK, OVER_BUDGET, REJECTED, Point, read_points, write_points
from .sampling import draw

SETTINGS = "explore.json"
OUTPUTS = ("points.csv", "points.jsonl", SETTINGS)


@dataclass
class Exploration:
    """What a run of the space made: its points, where they are, and how long it took."""

    folder: Path
    names: list[str]
    points: list[Point]
    settings: dict
    seconds: float = 0.0  # counting the points
    drawing: float = 0.0  # drawing them (the sampler)
    resumed: bool = False
    statuses: dict = field(default_factory=dict)

    def kept(self) -> list[Point]:
        return [point for point in self.points if point.status == OK]


def explore_space(counter: Counter, folder: str | Path, count: int, *, sampler: str = "random",
                  seed: int = 0, budget: Budget | None = None, resume: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> Exploration:
    """Draw `count` points of `counter`'s space with `sampler`, count each exactly, mark those
    outside `budget`, and write the table to `folder`. With `resume`, a folder that holds the
    points of the same settings is read back instead of counted again; without it, a folder
    that holds points is SK562."""
    if not counter.space:
        raise SkdslError(f"{counter.path} declares no design space", code="SK560",
                         hint="give its params domains in the spec (param G = 32 in {16, 32, "
                              "64}) or on the command line (--space G={16,32,64})")
    folder = _folder(folder)
    settings = {"spec": str(counter.path), "space": _space_text(counter), "sample": count,
                "sampler": sampler, "seed": seed, "where": budget.text if budget else None,
                "overrides": counter.overrides}
    previous = _previous(folder)
    if previous is not None:
        if not resume:
            raise SkdslError(f"{folder} holds the points of an earlier explore", code="SK562",
                             hint="add --resume to go on with it, or give another --out")
        if previous != settings:
            changed = sorted(k for k in settings if settings[k] != previous.get(k))
            raise SkdslError(f"--resume: {folder} was explored with other settings "
                             f"({', '.join(changed)})", code="SK562",
                             hint="rerun with the same settings, or give another --out")
        names, points = read_points(folder)
        return Exploration(folder, names, points, settings, resumed=True,
                           statuses=_statuses(points))
    start = time.perf_counter()
    drawn = draw(counter.space, count, sampler, seed)
    drawing, start = time.perf_counter() - start, time.perf_counter()
    points = []
    for index, values in enumerate(drawn):
        point = counter.count(values, index)
        if point.status == OK and budget is not None and not budget.admits(point):
            point.status = OVER_BUDGET
        points.append(point)
        if progress is not None:
            progress(index + 1, len(drawn))
    seconds = time.perf_counter() - start
    names = list(counter.space.names)
    folder.mkdir(parents=True, exist_ok=True)
    write_points(folder, points, names)
    files.write_text(folder / SETTINGS, json.dumps(settings, indent=2) + "\n")
    return Exploration(folder, names, points, settings, seconds, drawing,
                       statuses=_statuses(points))


def _folder(folder: str | Path) -> Path:
    try:
        return files.check_output_folder(folder, OUTPUTS)
    except files.FileProblem as problem:
        raise SkdslError(f"--out {folder}: {problem.reason}", code="SK504") from None


def _previous(folder: Path) -> dict | None:
    path = folder / SETTINGS
    if not path.exists():
        return None if not (folder / "points.jsonl").exists() else {}
    try:
        return json.loads(files.read_text(path, 1_000_000))
    except (OSError, ValueError) as error:
        raise SkdslError(f"{path} cannot be read: {error}", code="SK562",
                         hint="give another --out") from None


def _space_text(counter: Counter) -> dict:
    return {d.name: d.domain.text() for d in counter.space.dimensions} | {
        "where": [c.text for c in counter.space.constraints]}


def _statuses(points: list[Point]) -> dict:
    counts = {OK: 0, OVER_BUDGET: 0, REJECTED: 0}
    for point in points:
        counts[point.status] += 1
    return counts
