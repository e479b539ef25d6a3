"""The manifest of `skdsl tables` (specs/paper_tables.toml), validated by pydantic models.

Every mistake in it is one SK545 naming the table and row ids and the field (SK544 when the
file cannot be read or is not TOML). Prose (captions, notes, reasons) is a `Prose` template:
`{ROW.QUANTITY ...}` fields are our counts, filled in when the page is rendered (prose.py).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, ValidationError,
                      ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from ...base import files
from ...base.errors import InputFileError, did_you_mean
from .prose import Prose, parse_prose

UNIT_SCALES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9}

# -- figures as printed --------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A number as printed: '27.5M' -> value 27.5, 1 decimal, unit 'M'."""

    text: str
    value: Decimal
    decimals: int
    unit: str  # '', 'k', 'M' or 'G'

    @property
    def scale(self) -> int:
        return UNIT_SCALES[self.unit]

    @property
    def units(self) -> int | float:
        """The figure in units: '27.5M' -> 27,500,000."""
        units = self.value * self.scale
        return int(units) if units == units.to_integral_value() else float(units)

    def reading(self, count: int) -> str:
        """`count` (in units) printed at this figure's precision: 27,559,896 -> '27.6M'."""
        return f"{self._at_precision(count)}{self.unit}"

    def rounds(self, count: int) -> bool:
        """Does `count` (in units), rounded to this figure's precision, read as this figure?"""
        return self._at_precision(count) == self.value

    def truncates(self, count: int) -> bool:
        """Is this figure `count` cut (not rounded) to its precision: 27,161,264 -> '27.1M'?"""
        return self._at_precision(count, ROUND_DOWN) == self.value

    def _at_precision(self, count: int, rounding: str = ROUND_HALF_UP) -> Decimal:
        quantum = Decimal(1).scaleb(-self.decimals)
        return (Decimal(count) / self.scale).quantize(quantum, rounding)


def figure(text: str, unit: str = "") -> Figure:
    """A printed figure: '27.5M', '4.47' (in `unit`), '145.66'; ValueError when not a number."""
    raw = text.strip()
    suffix = raw[-1] if raw and raw[-1] in UNIT_SCALES else ""
    try:
        value = Decimal(raw[: len(raw) - len(suffix)])
    except ArithmeticError:
        value = None
    if value is None or not value.is_finite():
        raise ValueError(f"{text!r} is not a number")
    return Figure(raw, value, max(0, -value.as_tuple().exponent), suffix or unit)


def _printed(unit: str):
    """A pydantic validator for a figure given as a string, `unit` when it names none."""
    def validate(value) -> Figure:
        if not isinstance(value, str):
            raise PydanticCustomError("figure_type", "write the figure as a string, such as "
                                      "'27.5M': its printed precision counts")
        return _parsed(value, unit)
    return validate


def _hand_count(value) -> int | Figure:
    """tables.md's count: an integer when exact, a rounded string ('28.36M') otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("figure_type", "expected an integer (exact) or a rounded "
                                  "string such as '28.36M'")
    return _parsed(value, "")


def _param_value(value) -> int | float | str | bool:
    """A `param` override, as `--set NAME=VALUE` takes it."""
    if not isinstance(value, int | float | str | bool):
        raise PydanticCustomError("manifest", "a param value is a number, a string or a boolean")
    return value


def _parsed(text: str, unit: str) -> Figure:
    try:
        return figure(text, unit)
    except ValueError:
        raise PydanticCustomError("not_a_number", "is not a number") from None


Millions = Annotated[Figure, PlainValidator(_printed("M"))]
Billions = Annotated[Figure, PlainValidator(_printed("G"))]
HandCount = Annotated[int | Figure, PlainValidator(_hand_count)]
ParamValue = Annotated[int | float | str | bool, PlainValidator(_param_value)]
Text = Annotated[Prose, PlainValidator(parse_prose)]  # prose with `{ROW.QUANTITY}` fields

# -- the models ----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PaperFigures(_Strict):
    """What the paper prints for a row, and how sure we are of the transcription."""

    params: Millions | None = Field(None, description="#P as printed, in millions: '27.5M'")
    gflops: Billions | None = Field(None, description="GFLOPs (multiply-adds) as printed: '4.47'")
    mflops: Millions | None = Field(None, description="MFLOPs (multiply-adds) as printed: '145.66'")
    error: str | None = Field(None, description="the top-1 error text, as printed")
    source: str | None = Field(None, description="where the figures come from")
    confidence: Literal["A", "B", "C"] | None = Field(
        None, description="tables.md's grade: A verbatim, B secondary but consistent, "
                          "C single secondary source with known errors")

    @model_validator(mode="after")
    def _one_compute_figure(self) -> PaperFigures:
        if self.gflops is not None and self.mflops is not None:
            raise PydanticCustomError("manifest", "give gflops or mflops, not both")
        return self

    @property
    def compute(self) -> Figure | None:
        """The paper's multiply-adds: GFLOPs (unit G) or MFLOPs (unit M)."""
        return self.gflops if self.gflops is not None else self.mflops

    @property
    def has_figures(self) -> bool:
        return self.params is not None or self.compute is not None


class Calc(_Strict):
    """tables.md's hand count for the reading chosen."""

    params: HandCount | None = Field(None, description="parameters: exact int or '28.36M'")
    macs: HandCount | None = Field(None, description="multiply-adds: exact int or '4.756G'")


class OtherCount(Calc):
    """Another implementation's count of the same network, checked like tables.md's."""

    source: str = Field(description="whose count: \"torchvision\", \"imgclsmob's dpn98\"")


class Row(_Strict):
    """One row of a paper table: the spec that reproduces it, and what to compare it with."""

    id: str = Field(description="unique over the manifest; prose names rows by it")
    label: str = Field(description="the network's name in the page's table")
    spec: str | None = Field(None, description="a path under specs/; none when the language "
                                               "cannot write the network (say why in reason)")
    overrides: dict[str, ParamValue] = Field(
        default_factory=dict, alias="set", description="`param` overrides: { NAME = VALUE }")
    paper: PaperFigures = Field(default_factory=PaperFigures)
    calc: Calc = Field(default_factory=Calc)
    others: list[OtherCount] = Field(default_factory=list,
                                     description="other implementations' counts of the network")
    note: Text | None = Field(None, description="what the row is")
    reason: Text | None = Field(None, description="why ours differs from the paper's figures")

    @field_validator("spec")
    @classmethod
    def _spec_exists(cls, spec: str | None, info: ValidationInfo) -> str | None:
        root = (info.context or {}).get("root")
        if spec is not None and root is not None and not (root / spec).is_file():
            raise PydanticCustomError("manifest", "no spec file '{spec}'", {"spec": spec})
        return spec

    @model_validator(mode="after")
    def _spec_or_reason(self) -> Row:
        if self.spec is None and self.reason is None:
            raise PydanticCustomError("manifest", "no spec: say why in its reason")
        return self

    @property
    def prose(self) -> dict[str, Prose]:
        return {name: getattr(self, name) for name in ("note", "reason")
                if getattr(self, name) is not None}


class Table(_Strict):
    """One of the paper's tables, as a section of the page."""

    id: str = Field(description="the table's id: table1 … table7, or another")
    title: str = Field(description="the section heading; its part before ' — ' is its short name")
    caption: Text | None = Field(None, description="the text under the heading")
    baseline: str | None = Field(None, description="a row id: the Δ columns compare with it")
    rows: list[Row] = Field(default_factory=list)

    @model_validator(mode="after")
    def _baseline_is_a_row(self) -> Table:
        if self.baseline is not None and self.baseline not in {row.id for row in self.rows}:
            raise PydanticCustomError("manifest", "baseline '{baseline}' is not one of its rows",
                                      {"baseline": self.baseline})
        return self


class ManifestFile(_Strict):
    """specs/paper_tables.toml: the tables, in page order."""

    tables: list[Table] = Field(min_length=1, description="[[tables]], each with [[tables.rows]]")

    @model_validator(mode="after")
    def _rows_and_prose_agree(self) -> ManifestFile:
        rows: dict[str, Row] = {}
        for table in self.tables:
            for row in table.rows:
                if row.id in rows:
                    raise PydanticCustomError("manifest", "the row id '{id}' is used twice",
                                              {"id": row.id})
                rows[row.id] = row
        for where, text in self.prose():
            problem = text.unknown_reference(rows)
            if problem:
                raise PydanticCustomError("manifest", "{where}: {problem}",
                                          {"where": where, "problem": problem})
        return self

    def prose(self):
        """(where, template) of every piece of prose: 'table2.resnext101_bam.reason', …"""
        for table in self.tables:
            if table.caption is not None:
                yield f"{table.id}.caption", table.caption
            for row in table.rows:
                for name, text in row.prose.items():
                    yield f"{table.id}.{row.id}.{name}", text


@dataclass(frozen=True)
class Manifest:
    path: Path
    root: Path  # spec paths are relative to it: the folder that holds specs/
    tables: list[Table]

    @property
    def rows(self) -> list[tuple[Table, Row]]:
        return [(table, row) for table in self.tables for row in table.rows]


# -- loading -------------------------------------------------------------------------------------


def load_manifest(path: Path) -> Manifest:
    """The manifest at `path`; InputFileError SK544 when unreadable, SK545 for a mistake in it."""
    try:  # a device or FIFO is refused, not read until memory runs out
        data, _ = files.read_toml(path)
    except files.FileProblem as problem:
        raise InputFileError(f"the manifest '{path}' is {problem}" if problem.kind == "invalid" else
                       f"cannot read the manifest '{path}': {problem}", code="SK544") from None
    if not data.get("tables"):
        raise InputFileError(f"the manifest '{path}' has no [[tables]]", code="SK545")
    root = Path(path).absolute().parent.parent  # not resolved: specs/ may be a link into skdsl/
    try:
        model = ManifestFile.model_validate(data, context={"root": root})
    except ValidationError as error:
        raise _manifest_error(data, error.errors(include_url=False)[0]) from None
    return Manifest(Path(path), root, model.tables)


def _manifest_error(data: dict, problem: dict) -> InputFileError:
    """pydantic's first error as an SK545 that names the table and row ids and the field."""
    loc = tuple(part for part in problem["loc"] if part != "[key]")
    kind, name = problem["type"], loc[-1] if loc else None
    if kind == "extra_forbidden":
        known = _field_names(loc[:-1])
        where = _where(data, loc[:-1]) or "the top level"
        return InputFileError(f"manifest: {where} has an unknown key '{name}'", code="SK545",
                        hint=did_you_mean(str(name), known) or f"known: {', '.join(known)}")
    if kind == "missing":
        article = "an" if str(name)[0] in "aeiou" else "a"
        return InputFileError(f"manifest: {_where(data, loc[:-1])} needs {article} {name}",
                        code="SK545")
    if kind == "not_a_number":
        return InputFileError(f"manifest: {_where(data, loc)} = {problem['input']!r} is not a number",
                        code="SK545")
    message = problem["msg"] if kind == "manifest" else problem["msg"][:1].lower() + \
        problem["msg"][1:]
    where = _where(data, loc)
    return InputFileError(f"manifest: {where}: {message}" if where else f"manifest: {message}",
                    code="SK545")


def _where(data, loc: tuple) -> str:
    """'table2.resnext101_bam.paper.gflops' for ('tables', 1, 'rows', 8, 'paper', 'gflops'):
    tables and rows by their ids ('tables[0]', 'rows[3]' where they have none)."""
    parts, node = [], data
    for index, key in enumerate(loc):
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and key < len(node) else None
            named = isinstance(node, dict) and isinstance(node.get("id"), str)
            parts.append(node["id"] if named else f"{loc[index - 1]}[{key}]")
        else:
            if key not in ("tables", "rows") or index + 1 == len(loc):  # a list says its item
                parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts)


def _field_names(loc: tuple) -> list[str]:
    """The keys the model at `loc` takes (under their TOML names)."""
    model: type[BaseModel] = ManifestFile
    for key in loc:
        if isinstance(key, str):
            field_ = next(f for name, f in model.model_fields.items()
                          if (f.alias or name) == key)
            model = next(arg for arg in _types_in(field_.annotation)
                         if isinstance(arg, type) and issubclass(arg, BaseModel))
    return sorted(field_.alias or name for name, field_ in model.model_fields.items())


def _types_in(annotation) -> list:
    """`annotation` and the types it is built of: list[Row] | None -> [list[Row], Row, None]."""
    found = [annotation]
    for argument in typing.get_args(annotation):
        found += _types_in(argument)
    return found

