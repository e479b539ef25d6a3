"""`--where "params <= 25M and macs <= 4.5G"`: which counted points a study keeps.

A budget is a condition of the spec language (comparisons joined by and, or, not; numbers with
k, M, G) over a point's counts: `params`, `macs` (multiply-adds), `flops` (2 × macs),
`activations`, `peak` (bytes of an inference pass at batch 1, weights included) and `latency`
(milliseconds, `20ms` or `20`, predicted from a calibration: `--calibration FILE`). A mistake is located in the flag (SK561).
"""

from __future__ import annotations

import re

from ..base.errors import Span, SpecError, did_you_mean
from ..lang.expand import Value, condition_holds
from ..lang.parser import parse_flag
from ..lang import syntax as A
from .points import Point

FLAG = "--where"
EXAMPLE = 'such as: --where "params <= 25M and macs <= 4.5G"'
# A budget's names, and what each reads of a counted point.
MEASURES = {
    "params": lambda point: point.params,
    "macs": lambda point: point.macs,
    "flops": lambda point: 2 * point.macs,
    "activations": lambda point: point.activations,
    "peak": lambda point: point.peak_bytes,
    "latency": lambda point: point.latency_ms,
}


_MILLISECONDS = re.compile(r"(?<=\d)ms\b")


def _without_ms(text: str) -> str:
    """`latency <= 20ms` as `latency <= 20  ` (latency is in ms): columns kept for messages."""
    return _MILLISECONDS.sub("  ", text)


def measured_by(counter) -> tuple[str, ...]:
    """What a budget may read of a counter's points: latency only with a calibration."""
    return tuple(name for name in MEASURES
                 if name != "latency" or getattr(counter, "calibration", None) is not None)


class Budget:
    """`admits(point)`: whether a counted point is inside the budget `text`."""

    def __init__(self, text: str, counted=tuple(name for name in MEASURES if name != "latency")):
        self.text = text
        try:
            self.condition = parse_flag(_without_ms(text), FLAG, "budget_flag")
        except SpecError as error:
            raise _as_budget_error(error) from None
        names = _names(self.condition)
        self.names = sorted(names)
        for name, span in names.items():
            if name not in MEASURES:
                raise SpecError(f"a budget reads {', '.join(MEASURES)}, not '{name}'", span,
                                code="SK561", hint=did_you_mean(name, MEASURES) or EXAMPLE)
            if name not in counted:
                raise SpecError(f"this study does not count {name}", span, code="SK561",
                                hint="give a latency model with --calibration FILE (made by "
                                     "`skdsl latency calibrate`)" if name == "latency" else None)
        if not _compares(self.condition):
            raise SpecError("a budget compares a count with a limit", self.condition.span,
                            code="SK561", hint=EXAMPLE)
        # Evaluate once on a made-up point: a condition that is no comparison fails here.
        self.admits(Point(0, {}, params=1, macs=1, activations=1, peak_bytes=1, latency_ms=1.0))

    def admits(self, point: Point) -> bool:
        env = {}
        for name in self.names:
            value = MEASURES[name](point)
            if value is None:
                raise SpecError(f"--where reads {name}, which this point has not counted",
                                code="SK561")
            env[name] = Value(value, Span(FLAG, 1, 1, 1, 1))
        try:
            return condition_holds(self.condition, env)
        except SpecError as error:
            raise _as_budget_error(error) from None


def _compares(condition) -> bool:
    if isinstance(condition, A.Logic):
        return _compares(condition.left) and (condition.right is None
                                              or _compares(condition.right))
    return isinstance(condition, A.Compare)


def _names(condition) -> dict[str, Span]:
    """The bare names a condition reads (its measures), with where each is first written."""
    found, pending = {}, [condition]
    while pending:
        node = pending.pop()
        if isinstance(node, A.Name):
            found.setdefault(node.id, node.span)
        for part in ("left", "right", "args"):
            child = getattr(node, part, None)
            if isinstance(child, tuple):
                pending.extend(child)
            elif child is not None:
                pending.append(child)
    return found


def _as_budget_error(error: SpecError) -> SpecError:
    """A parse or evaluation mistake of the budget, under the budget's code."""
    return SpecError(error.message, error.span, code="SK561",
                     hint=error.hint or EXAMPLE)
