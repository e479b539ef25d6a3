"""A spec's design space: its params' domains (`param G = 32 in {16, 32, 64}`), the domains
given on the command line (`--space G={16, 32}`), and its `where` constraints -> core.space.Space.

Every mistake is located: a domain that cannot be sampled (an empty range, a step of 0, a log
range that reaches 0, a choice of numbers and words) is SK240, a default outside its domain or
breaking a constraint SK241, constraints no point meets SK242, a `--space` for a parameter the
spec does not declare SK560. A point that breaks a constraint is SK243 (explore keeps it as a
rejected row). Domain bounds are constants: what one param may be never depends on another
(write that as a `where`), so that every sampler sees a fixed box.
"""

from __future__ import annotations

import math
import random

from ..base.errors import SpecError, did_you_mean, source_line
from ..core.space import Choice, Constraint, Dimension, IntRange, Space
from . import syntax as A
from .expand import (Symbol, Value, condition_holds, file_params, matching_choice, read_choice,
                     read_range, value_text)
from .parser import parse_flag

# The columns of explore's table of points (explore/points.py), which a ranging param may not be
# called: its value would share a column with them.
RESERVED = ("index", "status", "error", "message", "params", "macs", "activations",
            "peak_bytes", "latency_ms")

# The most points the constraints are checked on, one by one, before a space is called empty:
# every point of a space this small, else this many random draws.
SATISFIABLE_CHECKS = 20_000


def read_space(source: A.SourceFile, flags: dict[str, str] | None = None) -> Space:
    """The space `source` declares, with `flags` (NAME -> domain text, from `--space`) added or
    replacing a declared domain; SpecError on any mistake."""
    defaults = file_params(source, {})
    declared = {param.name: param for param in source.params}
    written: dict[str, A.Domain] = {p.name: p.domain for p in source.params if p.domain}
    for name, text in (flags or {}).items():
        if name not in declared:
            raise SpecError(f"--space {name}: this spec declares no parameter '{name}'",
                            code="SK560", hint=did_you_mean(name, declared) or (
                                f"its parameters are: {', '.join(declared)}" if declared
                                else "declare one in the spec: param NAME = VALUE"))
        written[name] = parse_flag(text, f"--space {name}", "space_flag")
    for name in written:
        if name in RESERVED:
            raise SpecError(f"a param that ranges may not be called '{name}': explore's table "
                            "has a column of that name", declared[name].name_span,
                            code="SK240", hint="rename the param")
    dimensions = tuple(_dimension(declared[name], defaults[name], written[name],
                                  inside=name not in (flags or {}))
                       for name in declared if name in written)
    constraints = tuple(_constraint(source, where) for where in source.wheres)
    space = Space(dimensions, constraints)
    default_is_a_point = all(d.default in d.domain for d in dimensions)
    for where, constraint in zip(source.wheres, constraints):
        if default_is_a_point and not condition_holds(where.condition, defaults):
            raise SpecError(f"the defaults break `where {constraint.text}`", where.span,
                            code="SK241", hint="every command but explore builds the defaults: "
                            "change a default, or the constraint")
    _check_satisfiable(space, source.wheres)
    return space


def check_space(source: A.SourceFile) -> None:
    """Every command reads a spec's space: a bad domain is an error wherever the spec is
    loaded, not only in `explore`. Cached per tree, as the parse is."""
    if (source.wheres or any(param.domain for param in source.params)) and \
            id(source) not in _CHECKED:
        read_space(source)
        if len(_CHECKED) >= 256:  # as many trees as the parse cache keeps, and then some
            _CHECKED.clear()
        _CHECKED[id(source)] = source  # kept alive, so that its id is never another tree's


_CHECKED: dict[int, A.SourceFile] = {}


# -- domains ---------------------------------------------------------------------------------


def _dimension(param: A.ParamDecl, default: Value, domain: A.Domain,
               inside: bool) -> Dimension:
    """`inside`: the default must lie in the domain (one the spec declares: it says where the
    network it builds sits; a `--space` may look elsewhere)."""
    made = read_choice(domain) if domain.kind == "choice" else read_range(domain, default)
    value = default.value
    plain = str(value) if isinstance(value, Symbol) else value
    if isinstance(made, Choice):
        made = matching_choice(made, plain, domain)
    if inside and plain not in made:
        raise SpecError(f"the default {param.name} = {value_text(plain)} is not in its domain "
                        f"{made.text()}", param.value.span if hasattr(param.value, "span")
                        else param.span, code="SK241",
                        hint="the default is the network every other command builds: put it "
                             "inside the domain")
    return Dimension(param.name, plain, made, domain.span)


# -- constraints -----------------------------------------------------------------------------


def _constraint(source: A.SourceFile, where: A.WhereDecl) -> Constraint:
    condition = where.condition
    text = _source_text(where)

    def holds(values: dict) -> bool:
        return condition_holds(condition, file_params(source, values))

    return Constraint(text, where.span, holds)


def _source_text(where: A.WhereDecl) -> str:
    """The condition as written, its lines joined where a backslash continued them."""
    span = where.condition.span
    parts = []
    for number in range(span.line, span.end_line + 1):
        line = source_line(span.file, number) or ""
        start = span.column - 1 if number == span.line else 0
        end = span.end_column - 1 if number == span.end_line else len(line)
        parts.append(line[start:end].rstrip().removesuffix("\\").strip())
    return " ".join(part for part in parts if part)


def _check_satisfiable(space: Space, wheres: list[A.WhereDecl]) -> None:
    if not space.constraints or not space.dimensions:
        return
    points = list(_some_points(space))
    for where, constraint in zip(wheres, space.constraints):
        if not any(_meets((constraint,), point) for point in points):
            raise SpecError(f"no point of the space meets `where {constraint.text}`",
                            where.span, code="SK242", hint=_checked(space, len(points)))
    if not any(_meets(space.constraints, point) for point in points):
        raise SpecError("no point of the space meets all its `where` constraints together",
                        wheres[0].span, code="SK242", hint=_checked(space, len(points)))


def _some_points(space: Space):
    if space.size() <= SATISFIABLE_CHECKS:
        yield from space.grid()
        return
    rng = random.Random(0)
    for _ in range(SATISFIABLE_CHECKS):
        yield {d.name: _draw(d.domain, rng) for d in space.dimensions}


def _checked(space: Space, count: int) -> str:
    how = "all" if space.size() <= SATISFIABLE_CHECKS else "random draws of the"
    return (f"checked on {how} {count:,} points of the domains; widen a domain or loosen the "
            "constraint")


def _meets(constraints, point: dict) -> bool:
    try:
        return all(constraint.holds(point) for constraint in constraints)
    except SpecError:  # cannot be evaluated there (a division by 0): not met
        return False


def _draw(domain, rng: random.Random):
    if isinstance(domain, Choice):
        return rng.choice(domain.values)
    if isinstance(domain, IntRange):
        if domain.log:
            return min(domain.high, int(math.exp(rng.uniform(math.log(domain.low),
                                                             math.log(domain.high + 1)))))
        return domain.low + domain.step * rng.randrange(domain.size())
    if domain.step is not None:
        return domain.finite()[rng.randrange(int(domain.size()))]
    if domain.log:
        return math.exp(rng.uniform(math.log(domain.low), math.log(domain.high)))
    return rng.uniform(domain.low, domain.high)


# -- a point, written out as a plain spec ----------------------------------------------------


def plain_text(text: str, source: A.SourceFile, values: dict) -> str:
    """The spec `text` (whose tree is `source`) with each param in `values` declared as that
    value and no domain, and its `where` lines gone: the one network of that point, which
    every command reads as any other spec."""
    lines = text.split("\n")
    declared = {param.name: param for param in source.params}
    for name, value in values.items():
        span = declared[name].span
        last = span.end_line - 1 if span.end_column == 1 else span.end_line
        lines[span.line - 1] = f"param {name} = {value_text(value, bare=True)}"
        for number in range(span.line + 1, last + 1):
            lines[number - 1] = ""
    for where in source.wheres:
        for number in range(where.span.line, where.condition.span.end_line + 1):
            lines[number - 1] = ""
    return "\n".join(lines)
