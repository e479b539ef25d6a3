"""What `skdsl inspect attention` shows: a units × scales table, and figures in the style of the
paper's Fig. 3 and Fig. 4 (with the optional matplotlib, `pip install 'skdsl[plot]'`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..base import files, plotting
from ..base.errors import declare_settings
from .units import InspectError

declare_settings("out")

CHANNELS_AVERAGED = 16  # the paper's Fig. 3 plots averages of 16 successive channels
RESULTS = "attention.json"
FIGURES = ("attention_units.png", "attention_classes.png")


class OutputError(InspectError):
    """The results could not be written."""

    code = "SK645"


def table(result: dict):
    """A table that fits the console (report.FittedTable): per unit the mean difference at the
    first scale, then the paired change to every other scale ± its standard error; a last row
    gives top-1 at each scale. Fields every unit shares go in the title (as the paper's "kernel
    5x5 - 3x3"), so 3 scales fit 80 columns; narrower, the graph names are left out first."""
    from ..report.network import Column, FittedTable

    scales, units = result["scales"], result["units"]
    kinds = {_fields(unit["fields"]) for unit in units}
    mixed = len(kinds) > 1
    compared = "largest field − smallest" if mixed else _compared(kinds.pop())
    title = (f"mean attention difference ({compared}), {result['images']} images, "
             f"protocol {result['protocol']}")
    accuracy = [f"{a:.1%}" for a in result["accuracy"]]
    columns = [Column("unit", [unit["name"] for unit in units] + ["top-1"]),
               Column("graph name", [unit["layer"] for unit in units] + [""], drop_order=1)]
    if mixed:  # a fields column only where units differ
        columns.append(Column("fields", [_fields(unit["fields"]) for unit in units] + [""],
                              drop_order=2))
    columns.append(Column(scale_text(scales[0]), [f"{unit['difference']['mean'][0]:+.4f}"
                                                  for unit in units] + accuracy[:1],
                          justify="right"))
    for index, scale in enumerate(scales[1:], start=1):
        pairs = [(f"{unit['change']['mean'][index]:+.4f}", f"{unit['change']['stderr'][index]:.4f}")
                 for unit in units]
        # narrow, the standard error may go below its mean: a break no number spans
        columns.append(Column(f"{scale_text(scale)} − {scale_text(scales[0])}",
                              [f"{mean}±{error}" for mean, error in pairs] + [accuracy[index]],
                              compact=[f"{mean} ±{error}" for mean, error in pairs] +
                              [accuracy[index]], justify="right", wrap=True))
    return FittedTable(columns, title=title)


def _compared(fields: str) -> str:
    """'3×3/5×5' -> '5×5 − 3×3': the largest field minus the smallest."""
    kernels = fields.split("/")
    return f"{kernels[-1]} − {kernels[0]}"


def scale_text(scale: float) -> str:
    """1.0 -> '1.0×', 1.25 -> '1.25×': as the paper writes scales."""
    return f"{scale:.1f}×" if round(scale, 1) == scale else f"{scale:g}×"


def _fields(fields: list) -> str:
    return "/".join("global" if f is None else f"{f[0]}×{f[1]}" for f in fields)


def write_results(result: dict, out: str | Path, figure_units: list[str]) -> list[Path]:
    """attention.json, and the two figures when matplotlib is installed; the paths written."""
    folder = Path(out)
    try:
        check_out(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / RESULTS]
        files.write_text(written[0], json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        if plotting_available():
            written += write_figures(result, folder, figure_units)
    except OSError as error:
        raise OutputError(f"cannot write the results to '{folder}': {error.strerror or error}",
                          hint="name a writable folder as {out}") from None
    return written


def check_out(out: str | Path) -> None:
    """OutputError unless `out` is a folder (or nothing yet) whose results files, where they
    exist, are regular files: called before the experiment, and again before writing."""
    try:
        files.check_output_folder(out, (RESULTS, *FIGURES))
    except files.FileProblem as problem:
        raise OutputError(f"cannot write the results to '{out}': {problem}",
                          hint="name a folder as {out}") from None


def plotting_available() -> bool:
    return plotting.available()


def write_figures(result: dict, folder: Path, chosen: list[str]) -> list[Path]:
    """Fig. 3 (larger kernel's attention across channels; mean difference per unit with its
    standard deviation) and Fig. 4 (mean difference per class), one curve per scale."""
    plt = plotting.pyplot()
    units = {unit["name"]: unit for unit in result["units"]}
    picked = [units[name] for name in chosen if name in units] or list(units.values())[:3]
    paths = [folder / name for name in FIGURES]
    for path, draw in zip(paths, (_figure_units, _figure_classes)):
        figure = draw(plt, result, picked)
        with files.atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=80, format="png")
        plt.close(figure)
    return paths


def _figure_units(plt, result: dict, picked: list[dict]):
    scales, units = result["scales"], result["units"]
    figure, axes = plt.subplots(1, len(picked) + 1, figsize=(3.6 * (len(picked) + 1), 3.2),
                                squeeze=False)
    for axis, unit in zip(axes[0], picked):
        group = min(CHANNELS_AVERAGED, max(1, unit["channels"] // 8))
        for scale, attention in zip(scales, unit["larger_attention"]):
            means = [sum(attention[i:i + group]) / len(attention[i:i + group])
                     for i in range(0, len(attention), group)]
            axis.plot([i * group for i in range(len(means))], means, label=scale_text(scale))
        largest = unit["fields"][-1]
        axis.set_title(f"attention for {largest[0]}×{largest[1]} in {unit['name']}", fontsize=9)
        axis.set_xlabel(f"channel (mean of {group})", fontsize=8)
    axis = axes[0][-1]
    for s, scale in enumerate(scales):
        axis.errorbar(range(len(units)), [u["difference"]["mean"][s] for u in units],
                      yerr=[u["difference"]["std"][s] for u in units], capsize=2,
                      label=scale_text(scale), alpha=0.8)
    axis.set_xticks(range(len(units)), [u["name"] for u in units], rotation=90, fontsize=7)
    axis.set_title("mean attention difference (large − small)", fontsize=9)
    axis.axhline(0, color="grey", linewidth=0.5)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def _figure_classes(plt, result: dict, picked: list[dict]):
    scales = result["scales"]
    figure, axes = plt.subplots(len(picked), 1, figsize=(6.4, 2.2 * len(picked)), squeeze=False)
    for axis, unit in zip(axes[:, 0], picked):
        per_class = [(c, means) for c, means in enumerate(unit["per_class"]) if means]
        for s, scale in enumerate(scales):
            axis.plot([c for c, _ in per_class], [means[s] for _, means in per_class],
                      marker=".", label=scale_text(scale))
        axis.set_title(f"mean attention difference on {unit['name']} per class", fontsize=9)
        axis.axhline(0, color="grey", linewidth=0.5)
    axes[-1, 0].set_xlabel("class index", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    return figure


__all__ = ["OutputError", "FIGURES", "table", "write_results", "plotting_available",
           "write_figures"]
