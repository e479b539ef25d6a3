"""The manifest's prose with our numbers in it, so that no sentence can quote a stale count.

A caption, note or reason may hold `{EXPRESSION:FORMAT}` fields. EXPRESSION is arithmetic
(+ − * /, parentheses, numbers) on `ROW.QUANTITY`, ROW a row id and QUANTITY one of QUANTITIES:
`{resnext101_bam.params - resnext101.params}` is what BAM adds. FORMAT is Python's (`,`, `+,`,
`+.1%`, `.2f`) or `.NM`, `.NG`, `.Nk` (+ allowed): the value in millions, billions or
thousands, N decimals rounded half up, and the unit (`{senet50.params:.1M}` -> 27.6M). An integer
without a format prints with thousands separators. `{{` and `}}` are literal braces.
"""

from __future__ import annotations

import ast
import operator
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from pydantic_core import PydanticCustomError

QUANTITIES = {
    "params": "our parameters",
    "macs": "our multiply-adds (conv + fc)",
    "bn_channels": "channels of BN layers (each has a running mean and variance)",
    "params_with_stats": "params + 2 · bn_channels: Caffe's count, with BN's running statistics",
    "paper_params": "the paper's #P, in units (27.5M -> 27,500,000)",
    "paper_macs": "the paper's GFLOPs or MFLOPs, in multiply-adds",
}
PAPER_QUANTITIES = {"paper_params": "params", "paper_macs": "compute"}  # -> PaperFigures field
SCALED = re.compile(r"(\+?)\.(\d+)([kMG])")
SCALES = {"k": 10**3, "M": 10**6, "G": 10**9}
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
             ast.Div: operator.truediv}

Lookup = Callable[[str, str], float]  # (row id, quantity) -> value


@dataclass(frozen=True)
class Placeholder:
    """One `{EXPRESSION:FORMAT}` of a text."""

    expression: ast.expr
    format: str
    source: str

    def value(self, lookup: Lookup) -> float:
        return _evaluate(self.expression, lookup)

    def text(self, lookup: Lookup) -> str:
        return formatted(self.value(lookup), self.format)


@dataclass(frozen=True)
class Prose:
    """A text of the manifest, its fields parsed."""

    source: str
    parts: tuple[str | Placeholder, ...]

    def references(self) -> list[tuple[str, str]]:
        """(row id, quantity) of every field, in order."""
        return [(node.value.id, node.attr) for part in self.parts if isinstance(part, Placeholder)
                for node in ast.walk(part.expression) if isinstance(node, ast.Attribute)]

    def unknown_reference(self, rows: dict) -> str | None:
        """What a field names that the rows do not have, or None: a row id, or a count of a row
        without a spec, or a paper figure the row does not give."""
        from ...base.errors import did_you_mean

        for row_id, quantity in self.references():
            row = rows.get(row_id)
            if row is None:
                hint = did_you_mean(row_id, rows)
                return f"no row '{row_id}'" + (f" ({hint})" if hint else "")
            if quantity in PAPER_QUANTITIES:
                if getattr(row.paper, PAPER_QUANTITIES[quantity]) is None:
                    return f"row '{row_id}' gives no paper figure for {quantity}"
            elif row.spec is None:
                return f"row '{row_id}' has no spec to count"
        return None

    def render(self, lookup: Lookup) -> str:
        return "".join(part if isinstance(part, str) else part.text(lookup)
                       for part in self.parts)


def parse_prose(text) -> Prose:
    """A manifest text, its fields parsed and checked (a pydantic validator: the errors are
    PydanticCustomError, located by the model)."""
    if not isinstance(text, str):
        raise PydanticCustomError("manifest", "expected a string")
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as error:
        raise PydanticCustomError("manifest", "{problem} (write {braces} for a literal brace)",
                                  {"problem": str(error), "braces": "'{{' or '}}'"}) from None
    parts: list[str | Placeholder] = []
    for literal, field_text, format_spec, conversion in pieces:
        if literal:
            parts.append(literal)
        if field_text is not None:
            parts.append(_placeholder(field_text, format_spec or "", conversion))
    return Prose(text, tuple(parts))


def _placeholder(source: str, format_spec: str, conversion: str | None) -> Placeholder:
    where = "{" + source + (f"!{conversion}" if conversion else "") + \
        (f":{format_spec}" if format_spec else "") + "}"
    try:
        if conversion is not None:
            raise ValueError("a field takes no !conversion")
        expression = _checked(source.strip())
        _check_format(format_spec)
    except ValueError as error:
        raise PydanticCustomError("manifest", "{field}: {problem}",
                                  {"field": where, "problem": str(error)}) from None
    return Placeholder(expression, format_spec, where)


def _checked(source: str) -> ast.expr:
    """The expression of a field: ROW.QUANTITY arithmetic (ValueError for anything else)."""
    try:
        expression = ast.parse(source, mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"not ROW.QUANTITY arithmetic ({error.msg})") from None
    _check(expression)
    return expression


def _check(node: ast.expr) -> None:
    match node:
        case ast.Constant(value=int() | float()):
            return
        case ast.Attribute(value=ast.Name(), attr=quantity):
            if quantity not in QUANTITIES:
                from ...base.errors import did_you_mean

                hint = did_you_mean(quantity, QUANTITIES) or f"known: {', '.join(QUANTITIES)}"
                raise ValueError(f"no quantity '{quantity}' ({hint})")
        case ast.BinOp(left=left, op=op, right=right) if type(op) in OPERATORS:
            _check(left)
            _check(right)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            _check(operand)
        case _:
            raise ValueError(f"'{ast.unparse(node)}' is not ROW.QUANTITY arithmetic")


def _check_format(format_spec: str) -> None:
    try:
        formatted(1234, format_spec)  # an integer takes every format a count needs
    except ValueError as error:
        raise ValueError(f"bad format '{format_spec}': {error}") from None


def _evaluate(node: ast.expr, lookup: Lookup) -> float:
    match node:
        case ast.Constant(value=value):
            return value
        case ast.Attribute(value=ast.Name(id=row_id), attr=quantity):
            return lookup(row_id, quantity)
        case ast.BinOp(left=left, op=op, right=right):
            return OPERATORS[type(op)](_evaluate(left, lookup), _evaluate(right, lookup))
        case ast.UnaryOp(operand=operand):
            return -_evaluate(operand, lookup)
    raise AssertionError(f"unchecked expression {ast.unparse(node)}")


def formatted(value: float, format_spec: str) -> str:
    """`value` under a field's FORMAT (ValueError for a bad one)."""
    scaled = SCALED.fullmatch(format_spec)
    if scaled:
        sign, decimals, unit = scaled.groups()
        quantum = Decimal(1).scaleb(-int(decimals))
        number = (Decimal(value) / SCALES[unit]).quantize(quantum, ROUND_HALF_UP)
        return f"{'+' if sign and number >= 0 else ''}{number}{unit}"
    if not format_spec:
        return f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return format(value, format_spec)
