"""Our exact counts for every row of the manifest, the checks against tables.md and the paper,
and what the counting conventions make of the paper's figures: every conclusion the page
states is computed here, from the numbers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from .manifest import Calc, Figure, Manifest, Row
from .prose import Lookup

COMPUTE_TOLERANCE = 0.005  # relative: ±0.5%, tables.md's ±0.02 G at 4 G


@dataclass
class Result:
    row: Row
    table: str  # the id of the row's table
    params: int | None = None
    macs: int | None = None
    bn_channels: int | None = None
    extras: dict[str, int] = field(default_factory=dict)  # op class -> extra multiply-adds
    calc_ok: bool | None = None     # None: no hand count
    others_ok: list[bool] = field(default_factory=list)  # one per row.others
    params_ok: bool | None = None   # None: no paper #P
    compute_ok: bool | None = None  # None: no paper GFLOPs

    @property
    def matches(self) -> bool | None:
        """Do our counts read as the paper's figures? None when the paper gives none."""
        checks = [ok for ok in (self.params_ok, self.compute_ok) if ok is not None]
        return all(checks) if checks else None

    @property
    def params_with_stats(self) -> int:
        """Caffe's #P: BN's running mean and variance kept as parameters, 2 per BN channel."""
        return self.params + 2 * self.bn_channels

    @property
    def compute_gap(self) -> float:
        """Ours relative to the paper's multiply-adds: -0.002 is 0.2% below."""
        return self.macs / self.row.paper.compute.units - 1


@dataclass(frozen=True)
class _Counts:
    params: int
    macs: int
    bn_channels: int
    extras: dict[str, int]


def evaluate(manifest: Manifest) -> dict[str, Result]:
    """Our counts and checks for every row, by row id (one analysis per spec and overrides)."""
    cache: dict[tuple, _Counts] = {}
    results = {}
    for table, row in manifest.rows:
        result = Result(row, table.id)
        if row.spec is not None:
            key = _network_key(row)
            if key not in cache:
                cache[key] = _count(manifest, row)
            counts = cache[key]
            result.params, result.macs = counts.params, counts.macs
            result.bn_channels, result.extras = counts.bn_channels, counts.extras
            result.calc_ok = _calc_ok(row.calc, result)
            result.others_ok = [_calc_ok(other, result) for other in row.others]
            if row.paper.params is not None:
                result.params_ok = row.paper.params.rounds(result.params)
            if row.paper.compute is not None:
                result.compute_ok = abs(result.compute_gap) <= COMPUTE_TOLERANCE
        results[row.id] = result
    return results


def _network_key(row: Row) -> tuple:
    return row.spec, tuple(sorted(row.overrides.items()))


def _count(manifest: Manifest, row: Row) -> _Counts:
    from ...core.analysis import EXTRA_COUNTS, analyze
    from ...core.graph import lower_table
    from ...lang.loading import load

    spec = load(manifest.root / row.spec, overrides=row.overrides or None)
    graph = lower_table(spec)
    base = analyze(graph)
    # A BN tied to another (a shared layer) has no statistics of its own.
    bn_channels = sum(data["channels"] for data in graph.nodes.values()
                      if data["op"] == "batchnorm" and not data.get("tied_to"))
    extras = {name: analyze(graph, count=(name,)).mult_adds - base.mult_adds
              for name in EXTRA_COUNTS}
    return _Counts(base.params, base.mult_adds, bn_channels, extras)


def _calc_ok(calc: Calc, result: Result) -> bool | None:
    checks = []
    for expected, ours in ((calc.params, result.params), (calc.macs, result.macs)):
        if expected is None:
            continue
        checks.append(expected == ours if isinstance(expected, int) else expected.rounds(ours))
    return all(checks) if checks else None


def consistency_problems(results: dict[str, Result]) -> list[str]:
    """What makes the tables wrong rather than merely different from the paper."""
    problems = []
    for result in results.values():
        row = result.row
        if result.calc_ok is False:
            problems.append(f"{result.table} {row.id}: ours ({result.params:,} params, "
                            f"{result.macs:,} multiply-adds) differs from tables.md's hand count")
        for other, ok in zip(row.others, result.others_ok):
            if not ok:
                problems.append(f"{result.table} {row.id}: ours ({result.params:,} params, "
                                f"{result.macs:,} multiply-adds) differs from {other.source}'s "
                                f"count")
        if result.matches is False and not row.reason:
            problems.append(f"{result.table} {row.id}: differs from the paper's figures and the "
                            f"manifest gives no reason")
    return problems


def lookup(results: dict[str, Result]) -> Lookup:
    """The values of the prose's `{ROW.QUANTITY}` fields (prose.QUANTITIES)."""
    def value(row_id: str, quantity: str) -> float:
        result = results[row_id]
        if quantity == "paper_params":
            return result.row.paper.params.units
        if quantity == "paper_macs":
            return result.row.paper.compute.units
        return getattr(result, quantity)
    return value


def distinct(manifest: Manifest, results: dict[str, Result], figure: str) -> Iterator[Result]:
    """The results of the rows with a spec and that paper figure ('params' or 'compute'), each
    network and figure once."""
    seen = set()
    for _, row in manifest.rows:
        paper_figure = getattr(row.paper, figure)
        if row.spec is None or paper_figure is None:
            continue
        key = (*_network_key(row), paper_figure.text)
        if key not in seen:
            seen.add(key)
            yield results[row.id]


# -- counting conventions ------------------------------------------------------------------------


@dataclass(frozen=True)
class ComputeConventions:
    """One paper multiply-add figure against ours under every combination of `--count` classes."""

    result: Result

    @property
    def figure(self) -> Figure:
        return self.result.row.paper.compute

    @property
    def window(self) -> float:
        """Half a unit of the figure's last digit, in multiply-adds: the rounding window."""
        return 0.5 * 10 ** -self.figure.decimals * self.figure.scale

    def value(self, classes: tuple[str, ...]) -> int:
        return self.result.macs + sum(self.result.extras[name] for name in classes)

    def fits(self, classes: tuple[str, ...]) -> bool:
        return abs(self.value(classes) - self.figure.units) <= self.window

    @cached_property
    def present(self) -> list[str]:
        """The classes the network has: one that adds nothing is no convention of its own."""
        return [name for name, extra in self.result.extras.items() if extra]

    def closest(self, candidates: list[tuple[str, ...]]) -> tuple[str, ...]:
        """The candidate (or conv + fc, ()) nearest the paper; the fewer classes on a tie."""
        return min([(), *candidates],
                   key=lambda s: (abs(self.value(s) - self.figure.units), len(s), s))

    def closest_single(self) -> tuple[str, ...]:
        return self.closest([(name,) for name in self.present])

    def closest_combination(self) -> tuple[str, ...]:
        return self.closest(subsets(self.present))


def subsets(names: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty combination of `names`, the smaller first."""
    return [combo for size in range(1, len(names) + 1)
            for combo in itertools.combinations(names, size)]


def convention_fits(rows: list[ComputeConventions], names: list[str]) -> dict[tuple, int]:
    """How many rows each combination of classes (conv + fc: ()) fits."""
    return {classes: sum(row.fits(classes) for row in rows) for classes in [(), *subsets(names)]}


def best_conventions(fits: dict[tuple, int], count: int = 5) -> list[tuple[tuple, int]]:
    """The combinations that fit the most rows, leaving out a superset that fits no more rows
    than a listed subset (it adds nothing to say)."""
    ranked = sorted(fits.items(), key=lambda item: (-item[1], len(item[0]), item[0]))
    listed: list[tuple[tuple, int]] = []
    for classes, hits in ranked:
        if any(set(other) <= set(classes) and hits <= other_hits for other, other_hits in listed):
            continue
        listed.append((classes, hits))
        if len(listed) == count:
            break
    return listed
