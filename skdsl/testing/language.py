"""Strategies for the language's expressions and control (docs/language.md, "Values and
expressions" and "Conditions"): each draws a piece of .sk text with the value a reader computes
for it by hand, so a test holds the expander to that value.

    width_expressions()   (text, width): a width written with int, round, make_divisible, //
    conditions()          (text, names, truth): a condition over integer names, and its truth
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

MULTIPLIERS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.4, 1.5, 2.0)  # timm's and MobileNet's


def width_expressions() -> "SearchStrategy[tuple[str, int]]":
    """(text, width): `int(64 * 0.75)`, `round(...)`, `make_divisible(..., 8)` or `(...) // d`,
    each with the width it gives (computed here independently of skdsl.lang.expand)."""
    from hypothesis import strategies as st

    @st.composite
    def draw_one(draw):
        base, multiplier = draw(st.integers(8, 512)), draw(st.sampled_from(MULTIPLIERS))
        value = base * multiplier
        kind = draw(st.sampled_from(("int", "round", "make_divisible", "floor_divide")))
        if kind == "int":
            return f"int({base} * {multiplier})", int(value)
        if kind == "round":
            return f"round({base} * {multiplier})", round(value)  # the same float product
        divisor = draw(st.sampled_from((1, 2, 4, 8, 16)))
        if kind == "floor_divide":
            text = f"{base} // {divisor} * {divisor} + {divisor}"
            return text, base // divisor * divisor + divisor
        rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
        return (f"make_divisible({base} * {multiplier}, {divisor})",
                rounded + divisor if rounded < 0.9 * value else rounded)

    return draw_one()


def conditions(names: tuple[str, ...] = ("a", "b")) -> "SearchStrategy[tuple[str, dict, bool]]":
    """(text, values, truth): comparisons of integer `names` and literals joined by and, or and
    not, with the values of the names and the truth Python gives the same text."""
    from hypothesis import strategies as st

    operand = st.one_of(st.sampled_from(names), st.integers(0, 6).map(str))  # no unary minus
    comparison = st.tuples(operand, st.sampled_from(("==", "!=", "<", "<=", ">", ">=")),
                           operand).map(" ".join)
    negated = st.tuples(st.booleans(), comparison).map(
        lambda drawn: f"not {drawn[1]}" if drawn[0] else drawn[1])
    joined = st.lists(negated, min_size=1, max_size=4).flatmap(
        lambda parts: st.lists(st.sampled_from((" and ", " or ")), min_size=len(parts) - 1,
                               max_size=len(parts) - 1).map(
            lambda joins: parts[0] + "".join(j + p for j, p in zip(joins, parts[1:]))))
    values = st.fixed_dictionaries({name: st.integers(0, 6) for name in names})
    return st.tuples(joined, values).map(
        lambda drawn: (drawn[0], drawn[1], bool(eval(drawn[0], {"__builtins__": {}}, drawn[1]))))


__all__ = ["width_expressions", "conditions", "MULTIPLIERS"]
