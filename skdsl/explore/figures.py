"""The figures of a design space (the `plot` extra): what `explore show` and `explore compare` draw.

- `histograms`: parameters and multiply-adds over the built points of a space, over-budget
  points stacked on the ok ones;
- `error_against_macs`: the trained trials' top-1 error against multiply-adds, the Pareto front
  (the lowest error at each cost) marked and joined;
- `edf`: empirical distribution functions of one or several spaces on one plot, as RegNet
  compares design spaces (Radosavovic et al. 2020, "Designing Network Design Spaces"):
  F(e) = the fraction of models with error below e. Of error, or of any count.

Pure functions: numbers in, files out, the paths written returned. Only matplotlib's object API
is used (`matplotlib.figure.Figure`, saved through Agg): pyplot is never imported, so there is no
display, no global figure and nothing to close. The same numbers give the same bytes with the
same matplotlib and fonts: a fixed size and dpi, no date or software stamp, fixed SVG ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..base import files, plotting
from ..base.errors import SkdslError

DPI = 100
FORMATS = ("png", "svg")
# What matplotlib would stamp into a file and changes between runs or versions: left out.
_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}
_SVG_SALT = "skdsl"  # SVG element ids hash this instead of a random salt
OK_COLOUR, OVER_COLOUR, FRONT_COLOUR = "tab:blue", "tab:orange", "tab:red"


def available() -> bool:
    """Whether matplotlib is installed (a command can then leave the figures out)."""
    return plotting.available()


def require() -> None:
    """SK564 unless matplotlib is installed: say so before any figure is begun."""
    if not available():
        raise SkdslError("drawing the figures of a design space needs matplotlib", code="SK564",
                         hint="pip install 'skdsl[plot]'  (or: pip install matplotlib)")


def histograms(path: Path, params: Sequence[int], macs: Sequence[int],
               over_budget: Sequence[bool] = (), *, rejected: int = 0,
               formats: Sequence[str] = ("png",)) -> list[Path]:
    """Two panels: the parameters and the multiply-adds of the built points (ok and over
    budget; `over_budget[i]` says which, none when empty). Rejected points have no counts: their
    number is only said in the title."""
    figure = _figure((10, 3.8))
    over = list(over_budget) or [False] * len(params)
    for axis, values, scale, label in ((figure.add_subplot(1, 2, 1), params, 1e6,
                                        "parameters (M)"),
                                       (figure.add_subplot(1, 2, 2), macs, 1e9,
                                        "multiply-adds (G)")):
        _histogram(axis, [v / scale for v in values], over)
        axis.set(xlabel=label, ylabel="points")
    built, outside = len(params), sum(over)
    title = f"{built} built points"
    if outside:
        title += f", {outside} over budget ({100 * outside / built:.0f}%)"
    if rejected:
        title += f"; {rejected} rejected, not counted"
    figure.suptitle(title)
    return _save(figure, path, formats)


def _histogram(axis, values: list[float], over: list[bool]) -> None:
    if not values:
        axis.text(0.5, 0.5, "no point built", ha="center", va="center",
                  transform=axis.transAxes)
        return
    ok = [v for v, outside in zip(values, over) if not outside]
    beyond = [v for v, outside in zip(values, over) if outside]
    stacks, colours, labels = [ok], [OK_COLOUR], [f"ok ({len(ok)})"]
    if beyond:
        stacks.append(beyond)
        colours.append(OVER_COLOUR)
        labels.append(f"over budget ({len(beyond)})")
    # Shared bins over both groups, so the stacked bars line up.
    axis.hist(stacks, bins=20, range=_span(values), stacked=True, color=colours, label=labels)
    axis.legend(fontsize=8)


def _span(values: list[float]) -> tuple[float, float]:
    """The histogram's range: one value alone still gets a bar of some width."""
    low, high = min(values), max(values)
    if high > low:
        return low, high
    half = 0.5 * (abs(low) or 1.0)
    return low - half, high + half


def error_against_macs(path: Path, macs: Sequence[int], errors: Sequence[float],
                       front: Sequence[int], *, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Each trial's top-1 error (%) against its multiply-adds; `front` are the indices of the
    Pareto front, cheapest first, joined as the step of the lowest error reachable at each cost."""
    figure = _figure((6.4, 4.4))
    axis = figure.add_subplot(1, 1, 1)
    axis.scatter([m / 1e9 for m in macs], errors, s=16, color=OK_COLOUR, alpha=0.6,
                 label=f"trials ({len(errors)})")
    if front:
        axis.plot([macs[i] / 1e9 for i in front], [errors[i] for i in front], color=FRONT_COLOUR,
                  marker="o", markersize=5, drawstyle="steps-post",
                  label=f"Pareto front ({len(front)})")
    axis.set(xlabel="multiply-adds (G)", ylabel="top-1 error (%)",
             title="error against multiply-adds")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path, formats)


def edf_steps(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """The EDF of `values` as the corners of a post-step: at the i-th smallest value F rises to
    (i+1)/n. It is 0 before the smallest and 1 from the largest on."""
    ordered = sorted(values)
    count = len(ordered)
    return ordered[:1] + ordered, [0.0] + [(i + 1) / count for i in range(count)]


def edf(path: Path, curves: dict[str, Sequence[float]], *, quantity: str = "top-1 error (%)",
        scale: float = 1.0, formats: Sequence[str] = ("png",)) -> list[Path]:
    """One EDF per labelled list of values (each divided by `scale` for its axis: 1e9 for
    multiply-adds in G), each labelled with its n."""
    figure = _figure((6.4, 4.4))
    axis = figure.add_subplot(1, 1, 1)
    for label, values in curves.items():
        if values:
            xs, ys = edf_steps([v / scale for v in values])
            axis.step(xs, ys, where="post", label=f"{label} (n={len(values)})")
    axis.set(xlabel=quantity, ylabel="cumulative probability", ylim=(0, 1.02),
             title=f"EDF of {quantity.split(' (')[0]}")
    axis.grid(alpha=0.3)
    if any(curves.values()):
        axis.legend(fontsize=8, loc="lower right")
    return _save(figure, path, formats)


def _figure(size: tuple[float, float]):
    require()
    plotting.matplotlib_module()
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=DPI, layout="constrained")


def _save(figure, path: Path, formats: Sequence[str]) -> list[Path]:
    """The figure as `path` with each format's suffix, each file written whole or not at all;
    SK504 when one cannot be written."""
    matplotlib = plotting.matplotlib_module()

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"figure formats are {', '.join(FORMATS)}, not {', '.join(unknown)}")
    written = []
    for kind in formats:
        target = Path(path).with_suffix(f".{kind}")
        try:
            with matplotlib.rc_context({"svg.hashsalt": _SVG_SALT}), \
                    files.atomic_path(target) as temporary:
                figure.savefig(temporary, format=kind, dpi=DPI, metadata=_METADATA[kind])
        except OSError as error:  # files.FileProblem included
            raise SkdslError(f"cannot write '{target}': {error.strerror or error}",
                             code="SK504") from None
        written.append(target)
    return written


__all__ = ["available", "require", "histograms", "error_against_macs", "edf", "edf_steps",
           "FORMATS", "DPI"]
