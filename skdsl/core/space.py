"""Design spaces: where a spec's parameters may range (`param G = 32 in {16, 32, 64}`).

A `Space` is the typed result of reading a spec's domains and `where` constraints (lang/space.py);
explore/ samples it. The domains are plain values, valid when made (lang/space.py checks them and
reports a located error), so that a sampler can trust them: a non-empty choice, a range whose
bounds, step and log scale admit at least one value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

from ..base.errors import Span

Scalar = Union[int, float, str]


@dataclass(frozen=True)
class Choice:
    """`{16, 32, 64}`: one of the listed values (ints, floats or strings; one kind)."""

    values: tuple[Scalar, ...]

    def __contains__(self, value) -> bool:
        return value in self.values

    def finite(self) -> tuple[Scalar, ...]:
        return self.values

    def size(self) -> int:
        return len(self.values)

    def text(self) -> str:
        return "{" + ", ".join(_literal(v) for v in self.values) + "}"


@dataclass(frozen=True)
class IntRange:
    """`32..256 step 16` (both ends included) or `log 8..256` (log-uniform, step 1)."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def __contains__(self, value) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool)
                and self.low <= value <= self.high and (value - self.low) % self.step == 0)

    def finite(self) -> range:
        return range(self.low, self.high + 1, self.step)

    def size(self) -> int:
        return (self.high - self.low) // self.step + 1

    def text(self) -> str:
        return (("log " if self.log else "") + f"{self.low}..{self.high}"
                + (f" step {self.step}" if self.step != 1 else ""))


@dataclass(frozen=True)
class FloatRange:
    """`0.5..2.0` (uniform), `0.5..2.0 step 0.25` or `log 1e-3..1e-1` (log-uniform)."""

    low: float
    high: float
    step: float | None = None
    log: bool = False

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        steps = (value - self.low) / self.step
        return math.isclose(steps, round(steps), abs_tol=1e-9)

    def finite(self) -> tuple[float, ...] | None:
        """The values of a stepped range; None: infinitely many (a grid cannot walk it)."""
        if self.step is None:
            return None if self.low != self.high else (self.low,)
        count = int(round((self.high - self.low) / self.step)) + 1
        # Each value rounded to the step's decimals, and the last one the high end itself:
        # 0.1 + 3 × 0.2 is 0.7000000000000001, outside 0.1..0.7.
        digits = max(0, -math.floor(math.log10(self.step)) + 9)
        values = [round(self.low + i * self.step, digits) for i in range(count)]
        values[-1] = self.high
        return tuple(min(value, self.high) for value in values)

    def size(self) -> float | int:
        values = self.finite()
        return math.inf if values is None else len(values)

    def text(self) -> str:
        return (("log " if self.log else "") + f"{self.low!r}..{self.high!r}"
                + (f" step {self.step!r}" if self.step is not None else ""))


Domain = Union[Choice, IntRange, FloatRange]


@dataclass(frozen=True)
class Dimension:
    """One parameter of a space: its name, its default (the network every other command
    builds), its domain, and where the domain was written."""

    name: str
    default: Scalar
    domain: Domain
    span: Span | None = None


@dataclass(frozen=True)
class Constraint:
    """`where G divides w`: a condition every sampled point must meet. `holds(values)` is True
    or False, or raises SpecError when the condition cannot be evaluated at that point."""

    text: str
    span: Span | None
    holds: Callable[[dict], bool] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Space:
    """The dimensions a spec ranges over (in the order declared) and its constraints."""

    dimensions: tuple[Dimension, ...] = ()
    constraints: tuple[Constraint, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def __bool__(self) -> bool:
        return bool(self.dimensions)

    def size(self) -> float | int:
        """How many points the domains make before the constraints (inf for a float range)."""
        total = 1
        for dimension in self.dimensions:
            total *= dimension.domain.size()
        return total

    def broken(self, values: dict) -> Constraint | None:
        """The first constraint `values` does not meet, or None."""
        for constraint in self.constraints:
            if not constraint.holds(values):
                return constraint
        return None

    def grid(self) -> Iterator[dict]:
        """Every point of a finite space, in declaration order (the last name varies fastest)."""
        import itertools

        axes = [d.domain.finite() for d in self.dimensions]
        if any(axis is None for axis in axes):
            raise ValueError("a grid needs finite domains")
        for combination in itertools.product(*axes):
            yield dict(zip(self.names, combination))


def _literal(value: Scalar) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)
