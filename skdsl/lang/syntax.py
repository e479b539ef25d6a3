"""The syntax tree of a .sk file: what the user wrote, with where they wrote it.

parser.py builds it from Lark's tree; expand.py gives it meaning. Every node keeps its `span`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar, Union

from ..base.errors import Span

# -- the language's limits (docs/language.md, "Limits") ----------------------------------------
# Each one turns input that would exhaust memory, time or Python's stack into a located error.
MAX_FILE_BYTES = 200_000  # a spec file, or a file it imports: 100 times the largest shipped one
MAX_READ_BYTES = 64_000_000  # any text file skdsl reads, such as a JSON spec (larger than its .sk)
MAX_LINE_LENGTH = 10_000  # characters on one line
MAX_PATH_LENGTH = 1_000  # characters of a `use` path
MAX_NESTING = 64  # open brackets, indented blocks, and items nested in items after expansion
MAX_INTEGER = 2**63 - 1  # an integer literal, or a result of integer arithmetic, in magnitude
MAX_TERMS = 50_000  # operands of one expression
MAX_REPEAT = 10_000  # a repeat count such as x3
MAX_LAYERS = 20_000  # layers of the expanded network, every repeat unrolled
MAX_BRANCHES = 64  # branches M of one SK or SUM unit (the paper's largest is 4)

T = TypeVar("T")


@dataclass(frozen=True)
class Literal(Generic[T]):
    """A value written out: its kind is the subclass (Int, Float, String)."""

    value: T
    span: Span


class Int(Literal[int]):
    """An integer: `64`."""


class Float(Literal[float]):
    """A number with a point or exponent: `0.25`."""


class String(Literal[str]):
    """A quoted string: `"std/resnext.sk"`."""


@dataclass(frozen=True)
class Quantity:
    """A number with an SI suffix, such as 27.5M."""

    value: float
    text: str
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class Dims:
    """`3x3` or `3x224x224`."""

    values: tuple[int, ...]
    span: Span


@dataclass(frozen=True)
class Binary:
    op: str
    left: "Expr"
    right: "Expr"
    span: Span
    terms: int = 2  # operands in the whole expression, counted once as it is built


@dataclass(frozen=True)
class Call:
    """A built-in function applied to values: `make_divisible(64 * k, 8)`."""

    name: str
    args: tuple["Expr", ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Compare:
    """`stride == 1`: only in a condition."""

    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Logic:
    """`a and b`, `a or b`, `not a` (right None): only in a condition."""

    op: str
    left: "Condition"
    right: "Condition | None"
    span: Span


Expr = Union[Int, Float, Quantity, String, Name, Dims, Binary, Call]
Condition = Union[Expr, Compare, Logic]


@dataclass(frozen=True)
class Arg:
    """A positional argument (keyword None) or a keyword one (`G=32`, `stride 2`)."""

    keyword: str | None
    value: Expr
    span: Span
    keyword_span: Span | None = None


@dataclass(frozen=True)
class Label:
    name: str
    span: Span


@dataclass
class LayerStmt:
    label: Label | None
    keyword: str  # lower-cased layer keyword: conv, sk, maxpool ...
    keyword_text: str  # as written, for messages: SK, Conv ...
    options: list[Arg] | None  # the bracketed [M=2, G=32]
    args: list[Arg]
    kernel_lines: list[list[Arg]] | None  # an SK's explicit branches
    span: Span
    keyword_span: Span


@dataclass
class CallStmt:
    label: Label | None
    name: str
    name_span: Span
    args: list[Arg]
    repeat: int | Name | None  # `x3`, or `x depth` (a param or formal)
    repeat_span: Span | None
    span: Span


@dataclass
class ResidualStmt:
    args: list[Arg]
    body: list["Statement"]
    span: Span
    condition: Condition | None = None  # `residual if stride == 1:`; false: the body alone


@dataclass
class IfStmt:
    """`if COND:` body [`else:` body]: the statements of the chosen side, in place."""

    condition: Condition
    body: list["Statement"]
    orelse: list["Statement"]
    span: Span


@dataclass
class ShortcutStmt:
    body: list["Statement"]
    span: Span


@dataclass
class BranchStmt:
    name: Label
    source: Label | None
    body: list["Statement"]
    span: Span
    shares: Label | None = None  # `branch b from x shares a`: a's layers and weights


@dataclass
class SplitStmt:
    label: Label | None
    args: list[Arg]
    outputs: list[Label]
    span: Span


@dataclass
class ForStmt:
    """`for c, n in (16, 1), (24, 2):` body: the body once per row, each name replaced by the
    row's value (expand.py); `unrolled` keeps those copies, made once."""

    names: list[Label]
    rows: list[tuple["Expr", ...]]
    row_spans: list[Span]
    body: list["Statement"]
    span: Span
    unrolled: list | None = None


Statement = Union[LayerStmt, CallStmt, ResidualStmt, ShortcutStmt, BranchStmt, SplitStmt, IfStmt,
                  ForStmt]


@dataclass
class Formal:
    name: str
    default: Expr | None
    span: Span
    domain: "Domain | None" = None  # `attn=se in {se, eca}`: the values a call may pass


@dataclass
class BlockDef:
    name: str
    formals: list[Formal]
    body: list[Statement]
    span: Span
    name_span: Span
    file: str = ""


@dataclass(frozen=True)
class Domain:
    """Where a param may range: `{16, 32, 64}` (kind "choice": `values` are the items) or
    `log 8..256 step 8` (kind "range": `values` are low, high and the step where written)."""

    kind: str
    values: tuple
    log: bool
    span: Span


@dataclass
class ParamDecl:
    name: str
    value: Expr
    span: Span
    name_span: Span
    domain: Domain | None = None


@dataclass
class WhereDecl:
    """`where G divides width`: a constraint between the params of a design space."""

    condition: Condition
    span: Span


@dataclass
class UseDecl:
    path: str
    span: Span


@dataclass
class StageDecl:
    name: Label
    repeat: int | Name | None
    repeat_span: Span | None
    body: list[Statement]
    span: Span


@dataclass
class NetworkDecl:
    name: Label
    input: Dims | None
    classes: Expr | None
    paper: list[Arg] | None
    stages: list[StageDecl | ForStmt]  # a `for` unrolls to stages in expand.py
    span: Span


@dataclass
class SourceFile:
    path: str
    uses: list[UseDecl] = field(default_factory=list)
    params: list[ParamDecl] = field(default_factory=list)
    wheres: list[WhereDecl] = field(default_factory=list)
    blocks: list[BlockDef] = field(default_factory=list)
    networks: list[NetworkDecl] = field(default_factory=list)
