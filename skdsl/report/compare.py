"""`skdsl compare`: networks side by side, the way the paper's tables compare them.

    skdsl compare specs/resnext50_32x4d.sk specs/senet50.sk specs/sknet50.sk \\
        --baseline specs/resnext50_32x4d.sk
    skdsl compare examples/sknet50_options.sk --sweep M=1,2,3 --sweep G=16,32 --format markdown

One row per network (and per variant of a sweep): parameters, multiply-adds and FLOPs (= 2 ×
multiply-adds), the difference from a baseline in units and per cent (the paper's "+10% params,
+5% compute"), and, when the spec has a `paper` line, the paper's own figures, the paper's own
difference from the baseline's paper figures, and ours − paper. `--stages` adds one row per stage
below each network. No torch: everything comes from `skdsl.analyze`.

`overrides` (`--set NAME=VALUE`) and `sweeps` (`--sweep NAME=v1,v2,...`) apply to every listed
spec that declares NAME (a `param`); naming a parameter no listed spec declares is an error
(SK541), and so is a value of another type than the parameter's default (SK542). Several sweeps
give their cross product. The baseline takes the overrides it declares, never the sweeps.
The command line is skdsl/commands/compare.py.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import SpecError, declare_settings, did_you_mean
from ..base.errors import SettingError
from ..lang.loading import load

declare_settings("overrides", "sweeps")

MAX_VARIANTS = 256  # rows of one comparison: a larger cross product is almost surely a typo
FORMATS = ("rich", "markdown", "csv", "json")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# -- the comparison ------------------------------------------------------------------------------


@dataclass
class Row:
    """One network of a comparison, with its overrides, analysis and paper figures."""

    path: str
    overrides: dict
    spec: object
    analysis: object
    is_baseline: bool = False
    changed: bool = False  # an override moved a parameter off its default: not the paper's network
    latency: object = None  # a core.latency.Prediction, with a calibration

    @property
    def label(self) -> str:
        settings = " ".join(f"{k}={v}" for k, v in self.overrides.items())
        return f"{self.analysis.network} {settings}".strip()

    @property
    def paper(self):
        paper = self.spec.paper
        if paper is None or self.changed or tuple(self.analysis.input) != tuple(self.spec.input):
            return None  # the paper's figures are for the spec as written, at its own input
        return paper


@dataclass
class Comparison:
    rows: list[Row]
    baseline: Row | None
    count: tuple[str, ...] = ()
    stages: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "count": ["conv", "fc", *self.count],
            "baseline": _row_json(self.baseline, None, False) if self.baseline else None,
            "rows": [_row_json(row, self.baseline, self.stages) for row in self.rows],
        }


def declared_parameters(path: str, allow_imports_outside: bool = False) -> tuple[dict, dict]:
    """The `param`s a spec file declares: ({name: default value}, {name: 'file:line'})."""
    if path.lower().endswith(".json"):
        return {}, {}
    from ..lang.expand import parse_file
    from ..lang.zoo import resolve

    defaults = dict(load(path, allow_imports_outside=allow_imports_outside).parameters)
    where = {p.name: f"{p.span.file}:{p.span.line}" for p in parse_file(resolve(path)).params}
    return defaults, where


def changes_the_spec(overrides: dict, defaults: dict) -> bool:
    """Whether an override gives a parameter another value than its default (M=2 on a spec
    whose M defaults to 2 changes nothing, and the paper's figures still hold)."""
    return any(value != defaults.get(name) for name, value in overrides.items())


def check_value(name: str, value, default, where: str, setting: str) -> None:
    """An override (of `setting`: overrides or sweeps) must have its default's type: SK542,
    pointing at the declaration."""
    kind = type(default)
    if isinstance(default, bool):
        kind = bool
    ok = ((kind is int and isinstance(value, int))
          or (kind is float and isinstance(value, (int, float)))
          or (issubclass(kind, str) and isinstance(value, str) and _WORD.fullmatch(value)))
    if not ok:
        wanted = {int: "an integer", float: "a number"}.get(kind, "a word")
        raise SettingError(f"{{{setting}}} {name}={value}: {name} takes {wanted}, like its "
                           f"default {default}", code="SK542",
                           hint=f"{name} is declared at {where}")


def variants(paths: list[str], overrides: dict, sweeps: dict,
             allow_imports_outside: bool = False) -> list[tuple[str, dict, bool]]:
    """(path, overrides, whether they change the spec) for every listed spec and every point of
    the sweeps it declares."""
    declared = {path: declared_parameters(path, allow_imports_outside)
                for path in dict.fromkeys(paths)}
    known = {name for defaults, _ in declared.values() for name in defaults}
    for setting, names in (("overrides", overrides), ("sweeps", sweeps)):
        for name in names:
            if name not in known:
                hint = did_you_mean(name, known) or (
                    f"the listed specs declare: {', '.join(sorted(known))}" if known
                    else "none of the listed specs declares a `param`")
                raise SettingError(f"{{{setting}}} {name}: no listed spec declares a parameter "
                                   f"'{name}'", code="SK541", hint=hint)
    found: list[tuple[str, dict, bool]] = []
    for path in paths:
        defaults, where = declared[path]
        fixed = {k: v for k, v in overrides.items() if k in defaults}
        swept = {k: v for k, v in sweeps.items() if k in defaults}
        for name, value in fixed.items():
            check_value(name, value, defaults[name], where[name], "overrides")
        for name, values in swept.items():
            for value in values:
                check_value(name, value, defaults[name], where[name], "sweeps")
        for point in itertools.product(*swept.values()):
            settings = {**fixed, **dict(zip(swept, point))}
            found.append((path, settings, changes_the_spec(settings, defaults)))
    if len(found) > MAX_VARIANTS:
        raise SettingError(f"the sweeps make {len(found)} networks to compare; at most "
                       f"{MAX_VARIANTS}", code="SK543", hint="sweep fewer values at once")
    return found


def compare(paths: list[str], *, overrides: dict | None = None, sweeps: dict | None = None,
            baseline: str | None = None, input_shape=None, count=(), stages: bool = False,
            allow_imports_outside: bool = False, calibration=None) -> Comparison:
    """Analyse every variant; the baseline is `baseline` (with the overrides it declares) or the
    first row. With `calibration` (a core.latency.Calibration) each row's predicted latency."""
    from ..core.analysis import analyze

    def load_spec(path: str, settings: dict):
        return load(path, settings, allow_imports_outside=allow_imports_outside)

    overrides, sweeps = dict(overrides or {}), dict(sweeps or {})
    rows = []
    for path, settings, changed in variants(list(paths), overrides, sweeps, allow_imports_outside):
        try:
            spec = load_spec(path, settings)
            analysis = analyze(spec, input_shape, count)
        except SpecError as error:
            if settings:  # say which point of the sweep the spec cannot build
                error.with_note("in the variant " + " ".join(f"{k}={v}" for k, v in
                                                             settings.items()))
            raise
        rows.append(Row(path, settings, spec, analysis, changed=changed))
    base = None
    if baseline is not None:
        defaults, _ = declared_parameters(baseline, allow_imports_outside)
        settings = {k: v for k, v in overrides.items() if k in defaults}
        same = [row for row in rows if _same_file(row.path, baseline) and row.overrides == settings]
        if same:
            base = same[0]
        else:
            spec = load_spec(baseline, settings)
            base = Row(baseline, settings, spec, analyze(spec, input_shape, count),
                       changed=changes_the_spec(settings, defaults))
    elif len(rows) > 1:
        base = rows[0]
    if base is not None:
        base.is_baseline = True
    if calibration is not None:
        from ..core.latency import predict

        for row in {id(row): row for row in [*rows, *([base] if base else [])]}.values():
            row.latency = predict(row.analysis.graph, calibration)
    return Comparison(rows, base, tuple(dict.fromkeys(count)), stages)


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


# -- the numbers of a row ------------------------------------------------------------------------


def _ratio(ours: float, theirs: float) -> float | None:
    return 100.0 * (ours / theirs - 1.0) if theirs else None


def _stage_costs(row: Row) -> dict:
    return {part.name: part for part in row.analysis.stages}


def _row_json(row: Row, base: Row | None, stages: bool) -> dict:
    total = row.analysis.total
    data = {
        "network": row.analysis.network,
        "spec": row.path,
        "overrides": row.overrides,
        "input": list(row.analysis.input),
        "params": total.params,
        "macs": total.mult_adds,
        "flops": total.flops,
        "baseline": row.is_baseline,
    }
    if base is not None:
        btotal = base.analysis.total
        data.update({
            "delta_params": total.params - btotal.params,
            "delta_params_percent": _round(_ratio(total.params, btotal.params)),
            "delta_macs": total.mult_adds - btotal.mult_adds,
            "delta_macs_percent": _round(_ratio(total.mult_adds, btotal.mult_adds)),
        })
    if row.latency is not None:
        data["latency_ms"] = row.latency.milliseconds
        if base is not None and base.latency is not None:
            data["delta_latency_percent"] = _round(_ratio(row.latency.total, base.latency.total))
    paper = row.paper
    if paper is not None:
        figures = {"params_millions": paper.params_millions, "gflops": paper.gflops,
                   "source": paper.source}
        if paper.params_millions is not None:
            figures["ours_minus_paper_params_millions"] = _round(
                total.params / 1e6 - paper.params_millions, 4)
        if paper.gflops is not None:
            figures["ours_minus_paper_gflops"] = _round(total.mult_adds / 1e9 - paper.gflops, 4)
        bpaper = base.paper if base is not None else None
        if bpaper is not None:
            if paper.params_millions and bpaper.params_millions:
                figures["delta_params_percent"] = _round(
                    _ratio(paper.params_millions, bpaper.params_millions))
            if paper.gflops and bpaper.gflops:
                figures["delta_gflops_percent"] = _round(_ratio(paper.gflops, bpaper.gflops))
        data["paper"] = figures
    else:
        data["paper"] = None
    if stages:
        bstages = _stage_costs(base) if base is not None else {}
        data["stages"] = []
        for part in row.analysis.stages:
            item = {"name": part.name, "output": list(part.output), "params": part.cost.params,
                    "macs": part.cost.mult_adds}
            if part.name in bstages:
                other = bstages[part.name].cost
                item["delta_params"] = part.cost.params - other.params
                item["delta_macs"] = part.cost.mult_adds - other.mult_adds
            data["stages"].append(item)
    return data


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# -- text ----------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}%"


def _delta(units: int, percent: float | None, scale: float = 1.0, unit: str = "",
           digits: int = 2) -> str:
    number = f"{units:+,}" if scale == 1.0 else f"{units / scale:+.{digits}f}{unit}"
    return f"{number} ({_pct(percent)})" if percent is not None else number


def _cells(row: Row, base: Row | None) -> dict[str, str]:
    """The text of one network's cells, keyed by column."""
    from . import network as report

    total = row.analysis.total
    data = _row_json(row, base, False)
    cells = {
        "network": row.label + (" (baseline)" if row.is_baseline else ""),
        "params": report.grouped(total.params),
        "params_m": report.millions(total.params, 2),
        "macs": report.giga(total.mult_adds, 3),
        "flops": report.giga(total.flops, 3),
        "d_params": "", "d_macs": "", "paper_params": "", "paper_gflops": "", "ours_paper": "",
        "ms": f"{data['latency_ms']:.2f}" if "latency_ms" in data else "",
        "d_ms": _pct(data.get("delta_latency_percent")) if not row.is_baseline else "",
    }
    if base is not None and not row.is_baseline:
        cells["d_params"] = _delta(data["delta_params"], data["delta_params_percent"], 1e6, "M")
        cells["d_macs"] = _delta(data["delta_macs"], data["delta_macs_percent"], 1e9, " G", 3)
    paper = data["paper"]
    if paper:
        if paper["params_millions"] is not None:
            text = f"{report._quoted(paper['params_millions'], 1)}M"
            if "delta_params_percent" in paper and not row.is_baseline:
                text += f" ({_pct(paper['delta_params_percent'])})"
            cells["paper_params"] = text
        if paper["gflops"] is not None:
            text = report._quoted(paper["gflops"], 2)
            if "delta_gflops_percent" in paper and not row.is_baseline:
                text += f" ({_pct(paper['delta_gflops_percent'])})"
            cells["paper_gflops"] = text
        differences = []
        if "ours_minus_paper_params_millions" in paper:
            differences.append(f"{paper['ours_minus_paper_params_millions']:+.2f}M")
        if "ours_minus_paper_gflops" in paper:
            differences.append(f"{paper['ours_minus_paper_gflops']:+.3f} G")
        cells["ours_paper"] = ", ".join(differences)
    return cells


def _stage_cells(row: Row, base: Row | None) -> list[dict[str, str]]:
    from . import network as report

    bstages = _stage_costs(base) if base is not None and not row.is_baseline else {}
    found = []
    for part in row.analysis.stages:
        cells = {key: "" for key in ("d_params", "d_macs", "paper_params", "paper_gflops",
                                     "ours_paper", "d_ms")}
        cells["ms"] = (f"{row.latency.stages.get(part.name, 0.0) * 1e3:.2f}"
                       if row.latency is not None else "")
        cells.update({
            "network": f"  {part.name} ({report.size_text(part.output)})",
            "params": report.grouped(part.cost.params),
            "params_m": report.millions(part.cost.params, 2),
            "macs": report.giga(part.cost.mult_adds, 3),
            "flops": report.giga(part.cost.flops, 3),
        })
        if part.name in bstages:
            other = bstages[part.name].cost
            cells["d_params"] = _delta(part.cost.params - other.params,
                                       _ratio(part.cost.params, other.params), 1e6, "M")
            cells["d_macs"] = _delta(part.cost.mult_adds - other.mult_adds,
                                     _ratio(part.cost.mult_adds, other.mult_adds), 1e9, " G", 3)
        found.append(cells)
    return found


def _columns(comparison: Comparison) -> list[tuple[str, str]]:
    """(key, header) of the columns shown; Δ and paper columns only when they have content."""
    columns = [("network", "network"), ("params", "params")]
    if comparison.baseline is not None:
        columns.append(("d_params", "Δ params"))
    columns += [("macs", "GMACs"), ("flops", "GFLOPs (2×)")]
    if comparison.baseline is not None:
        columns.append(("d_macs", "Δ MACs"))
    if any(row.latency is not None for row in comparison.rows):
        columns.append(("ms", "ms (predicted)"))
        if comparison.baseline is not None:
            columns.append(("d_ms", "Δ ms"))
    if any(row.paper is not None for row in comparison.rows):
        columns += [("paper_params", "paper #P"), ("paper_gflops", "paper GFLOPs"),
                    ("ours_paper", "ours − paper")]
    return columns


def _all_cells(comparison: Comparison) -> list[tuple[dict, bool]]:
    """Every row's cells, and whether it is a stage row."""
    found = []
    for row in comparison.rows:
        found.append((_cells(row, comparison.baseline), False))
        if comparison.stages:
            found += [(cells, True) for cells in _stage_cells(row, comparison.baseline)]
    return found


def caption(comparison: Comparison) -> list[str]:
    lines = []
    base = comparison.baseline
    if base is not None:
        where = "" if base in comparison.rows else f" ({base.path}, not listed)"
        paper = " The paper's own Δ in brackets beside its figures." if any(
            row.paper is not None for row in comparison.rows) else ""
        lines.append(f"Δ: ours vs the baseline {base.label}{where}.{paper}")
    counted = ", ".join(["conv", "fc", *comparison.count])
    lines.append(f"GMACs: multiply-adds × 10⁻⁹ of {counted}; GFLOPs (2×) = 2 × multiply-adds. "
                 f"The paper's GFLOPs column counts multiply-adds: compare it with GMACs.")
    if any(row.paper is not None for row in comparison.rows):
        lines.append("paper: the spec's `paper` line; ours − paper in millions of params and "
                     "G multiply-adds.")
    if any(row.changed and row.spec.paper is not None for row in comparison.rows):
        lines.append("No paper figures for a variant whose overrides or sweep change the spec: "
                     "the paper's network is the spec as written.")
    shapes = {tuple(row.analysis.input) for row in comparison.rows}
    if len(shapes) > 1:
        lines.append("inputs differ: " + ", ".join(
            f"{row.analysis.network} {'×'.join(map(str, row.analysis.input))}"
            for row in comparison.rows))
    return lines


# Each column: its header, its compact cell (None: as written), whether it may wrap between
# words, and when it is left out of a narrow table (None: never). FLOPs are 2 × GMACs, and the
# paper's own figures are the closest to redundant: ours − paper says how far they are.
RICH_COLUMNS = {
    "network": (None, True, None), "params": ("params_m", False, None),
    "d_params": (None, True, 6), "macs": (None, False, None), "flops": (None, False, 1),
    "d_macs": (None, True, 5), "paper_params": (None, True, 3), "paper_gflops": (None, True, 2),
    "ours_paper": (None, True, 4), "ms": (None, False, None), "d_ms": (None, True, 7),
}


def rich_table(comparison: Comparison):
    """The comparison as a table that fits the console (report.FittedTable): at 80 columns the
    numbers shorten (27.48M), cells wrap between words, then FLOPs and the paper's own figures
    are left out; a number is never cut."""
    from . import network as report

    rows = _all_cells(comparison)
    columns = []
    for key, header in _columns(comparison):
        compact, wrap, drop_order = RICH_COLUMNS[key]
        cells = [cells[key] for cells, _ in rows]
        columns.append(report.Column(
            header, cells, compact=[c[compact] for c, _ in rows] if compact else
            [_unspaced_units(cell) for cell in cells], justify="left" if key == "network"
            else "right", wrap=wrap, drop_order=drop_order))
    styles = ["dim" if is_stage else ("bold" if cells["network"].endswith("(baseline)") else "")
              for cells, is_stage in rows]
    shapes = {tuple(row.analysis.input) for row in comparison.rows}
    title = "comparison"
    if len(shapes) == 1:
        title += f" at {'×'.join(map(str, next(iter(shapes))))}"
    return report.FittedTable(columns, title=title, caption=caption(comparison),
                              row_styles=styles)


def _unspaced_units(cell: str) -> str:
    """'+0.232 G (+5.5%)' -> '+0.232G (+5.5%)': a unit that wrapping cannot part from its number."""
    return cell.replace(" G", "G")


def markdown_table(comparison: Comparison) -> str:
    columns = _columns(comparison)
    lines = ["| " + " | ".join(header for _, header in columns) + " |",
             "|" + "|".join(":---" if key == "network" else "---:" for key, _ in columns) + "|"]
    for cells, is_stage in _all_cells(comparison):
        values = [cells[key].replace("|", "\\|") for key, _ in columns]
        if is_stage:
            values[0] = "&nbsp;&nbsp;" + values[0].strip()
        lines.append("| " + " | ".join(values) + " |")
    lines.append("")
    lines += [f"{line}  " if index < len(caption(comparison)) - 1 else line
              for index, line in enumerate(caption(comparison))]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["network", "spec", "overrides", "stage", "input", "params", "macs", "flops",
               "delta_params", "delta_params_percent", "delta_macs", "delta_macs_percent",
               "paper_params_millions", "paper_gflops", "paper_source",
               "ours_minus_paper_params_millions", "ours_minus_paper_gflops", "baseline",
               "latency_ms"]


def csv_text(comparison: Comparison) -> str:
    """One line per network (and per stage with --stages): exact integers, no formatting."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in comparison.rows:
        data = _row_json(row, comparison.baseline, comparison.stages)
        paper = data.get("paper") or {}
        common = {"network": data["network"], "spec": data["spec"],
                  "overrides": " ".join(f"{k}={v}" for k, v in data["overrides"].items()),
                  "input": "x".join(map(str, data["input"]))}
        writer.writerow({
            **common, "stage": "", "params": data["params"], "macs": data["macs"],
            "flops": data["flops"], "delta_params": data.get("delta_params", ""),
            "delta_params_percent": data.get("delta_params_percent", ""),
            "delta_macs": data.get("delta_macs", ""),
            "delta_macs_percent": data.get("delta_macs_percent", ""),
            "paper_params_millions": _blank(paper.get("params_millions")),
            "paper_gflops": _blank(paper.get("gflops")),
            "paper_source": _blank(paper.get("source")),
            "ours_minus_paper_params_millions": _blank(
                paper.get("ours_minus_paper_params_millions")),
            "ours_minus_paper_gflops": _blank(paper.get("ours_minus_paper_gflops")),
            "baseline": "yes" if data["baseline"] else "no",
            "latency_ms": _blank(data.get("latency_ms")),
        })
        for stage in data.get("stages", []):
            writer.writerow({
                **common, "stage": stage["name"], "params": stage["params"],
                "macs": stage["macs"], "flops": 2 * stage["macs"],
                "delta_params": stage.get("delta_params", ""),
                "delta_macs": stage.get("delta_macs", ""),
                "baseline": "yes" if data["baseline"] else "no",
            })
    return out.getvalue()


def _blank(value) -> object:
    return "" if value is None else value


def to_json_text(comparison: Comparison) -> str:
    return json.dumps(comparison.to_json(), ensure_ascii=False, indent=2)
