"""`skdsl tables`: the paper's Tables 1–7 (and Table 2's rivals) regenerated from the specs.

    skdsl tables              # rewrite docs/paper-tables.md from specs/paper_tables.toml
    skdsl tables --check      # exit 1 when docs/paper-tables.md is stale (or a check fails)

The manifest (`specs/paper_tables.toml`, its format is described at its top) maps every row of
the paper's tables to a spec and its `param` overrides, the paper's own figures (with source
and confidence), tables.md's hand counts, and the reason ours differs where it does. For every
row this module computes our exact counts and checks:

* **tables.md**: an exact hand count must equal ours to the unit; a rounded one ("28.36M",
  "4.756G") must equal ours rounded the same way;
* **the paper**: #P matches when ours, rounded to the paper's printed precision, equals it;
  GFLOPs (multiply-adds) match within COMPUTE_TOLERANCE, since the paper also counts a few
  small ops (tables.md: conv + fc is 0.16–0.4% below every Table 1 figure);
* every row whose figures do not match, and every row without a spec, carries a `reason`.

The page also has a section on counting conventions: for each paper GFLOPs figure, which
`--count` op classes (docs/analysis.md) bring ours closest, and #P with BN's running statistics.
No torch: everything comes from `skdsl.analyze` and the lowered graph.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tomllib
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from .errors import CliError
from .zoo import SPECS_DIR, shown

COMPUTE_TOLERANCE = 0.005  # relative: ±0.5%, tables.md's ±0.02 G at 4 G
DEFAULT_MANIFEST = Path("specs") / "paper_tables.toml"
DEFAULT_OUTPUT = Path("docs") / "paper-tables.md"

TABLE_KEYS = {"id", "title", "caption", "baseline", "rows"}
ROW_KEYS = {"id", "label", "spec", "set", "paper", "calc", "note", "reason"}
PAPER_KEYS = {"params", "gflops", "mflops", "error", "source", "confidence"}
CALC_KEYS = {"params", "macs"}
CONFIDENCES = {"A", "B", "C"}

# -- the command line ----------------------------------------------------------------------------


def register(commands) -> None:
    """Add `tables` to skdsl's subcommands (called from skdsl.cli)."""
    parser = commands.add_parser(
        "tables", help="regenerate docs/paper-tables.md: the paper's tables from the specs",
        description="Compute every row of the paper's Tables 1–7 (and Table 2's rivals) from\n"
                    "the specs named in the manifest, check them against the paper and\n"
                    "tables.md, and write the page.",
        epilog="examples:\n  skdsl tables\n  skdsl tables --check\n"
               "  skdsl tables --output - | less\n\n"
               "exit status: 0 written (or fresh with --check); 1 with --check when the page is\n"
               "stale, or when a row's count differs from tables.md's or a gap to the paper has\n"
               "no reason in the manifest; 2 a mistake in the manifest or the command line.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", metavar="TOML",
                        help=f"the manifest (default: {DEFAULT_MANIFEST})")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help=f"the page to write or check (default: {DEFAULT_OUTPUT}); - = stdout")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the page differs from a fresh one")
    parser.set_defaults(run=run_tables)


def run_tables(args) -> int:
    # The manifest: the current directory's when it has one, else skdsl's own (shipped with it).
    manifest_path = Path(args.manifest) if args.manifest else (
        DEFAULT_MANIFEST if DEFAULT_MANIFEST.is_file() else SPECS_DIR / DEFAULT_MANIFEST.name)
    manifest = load_manifest(manifest_path)
    output = args.output or _default_page(manifest)
    results = evaluate(manifest)
    text = render(manifest, results)
    problems = consistency_problems(results)
    for problem in problems:
        print(f"tables: {problem}", file=sys.stderr)
    rows = sum(len(t.rows) for t in manifest.tables)
    if args.check:
        if output == "-":
            raise CliError("--check compares with a file: leave out --output -", code="SK505")
        if output is None:
            print(f"{rows} rows checked; no {DEFAULT_OUTPUT} beside {manifest_path} to compare "
                  f"(an installed skdsl ships its specs, not its docs)")
            return 1 if problems else 0
        try:
            current = Path(output).read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != text:
            print(f"tables: {output} is stale; run `skdsl tables` to regenerate it",
                  file=sys.stderr)
            return 1
        print(f"{output} is up to date ({rows} rows)")
        return 1 if problems else 0
    if output in ("-", None):
        sys.stdout.write(text)
    else:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as error:
            raise CliError(f"cannot write '{output}': {error.strerror or error}",
                           code="SK504") from None
        print(f"wrote {output} ({rows} rows)")
    return 1 if problems else 0


def _default_page(manifest: Manifest) -> str | None:
    """docs/paper-tables.md beside the manifest's specs/; None where there is no docs/ folder
    (skdsl's own manifest in an installed package: the page is not written into it)."""
    page = manifest.root / DEFAULT_OUTPUT
    return str(shown(page)) if page.parent.is_dir() else None


# -- the manifest --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A number as printed: '27.5M' -> value 27.5, 1 decimal, unit 'M'."""

    text: str
    value: Decimal
    decimals: int
    unit: str  # '', 'M' or 'G'

    @property
    def scale(self) -> int:
        return {"": 1, "k": 10**3, "M": 10**6, "G": 10**9}[self.unit]

    def rounds(self, count: int) -> bool:
        """Does `count` (in units), rounded to this figure's precision, read as this figure?"""
        quantum = Decimal(1).scaleb(-self.decimals)
        return (Decimal(count) / self.scale).quantize(quantum, ROUND_HALF_UP) == self.value


def figure(text: str, where: str, unit: str = "") -> Figure:
    raw = str(text).strip()
    suffix = raw[-1] if raw and raw[-1] in "kMG" else ""
    number = raw[: len(raw) - len(suffix)] if suffix else raw
    try:
        value = Decimal(number)
    except ArithmeticError:
        raise CliError(f"manifest: {where} = {text!r} is not a number", code="SK545") from None
    decimals = max(0, -value.as_tuple().exponent)
    return Figure(raw, value, decimals, suffix or unit)


@dataclass
class Paper:
    params: Figure | None = None      # millions ('27.5M')
    compute: Figure | None = None     # multiply-adds: GFLOPs ('4.47', unit G) or MFLOPs (unit M)
    error: str | None = None
    source: str | None = None
    confidence: str | None = None

    @property
    def has_figures(self) -> bool:
        return self.params is not None or self.compute is not None


@dataclass
class Calc:
    params: int | Figure | None = None
    macs: int | Figure | None = None


@dataclass
class Row:
    id: str
    label: str
    spec: str | None
    overrides: dict
    paper: Paper
    calc: Calc
    note: str | None
    reason: str | None
    table: str


@dataclass
class Table:
    id: str
    title: str
    caption: str
    baseline: str | None
    rows: list[Row]


@dataclass
class Manifest:
    path: Path
    root: Path  # spec paths are relative to it: the folder that holds specs/
    tables: list[Table]


def load_manifest(path: Path) -> Manifest:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise CliError(f"cannot read the manifest '{path}': {error.strerror or error}",
                       code="SK544") from None
    except tomllib.TOMLDecodeError as error:
        raise CliError(f"the manifest '{path}' is not valid TOML: {error}",
                       code="SK544") from None
    root = Path(path).absolute().parent.parent  # not resolved: specs/ may be a link into skdsl/
    tables, ids = [], set()
    for index, table in enumerate(data.get("tables", [])):
        where = f"tables[{index}]"
        _known(table, TABLE_KEYS, where)
        for key in ("id", "title"):
            if not isinstance(table.get(key), str):
                raise CliError(f"manifest: {where} needs a {key}", code="SK545")
        rows = [_row(item, f"{table['id']}.rows[{number}]", table["id"], root)
                for number, item in enumerate(table.get("rows", []))]
        for row in rows:
            if row.id in ids:
                raise CliError(f"manifest: the row id '{row.id}' is used twice", code="SK545")
            ids.add(row.id)
        baseline = table.get("baseline")
        if baseline is not None and baseline not in {row.id for row in rows}:
            raise CliError(f"manifest: {table['id']}'s baseline '{baseline}' is not one of its "
                           f"rows", code="SK545")
        tables.append(Table(table["id"], table["title"], table.get("caption", ""), baseline,
                            rows))
    if not tables:
        raise CliError(f"the manifest '{path}' has no [[tables]]", code="SK545")
    return Manifest(Path(path), root, tables)


def _known(data: dict, keys: set, where: str) -> None:
    from .errors import did_you_mean

    for key in data:
        if key not in keys:
            raise CliError(f"manifest: {where} has an unknown key '{key}'", code="SK545",
                           hint=did_you_mean(key, keys) or f"known: {', '.join(sorted(keys))}")


def _row(data: dict, where: str, table: str, root: Path) -> Row:
    _known(data, ROW_KEYS, where)
    for key in ("id", "label"):
        if not isinstance(data.get(key), str):
            raise CliError(f"manifest: {where} needs a {key}", code="SK545")
    where = f"{table}.{data['id']}"
    spec = data.get("spec")
    if spec is not None and not (root / spec).is_file():
        raise CliError(f"manifest: {where}: no spec file '{spec}'", code="SK545")
    paper_data = data.get("paper", {})
    _known(paper_data, PAPER_KEYS, f"{where}.paper")
    if "gflops" in paper_data and "mflops" in paper_data:
        raise CliError(f"manifest: {where}.paper: give gflops or mflops, not both", code="SK545")
    if paper_data.get("confidence") not in CONFIDENCES | {None}:
        raise CliError(f"manifest: {where}.paper.confidence must be one of A, B, C",
                       code="SK545")
    compute = None
    if "gflops" in paper_data:
        compute = figure(paper_data["gflops"], f"{where}.paper.gflops", "G")
    elif "mflops" in paper_data:
        compute = figure(paper_data["mflops"], f"{where}.paper.mflops", "M")
    paper = Paper(
        params=figure(paper_data["params"], f"{where}.paper.params", "M")
        if "params" in paper_data else None,
        compute=compute, error=paper_data.get("error"), source=paper_data.get("source"),
        confidence=paper_data.get("confidence"))
    calc_data = data.get("calc", {})
    _known(calc_data, CALC_KEYS, f"{where}.calc")
    calc = Calc(**{key: value if isinstance(value, int) else figure(value, f"{where}.calc.{key}")
                   for key, value in calc_data.items()})
    if spec is None and not data.get("reason"):
        raise CliError(f"manifest: {where} has no spec: say why in its reason", code="SK545")
    return Row(data["id"], data["label"], spec, dict(data.get("set", {})), paper, calc,
               data.get("note"), data.get("reason"), table)


# -- evaluating the rows -------------------------------------------------------------------------


@dataclass
class Result:
    row: Row
    params: int | None = None
    macs: int | None = None
    bn_channels: int | None = None
    extras: dict[str, int] = field(default_factory=dict)  # op class -> extra multiply-adds
    calc_ok: bool | None = None     # None: no hand count
    params_ok: bool | None = None   # None: no paper #P
    compute_ok: bool | None = None  # None: no paper GFLOPs

    @property
    def matches(self) -> bool | None:
        """Do our counts read as the paper's figures? None when the paper gives none."""
        checks = [ok for ok in (self.params_ok, self.compute_ok) if ok is not None]
        return all(checks) if checks else None


def evaluate(manifest: Manifest) -> dict[str, Result]:
    """Our counts and checks for every row, by row id (one analysis per spec and overrides)."""
    import skdsl

    from .analysis import EXTRA_COUNTS, analyze
    from .graph import lower_table

    cache: dict[tuple, Result] = {}
    results = {}
    for table in manifest.tables:
        for row in table.rows:
            result = Result(row)
            if row.spec is not None:
                key = (row.spec, tuple(sorted(row.overrides.items())))
                if key not in cache:
                    spec = skdsl.load(manifest.root / row.spec, overrides=row.overrides or None)
                    graph = lower_table(spec)
                    base = analyze(graph)
                    counted = Result(row, base.params, base.mult_adds)
                    counted.bn_channels = sum(
                        data["channels"] for data in graph.nodes.values()
                        if data["op"] == "batchnorm" and not data.get("tied_to"))
                    counted.extras = {name: analyze(graph, count=(name,)).mult_adds - base.mult_adds
                                      for name in EXTRA_COUNTS}
                    cache[key] = counted
                known = cache[key]
                result.params, result.macs = known.params, known.macs
                result.bn_channels, result.extras = known.bn_channels, known.extras
                result.calc_ok = _calc_ok(row.calc, result)
                if row.paper.params is not None:
                    result.params_ok = row.paper.params.rounds(result.params)
                if row.paper.compute is not None:
                    paper = float(row.paper.compute.value) * row.paper.compute.scale
                    result.compute_ok = abs(result.macs / paper - 1) <= COMPUTE_TOLERANCE
            results[row.id] = result
    return results


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
            problems.append(f"{row.table} {row.id}: ours ({result.params:,} params, "
                            f"{result.macs:,} multiply-adds) differs from tables.md's hand count")
        if result.matches is False and not row.reason:
            problems.append(f"{row.table} {row.id}: differs from the paper's figures and the "
                            f"manifest gives no reason")
    return problems


# -- the page ------------------------------------------------------------------------------------


HEADER = """\
# The paper's tables, reproduced

<!-- Generated by `skdsl tables` from specs/paper_tables.toml: do not edit by hand.
     `skdsl tables --check` (and tests/test_tables.py) fail when this page is stale. -->

Every row of the SKNet paper's Tables 1–7, and Table 2's rival networks, computed from the
specs in `specs/` with the `param` overrides shown. **ours** is exact: parameters as
`sum(p.numel())` of the compiled module (BN's γ and β, not its running statistics), and
multiply-adds of convolutions and fc layers (torch's FlopCounterMode ÷ 2), at the spec's input
(224×224 unless said otherwise). The paper's "GFLOPs" are multiply-adds, so they compare with
our GMACs.

**Status:** ✓ ours reads as the paper's figures (#P rounded to the paper's precision; GFLOPs
within ±0.5%, as the paper also counts a few small ops); ≠ ours differs, for the reason given
below the table; — the paper gives no #P or GFLOPs for the row. **tables.md** is the hand count
of `../shared/paper/tables.md` for the reading chosen: = when ours equals it (to the unit where
it is exact, else to its printed precision). **conf.** is the grade of the paper figure's source
(A verbatim from the paper or the official repository; B secondary but consistent; C a single
secondary source with known transcription errors).

Reproduce a row with `skdsl build SPEC --set NAME=VALUE …`, or several side by side with
`skdsl compare SPEC… --baseline SPEC` (docs/model-zoo.md).
"""


def render(manifest: Manifest, results: dict[str, Result]) -> str:
    parts = [HEADER]
    contents = [f"[{_short_title(table.title)}](#{_anchor(table.title)})"
                for table in manifest.tables]
    contents.append("[counting conventions](#counting-conventions)")
    parts.append("Contents: " + " · ".join(contents) + "\n")
    for table in manifest.tables:
        parts.append(_render_table(table, results))
    parts.append(_render_conventions(manifest, results))
    return "\n".join(parts)


def _short_title(title: str) -> str:
    return title.split(" — ")[0]


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces as dashes."""
    text = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def _spec_cell(row: Row) -> str:
    if row.spec is None:
        return "—"
    text = f"`{row.spec}`"
    if row.overrides:
        text += " " + " ".join(f"`--set {k}={v}`" for k, v in row.overrides.items())
    return text


def _million(count: int) -> str:
    return f"{count:,} ({count / 1e6:.2f}M)"


def _compute(macs: int, unit: str) -> str:
    return f"{macs / 1e6:.2f}" if unit == "M" else f"{macs / 1e9:.3f}"


def _pct(value: float) -> str:
    return f"{value:+.1f}%"


def _render_table(table: Table, results: dict[str, Result]) -> str:
    unit = "M" if any(r.paper.compute is not None and r.paper.compute.unit == "M"
                      for r in table.rows) else "G"
    base = results.get(table.baseline) if table.baseline else None
    lines = [f"## {table.title}", ""]
    if table.caption:
        lines += [table.caption, ""]
    header = ["", "network", "spec", "#P (ours)", f"{unit}MACs (ours)"]
    if base is not None:
        header.append("Δ ours (#P / MACs)")
    header += ["paper #P", f"paper {unit}FLOPs"]
    if base is not None:
        header.append("Δ paper")
    header += ["paper top-1 err", "conf.", "tables.md", "status"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---:", ":---", ":---"] + ["---:"] * (len(header) - 3)) + "|")
    notes = []
    for number, row in enumerate(table.rows, start=1):
        result = results[row.id]
        cells = [str(number), row.label, _spec_cell(row)]
        if result.params is not None:
            cells += [_million(result.params), _compute(result.macs, unit)]
        else:
            cells += ["—", "—"]
        if base is not None:
            if result.params is not None and row.id != table.baseline:
                cells.append(f"{_pct(100 * (result.params / base.params - 1))} / "
                             f"{_pct(100 * (result.macs / base.macs - 1))}")
            else:
                cells.append("baseline" if row.id == table.baseline else "")
        paper = row.paper
        cells.append(paper.params.text if paper.params else "")
        cells.append(paper.compute.text.rstrip("MG") if paper.compute else "")
        if base is not None:
            cells.append(_paper_delta(row, base.row))
        cells.append(paper.error or "")
        cells.append(paper.confidence or "")
        cells.append(_calc_cell(row.calc, result))
        status, note = _status(result)
        cells.append(status)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        text = " ".join(part for part in (row.note, note) if part)
        if text:
            notes.append(f"{number}. **{row.label}.** {text}")
    lines.append("")
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    return "\n".join(lines)


def _paper_delta(row: Row, base: Row) -> str:
    if row.id == base.id:
        return "baseline"
    texts = []
    for mine, theirs in ((row.paper.params, base.paper.params),
                         (row.paper.compute, base.paper.compute)):
        if mine is not None and theirs is not None and theirs.value:
            texts.append(_pct(100 * (float(mine.value) / float(theirs.value) - 1)))
        else:
            texts.append("")
    return " / ".join(texts) if any(texts) else ""


def _calc_cell(calc: Calc, result: Result) -> str:
    if result.calc_ok is None:
        return ""
    shown = []
    for value in (calc.params, calc.macs):
        if value is None:
            continue
        shown.append(f"{value:,}" if isinstance(value, int) else value.text)
    mark = "=" if result.calc_ok else "✗ differs:"
    return f"{mark} {' / '.join(shown)}"


def _status(result: Result) -> tuple[str, str | None]:
    row = result.row
    if row.spec is None:
        return "no spec", f"*No spec:* {row.reason}"
    if result.matches is None:
        return "—", row.reason
    if result.matches:
        return "✓", row.reason
    if row.reason:
        return "≠ (note)", f"*Why ours differs:* {row.reason}"
    return "✗ unexplained", None


# -- counting conventions ------------------------------------------------------------------------


CONVENTIONS_INTRO = """\
## Counting conventions

`skdsl build SPEC --count CLASSES` (and `skdsl compare … --count …`, or
`skdsl.analyze(spec, count=(…))`) adds op classes to the conv + fc multiply-adds, each by its
formula in docs/analysis.md: **bn** one per output element; **act** one per output element;
**pool** one per window element of every output (global and channel pools: one per input
element); **add** (inputs − 1) per output element (residual adds and SK's fuse); **mul**
(inputs − 1) per output element (SE, CBAM, BAM scaling); **softmax** SK's select, M·C for the
softmax plus M·C·H·W for the weighted sum. The default stays conv + fc.

For every paper GFLOPs figure: ours under conv + fc, the single `--count` class and the
combination of classes (among those the network has) that come closest — "conv + fc" when
adding nothing is closest — and `--count all`. **window** is the paper figure's
rounding window (± half a unit of its last digit): a convention "fits" a row when it lands inside.
"""


def _distinct_rows(manifest: Manifest, results: dict[str, Result], figure: str):
    """(row, result) of the rows with a spec and that paper figure, each network and figure once."""
    seen = set()
    for table in manifest.tables:
        for row in table.rows:
            paper_figure = getattr(row.paper, figure)
            if row.spec is None or paper_figure is None:
                continue
            key = (row.spec, tuple(sorted(row.overrides.items())), paper_figure.text)
            if key not in seen:
                seen.add(key)
                yield row, results[row.id]


def _render_conventions(manifest: Manifest, results: dict[str, Result]) -> str:
    from .analysis import EXTRA_COUNTS

    names = list(EXTRA_COUNTS)
    subsets = [combo for size in range(1, len(names) + 1)
               for combo in itertools.combinations(names, size)]
    rows = [result for _, result in _distinct_rows(manifest, results, "compute")]
    lines = [CONVENTIONS_INTRO]
    lines.append("| network | paper | window | conv + fc | closest single class | "
                 "closest combination | `--count all` |")
    lines.append("|:---|---:|---:|---:|:---|:---|---:|")
    fits = {subset: 0 for subset in [(), *subsets]}
    for result in rows:
        figure_ = result.row.paper.compute
        scale = figure_.scale
        paper = float(figure_.value) * scale
        half = 0.5 * 10 ** -figure_.decimals * scale

        def value(subset) -> int:
            return result.macs + sum(result.extras[name] for name in subset)

        for subset in fits:
            if abs(value(subset) - paper) <= half:
                fits[subset] += 1
        # Only classes the network has: a class that adds nothing is no convention of its own.
        present = [name for name in names if result.extras[name]]
        singles = [(name,) for name in present]
        combos = [combo for size in range(1, len(present) + 1)
                  for combo in itertools.combinations(present, size)]
        digits = 2 if figure_.unit == "M" else 3

        def shown(count: int) -> str:
            return f"{count / scale:.{digits + 1}f} ({(count - paper) / scale:+.{digits + 1}f})"

        def closest(candidates) -> str:
            best = min([(), *candidates], key=lambda s: (abs(value(s) - paper), len(s), s))
            return f"`{','.join(best)}`: {shown(value(best))}" if best else "conv + fc"

        lines.append(" | ".join([
            f"| {result.row.label}", f"{figure_.text.rstrip('MG')} {figure_.unit}",
            f"±{half / scale:g}", shown(result.macs), closest(singles), closest(combos),
            f"{value(tuple(names)) / scale:.{digits + 1}f}"]) + " |")
    total = len(rows)
    ranked = sorted(fits.items(), key=lambda item: (-item[1], len(item[0]), item[0]))
    listed: list[tuple[tuple, int]] = []
    for subset, hits in ranked:
        # A superset that fits no more rows than a listed subset adds nothing to say.
        if any(set(other) <= set(subset) and hits <= other_hits for other, other_hits in listed):
            continue
        listed.append((subset, hits))
        if len(listed) == 5:
            break
    lines.append("")
    lines.append(f"Of these {total} figures, conv + fc lands inside the paper's rounding window "
                 f"for {fits[()]}. The conventions that fit the most rows:")
    lines.append("")
    for subset, hits in listed:
        lines.append(f"- `--count {','.join(subset)}`: {hits} of {total}" if subset
                     else f"- conv + fc (no `--count`): {hits} of {total}")
    lines.append("")
    lines.append("No convention fits every row: the paper's figures, and the literature values "
                 "it quotes, do not follow one counting rule (tables.md). skdsl's default stays "
                 "conv + fc, the count torch's FlopCounterMode agrees with.")
    lines.append("")
    lines += _render_param_conventions(manifest, results)
    return "\n".join(lines)


def _render_param_conventions(manifest: Manifest, results: dict[str, Result]) -> list[str]:
    lines = ["### Parameters with BN's running statistics", "",
             "Caffe keeps BN's running mean and variance as parameters (tables.md); counting them "
             "adds 2 per BN channel. For every paper #P figure:", "",
             "| network | paper #P | ours (γ, β) | fits | + running statistics | fits |",
             "|:---|---:|---:|:---:|---:|:---:|"]
    for row, result in _distinct_rows(manifest, results, "params"):
        with_stats = result.params + 2 * result.bn_channels
        lines.append(
            f"| {row.label} | {row.paper.params.text} | {result.params / 1e6:.2f}M | "
            f"{'✓' if row.paper.params.rounds(result.params) else ''} | "
            f"{with_stats / 1e6:.2f}M | {'✓' if row.paper.params.rounds(with_stats) else ''} |")
    lines.append("")
    lines.append("The paper's own networks (SKNet-50 27.5M, ResNeXt-50 25.0M) fit only without "
                 "running statistics; some quoted literature values (ResNeXt-101's 44.3M) fit "
                 "only with them.")
    lines.append("")
    return lines
