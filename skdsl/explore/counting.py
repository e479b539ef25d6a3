"""Counting the points of a space: the inner loop of `skdsl explore`.

A `Counter` reads and parses its spec once. Each point is then expanded with the point's values
as the params' (blocks called with arguments seen before come from an `ExpansionCache`), lowered
(stage-level blocks lowered before, on an input of the same shape, come from `SharedUnits`, costs
and all) and counted. benchmarks/explore_speed.py measures it against `skdsl.analyze` of a freshly
loaded spec and against build + trace.
"""

from __future__ import annotations

from pathlib import Path

from ..base.errors import SkdslError, SpecError
from ..core.analysis import analyze
from ..core.graph import SharedUnits, lower_table
from ..core.latency import load_calibration, predict
from ..core.resources import inference_bytes
from ..core.space import Space
from ..lang.expand import ExpansionCache, expand, parse_file
from ..lang.space import read_space
from ..lang.zoo import resolve
from .points import OK, REJECTED, Point

# A constraint broken by a point: a rejected row with this code (docs/errors.md).
BROKEN_CONSTRAINT = "SK243"


class Counter:
    """The exact counts of any point of `spec`'s space (the spec's own domains, with
    `spaces`, NAME -> domain text from `--space`, added). `overrides` fix other params;
    `input_shape` replaces the spec's input."""

    def __init__(self, spec: str | Path, spaces: dict[str, str] | None = None,
                 overrides: dict | None = None, input_shape=None,
                 allow_imports_outside: bool = False, peak: bool = True,
                 calibration: str | Path | None = None):
        self.path = resolve(spec)
        self.source = parse_file(self.path)
        self.space: Space = read_space(self.source, spaces)
        self.overrides = dict(overrides or {})
        self.input_shape = input_shape
        self.allow_imports_outside = allow_imports_outside
        self.peak = peak
        # With a calibration (skdsl latency calibrate), each point's predicted latency too.
        self.calibration_path = str(calibration) if calibration is not None else None
        self.calibration = load_calibration(calibration) if calibration is not None else None
        self._expanded = ExpansionCache()
        self._lowered = SharedUnits()
        # Fail now, not at every point, when the fixed part of the spec is wrong.
        unknown = set(self.overrides) & set(self.space.names)
        if unknown:
            raise SkdslError(f"--set {sorted(unknown)[0]} fixes a parameter the space ranges "
                             "over", code="SK560", hint="leave it to the space, or drop its "
                                                        "--space")

    def count(self, values: dict, index: int = 0) -> Point:
        """The point `values` (NAME -> value for the space's names): counted, or rejected with
        the code of what is wrong with it. Never raises a SpecError."""
        point = Point(index, dict(values))
        try:
            broken = self.space.broken(values)
            if broken is not None:
                point.status, point.error = REJECTED, BROKEN_CONSTRAINT
                point.message = f"breaks `where {broken.text}`"
                return point
            network = expand(self.source, {**self.overrides, **values},
                             self.allow_imports_outside, self._expanded)
            analysis = analyze_shared(network, self.input_shape, self._lowered)
        except SpecError as error:
            point.status, point.error, point.message = REJECTED, error.code, error.message
            return point
        total = analysis.total
        point.params, point.macs, point.activations = (total.params, total.mult_adds,
                                                       total.activations)
        if self.peak:
            point.peak_bytes = inference_bytes(analysis.graph)
        if self.calibration is not None:
            point.latency_ms = predict(analysis.graph, self.calibration).milliseconds
        point.status = OK
        return point


def analyze_shared(network, input_shape, shared: SharedUnits):
    return analyze(lower_table(network, input_shape, shared=shared))
