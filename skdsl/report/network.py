"""Reports shaped like the paper's Table 1: one row per stage, a bracket of layers per unit.

    stage  output   layers                                   params (M)  GFLOPs
    conv3  28×28    [ 1×1, 256                 ]                  1.37    1.14
                    [ SK[M=2, G=32, r=16], 256 ] × 4
                    [ 1×1, 512                 ]

Notation (the paper's, where it has one):

* conv: `7×7, 64, stride 2`; grouped `3×3, 128, G=32`; dilated `D=2`; depthwise `3×3, dw`.
* SK convolution: `SK[M=2, G=32, r=16], 128` (L and d are shown only when not the defaults);
  branches other than the paper's M 3×3 kernels with dilation 1…M are listed:
  `SK[3×3 D1 G32 | 5×5 D1 G64, r=16], 128`. Without attention (Table 7's plain sum):
  `SUM[M=2, G=32], 128`.
* squeeze-and-excitation: `SE[r=16]` (SENet writes `fc, [16, 256]`; SE[r] says the same without
  depending on the width).
* A run of consecutive blocks that read alike is shown once, as its first block's layers in a
  bracket, with `× N`. Inside brackets strides are left out, as in the paper: the first block of a
  stage downsamples. The implicit projection shortcut and a residual's add and activation are not
  listed; an explicit `shortcut:` is, as `shortcut: ...` lines.

GFLOPs here are the paper's: multiply-adds ×10⁻⁹ of convolutions and fc layers. This module is the
only place that writes millions and billions. It also writes the graph as Graphviz dot or mermaid
(`skdsl graph`). It imports rich only inside the functions that build tables, so the plain-text
helpers are free to import; it never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .. import ops
from ..core import spec as S
from ..ops.conv import conv_rows, kernel_text as _kernel

if TYPE_CHECKING:
    from ..core.analysis import Analysis

MULTIPLY_ADDS_NOTE = "GFLOPs: multiply-adds × 10⁻⁹ (conv and fc), the paper's convention"

# -- numbers ------------------------------------------------------------------------------------


def grouped(count: int) -> str:
    """27479784 -> '27,479,784'."""
    return f"{count:,}"


def millions(count: float, digits: int = 1) -> str:
    """27479784 -> '27.5M'."""
    return f"{count / 1e6:.{digits}f}M"


def giga(count: float, digits: int = 2) -> str:
    """4462710784 -> '4.46' (a count in billions, without a unit)."""
    return f"{count / 1e9:.{digits}f}"


def short_count(count: int) -> str:
    """A count in three significant digits for narrow tables: 27479784 -> '27.5M', 9536 -> '9.54k',
    4462710784 -> '4.46G'."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)


def shape_text(shape) -> str:
    """(128, 56, 56) -> '128×56×56'; (1000,) -> '1000'."""
    return "×".join(map(str, shape))


def size_text(shape) -> str:
    """A stage's output size as the paper writes it: '56×56' for a feature map, '1000' for a vector."""
    return shape_text(shape[1:]) if len(shape) == 3 else shape_text(shape)


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


# -- summary lines ------------------------------------------------------------------------------


def totals_line(analysis: "Analysis") -> str:
    """'#P 27.5M (27,479,784), GFLOPs 4.46 (4,462,710,784 multiply-adds)'."""
    cost = analysis.total
    return (f"#P {millions(cost.params)} ({grouped(cost.params)}), GFLOPs {giga(cost.mult_adds)} "
            f"({grouped(cost.mult_adds)} multiply-adds)")


def paper_lines(spec: S.Network, analysis: "Analysis") -> list[str]:
    """The paper's figures and how far ours are from them; [] when the spec quotes none.

    ['paper: 27.5M, 4.47 GFLOPs (Table 1)', 'ours − paper: -0.02M (-0.07%), -0.01 GFLOPs (-0.16%)']
    Our numbers are never adjusted: the paper counts a few small ops we leave out.
    """
    paper = spec.paper
    if paper is None or (paper.params_millions is None and paper.gflops is None):
        return []
    figures, differences = [], []
    if paper.params_millions is not None:
        figures.append(f"{_quoted(paper.params_millions, 1)}M")
        ours = analysis.total.params / 1e6
        differences.append(f"{_signed(ours - paper.params_millions, 2)}M"
                           f"{_percent(ours, paper.params_millions)}")
    if paper.gflops is not None:
        figures.append(f"{_quoted(paper.gflops, 2)} GFLOPs")
        ours = analysis.total.mult_adds / 1e9
        differences.append(f"{_signed(ours - paper.gflops, 2)} GFLOPs"
                           f"{_percent(ours, paper.gflops)}")
    source = f" ({paper.source})" if paper.source else ""
    lines = [f"paper: {', '.join(figures)}{source}", f"ours − paper: {', '.join(differences)}"]
    if tuple(analysis.input) != tuple(spec.input):
        lines.append(f"the paper's figures are for {shape_text(spec.input)} input, "
                     f"ours for {shape_text(analysis.input)}")
    return lines


def _percent(ours: float, theirs: float) -> str:
    """' (-0.07%)': our relative difference, when the paper's figure allows one."""
    return f" ({_signed(100 * (ours / theirs - 1), 2)}%)" if theirs > 0 else ""


def _quoted(value: float, digits: int) -> str:
    """A figure as the paper prints it: 25.0 stays '25.0', 27.48 is not cut to '27.5'."""
    text = f"{value:.{digits}f}"
    return text if float(text) == value else f"{value:g}"


def summary_line(analysis: "Analysis") -> str:
    """One line for `skdsl build`: name, counts, input and output."""
    cost = analysis.total
    return (f"{analysis.network}: {grouped(cost.params)} params ({millions(cost.params)}), "
            f"{grouped(cost.mult_adds)} multiply-adds ({giga(cost.mult_adds)} GFLOPs), "
            f"{shape_text(analysis.input)} → {shape_text(analysis.output)}")


def check_line(analysis: "Analysis") -> str:
    """'ok: sknet50 — 27,479,784 params, 4,462,710,784 multiply-adds' for `skdsl check`."""
    return (f"ok: {analysis.network} — {grouped(analysis.total.params)} params, "
            f"{grouped(analysis.total.mult_adds)} multiply-adds")


# -- the paper's notation for a spec item --------------------------------------------------------


def item_lines(item, *, in_block: bool = False) -> list[str]:
    """The lines a spec item takes in a Table 1 cell; strides are left out inside blocks.
    Primitive layers' lines are their registry entry's (ops.ROWS); composites are read here."""
    kind = item.kind
    rows = ops.ROWS.get(kind)
    if rows is not None:
        return rows(item, in_block)
    if kind == "conv":
        return [conv_rows(item, show_stride=not in_block)]
    if kind == "sk":
        return [_sk_text(item, show_stride=not in_block)]
    if kind == "se":
        return [f"SE[r={item.reduction_ratio}]"]
    if kind == "split":
        sizes = f" {', '.join(map(str, item.sizes))}" if item.sizes else f" {len(item.outputs)}"
        return [f"split{sizes} → {', '.join(item.outputs)}"]
    if kind == "branch":
        return [f"{item.name}: {line}" for line in _body_lines(item.body, in_block)]
    if kind == "residual":
        lines = _body_lines(item.body, in_block)
        if item.shortcut is not None:
            lines += [f"{item.shortcut_name}: {line}"
                      for line in _body_lines(item.shortcut, in_block)]
        return lines
    if kind == "block":
        return _body_lines(item.body, True)
    return [kind]  # a kind added to the spec after this report: at least name it


def _body_lines(items, in_block: bool) -> list[str]:
    return [line for item in items for line in item_lines(item, in_block=in_block)]


def _groups_text(groups) -> str:
    return "dw" if groups == "depthwise" else str(groups)


def _paper_branches(sk: S.SelectiveKernel) -> bool:
    """The paper's shorthand applies: M 3×3 branches with dilation 1 … M, all with one G."""
    return (all(b.kernel == (3, 3) and b.dilation == m
                for m, b in enumerate(sk.branches, start=1))
            and len({b.groups for b in sk.branches}) == 1)


def _sk_text(sk: S.SelectiveKernel, show_stride: bool) -> str:
    options = []
    if _paper_branches(sk):
        options += [f"M={len(sk.branches)}", f"G={_groups_text(sk.branches[0].groups)}"]
    else:
        options.append(" | ".join(f"{_kernel(b.kernel)} D{b.dilation} G{_groups_text(b.groups)}"
                                  for b in sk.branches))
    if sk.attention:
        options.append(f"r={sk.reduction_ratio}")
        if sk.min_attention_width != S.MIN_ATTENTION_WIDTH:
            options.append(f"L={sk.min_attention_width}")
        if sk.attention_width_override is not None:
            options.append(f"d={sk.attention_width_override}")
        options += _changed_attention_fcs(sk)
    if sk.split_input:
        options.append("split")
    text = f"{'SK' if sk.attention else 'SUM'}[{', '.join(options)}], {sk.out_channels}"
    return f"{text}, stride {sk.stride}" if show_stride and sk.stride > 1 else text


def _changed_attention_fcs(sk: S.SelectiveKernel) -> list[str]:
    """The attention fcs' options that differ from the paper's (no bias, 1 group, BN + ReLU),
    spelt as the language writes them."""
    defaults = S.SelectiveKernel.model_fields
    written = {"attention_bias": "fc_bias", "attention_groups": "fc_groups",
               "attention_norm": "fc_bn", "attention_act": "fc_act"}
    spell = {True: "yes", False: "no"}
    return [f"{word}={spell.get(value, value)}" for field, word in written.items()
            if (value := getattr(sk, field)) != defaults[field].default]


# -- Table 1 -------------------------------------------------------------------------------------


def stage_entries(stage: S.Stage) -> list[tuple[list[str], int | None]]:
    """A stage's cell as entries: (lines, None) for a plain item, (lines, N) for a run of N blocks.

    Consecutive blocks of one template whose layers read alike (strides are not shown) form a run.
    """
    entries: list[tuple[list[str], int | None]] = []
    run_key = None
    for item in stage.body:
        if item.kind == "block":
            lines = item_lines(item, in_block=True)
            key = (item.template, tuple(lines))
            if key == run_key:
                entries[-1] = (entries[-1][0], entries[-1][1] + 1)
                continue
            entries.append((lines, 1))
            run_key = key
        else:
            entries.extend(([line], None) for line in item_lines(item))
            run_key = None
    return entries


def bracket(lines: list[str], count: int) -> list[str]:
    """Lines in a bracket with '× N' beside its middle line, as Table 1 draws a unit."""
    width = max((len(line) for line in lines), default=0)
    middle = (len(lines) - 1) // 2
    return [f"[ {line.ljust(width)} ]" + (f" × {count}" if index == middle else "")
            for index, line in enumerate(lines or [""])]


def stage_cell(stage: S.Stage) -> str:
    """The layers column of a stage's row, as plain text (one line per layer)."""
    lines: list[str] = []
    for entry_lines, count in stage_entries(stage):
        lines += entry_lines if count is None else bracket(entry_lines, count)
    return "\n".join(lines)


def stage_table(spec: S.Network, analysis: "Analysis", latency=None) -> "FittedTable":
    """The rich table of a network in the layout of the paper's Table 1, totals in its caption;
    with `latency` (a core.latency.Prediction) a column of predicted milliseconds."""
    parts = {part.name: part for part in analysis.stages}
    found = [parts.get(stage.name) for stage in spec.stages]
    total = analysis.total
    columns = [
        Column("stage", [stage.name for stage in spec.stages] + ["total"]),
        Column("output", [size_text(part.output) if part else "—" for part in found] +
               [size_text(analysis.output)], drop_order=1),
        Column("layers", [stage_cell(stage) for stage in spec.stages] + [""], wrap=True),
        Column("params (M)", [f"{part.cost.params / 1e6:.2f}" if part else "0.00"
                              for part in found] + [f"{total.params / 1e6:.2f}"],
               justify="right"),
        # the caption says that GFLOPs are multiply-adds: a narrow header may leave it out
        Column("GFLOPs\n(mult-adds)", [giga(part.cost.mult_adds) if part else "0.00"
                                       for part in found] + [giga(total.mult_adds)],
               compact_header="GFLOPs", justify="right"),
    ]
    if latency is not None:
        columns.append(latency_column([stage.name for stage in spec.stages], latency.stages,
                                      latency.total))
    return FittedTable(columns, title=f"{analysis.network} — {shape_text(analysis.input)} → "
                                      f"{shape_text(analysis.output)}",
                       caption=caption_lines(spec, analysis), show_lines=True,
                       row_styles=[""] * len(spec.stages) + ["bold"],
                       wrap_before_dropping=False)  # a wrapped bracket reads worse than no sizes


def caption_lines(spec: S.Network, analysis: "Analysis") -> list[str]:
    """Table 1's caption: our totals, the paper's figures and our difference, the convention."""
    return [totals_line(analysis), *paper_lines(spec, analysis), MULTIPLY_ADDS_NOTE]


def latency_column(names: list[str], seconds: dict[str, float], total: float) -> "Column":
    """Predicted milliseconds of the named parts, then of the whole network."""
    return Column("ms\n(predicted)", [f"{seconds.get(name, 0.0) * 1e3:.2f}" for name in names] +
                  [f"{total * 1e3:.2f}"], compact_header="ms", justify="right")


def layer_table(analysis: "Analysis", latency=None) -> "FittedTable":
    """Every layer of the network: full name, output shape, exact parameters and multiply-adds;
    with `latency` (a core.latency.Prediction) their predicted milliseconds."""
    layers, total = analysis.layers, analysis.total
    params = [part.cost.params for part in layers] + [total.params]
    mult_adds = [part.cost.mult_adds for part in layers] + [total.mult_adds]
    columns = [
        Column("layer", [part.name for part in layers] + ["total"]),
        Column("output", [shape_text(part.output) for part in layers] +
               [shape_text(analysis.output)], drop_order=1),
        Column("params", [grouped(n) for n in params], compact=[short_count(n) for n in params],
               justify="right"),
        Column("multiply-adds", [grouped(n) for n in mult_adds],
               compact=[short_count(n) for n in mult_adds], compact_header="mult-adds",
               justify="right"),
    ]
    if latency is not None:
        columns.append(latency_column([part.name for part in layers], latency.layers,
                                      latency.total))
    return FittedTable(columns, title=f"{analysis.network} — layers", section_before_last=True,
                       row_styles=[""] * len(layers) + ["bold"])


# -- tables that fit the terminal -----------------------------------------------------------------


@dataclass
class Column:
    """A column of a `FittedTable`: its cells as written and, for a narrow console, shorter."""

    header: str
    cells: list[str]
    compact: list[str] | None = None  # 27.5M for 27,479,784
    compact_header: str | None = None
    justify: str = "left"
    wrap: bool = False  # when narrow, its cells may break between words (a number never does)
    drop_order: int | None = None  # left out 1st, 2nd, ... when nothing else fits; None: never

    def texts(self, compact: bool) -> tuple[str, list[str]]:
        if not compact:
            return self.header, self.cells
        return self.compact_header or self.header, self.compact or self.cells


class FittedTable:
    """A rich table that fits the console's width without cutting a number: as written if that
    fits; else with compact numbers (27.5M) and wrapping only between words; else without its
    least useful columns, which the caption then names; else, when not even the columns that are
    never left out fit, as a list of `header: value` lines (`layout` decides). Rich alone would
    cut cells to `2…`."""

    def __init__(self, columns: list[Column], *, title: str, caption: list[str] = (),
                 row_styles: list[str] | None = None, show_lines: bool = False,
                 section_before_last: bool = False, wrap_before_dropping: bool = True):
        self.columns, self.title, self.caption = columns, title, list(caption)
        self.row_count = len(columns[0].cells)
        self.row_styles = row_styles or [""] * self.row_count
        self.show_lines, self.section_before_last = show_lines, section_before_last
        self.wrap_before_dropping = wrap_before_dropping

    def layouts(self):
        """(compact, wrap, columns left out), from the fullest layout to the narrowest."""
        droppable = sorted((c for c in self.columns if c.drop_order is not None),
                           key=lambda c: c.drop_order)
        left_out = [droppable[:count] for count in range(len(droppable) + 1)]
        yield False, False, []
        if self.wrap_before_dropping:
            yield from ((True, wrap, dropped) for dropped in left_out for wrap in (False, True))
        else:
            yield from ((True, wrap, dropped) for wrap in (False, True) for dropped in left_out)

    def layout(self, max_width: int):
        """The fullest layout that fits `max_width`, as (compact, wrap, columns left out, their
        widths); None when none does and the table is to be a list."""
        # Title and caption wrap at the table's width, and rich folds a word longer than that.
        if _words_width("\n".join([self.title, *self.caption])) > max_width:
            return None
        for compact, wrap, dropped in self.layouts():
            columns = [column for column in self.columns if column not in dropped]
            widths = fit_widths(columns, compact, wrap, max_width)
            if widths is not None:
                return compact, wrap, dropped, widths
        return None

    def __rich_console__(self, console, options):
        layout = self.layout(options.max_width)
        if layout is None:
            yield self._listed()
        else:
            yield self._table(*layout, options.max_width)

    def _table(self, compact, wrap, dropped, widths, max_width):
        from rich.table import Table
        from rich.text import Text

        columns = [column for column in self.columns if column not in dropped]
        caption = list(self.caption)
        if dropped:
            names = ", ".join(column.header.replace("\n", " ") for column in dropped)
            caption.append(f"left out at this width: {names}")
        longest = max(map(len, caption), default=0)
        # The caption wraps at the table's width: keep the table as wide as its lines, if it can.
        table = Table(title=self.title, title_justify="left", caption="\n".join(caption),
                      caption_justify="left", show_lines=self.show_lines,
                      min_width=min(longest + 2, max_width) if caption else None)
        texts = [column.texts(compact) for column in columns]
        for column, (header, _), width in zip(columns, texts, widths):
            # The widths hold every number whole and a header wraps only between words. Should
            # rich squeeze a column all the same, fold shows every digit: its no_wrap would crop
            # a cell and its default overflow would end it in `…`.
            table.add_column(header, justify=column.justify, width=width, overflow="fold")
        for index in range(self.row_count):
            if self.section_before_last and index == self.row_count - 1:
                table.add_section()
            table.add_row(*(Text(cells[index], style=self.row_styles[index])
                            for _, cells in texts))
        return table

    def _listed(self):
        """Every row as its first cell, then a `header: value` line per other cell (a cell of
        several lines below its header), all cells as written: a console too narrow for any
        table gets lines as long as they must be, which only a printer that does not crop
        (commands/output.print_rich) leaves whole."""
        from rich.text import Text

        first, *others = self.columns
        lines = [Text(self.title)]
        for index in range(self.row_count):
            heading = first.cells[index]
            lines.append(Text(heading, style=self.row_styles[index]))
            # below its heading, which may be indented itself (compare's stage rows)
            pad = " " * (len(heading) - len(heading.lstrip(" ")) + 2)
            for column in others:
                header, cell = column.header.replace("\n", " "), column.cells[index]
                if "\n" in cell:
                    lines += [Text(f"{pad}{header}:"),
                              *(Text(f"{pad}  {line}") for line in cell.split("\n"))]
                elif cell:
                    lines.append(Text(f"{pad}{header}: {cell}"))
        lines += map(Text, self.caption)
        listed = Text("\n").join(lines)
        listed.no_wrap, listed.overflow = True, "ignore"
        return listed


TABLE_EDGES = 1  # rich's default box: a border left of every column and one at the right end
CELL_PADDING = 2  # one space each side of a cell


def fit_widths(columns: list[Column], compact: bool, wrap: bool,
               max_width: int) -> list[int] | None:
    """Column widths that fit `max_width`, or None. As written, every line whole; compact, every
    header may break between words, and with `wrap` so may the cells of a wrapping column."""
    room = max_width - TABLE_EDGES - len(columns) * (CELL_PADDING + 1)
    natural, least = column_widths(columns, compact, wrap)
    if sum(natural) <= room:
        return natural
    if sum(least) > room:
        return None
    widths, spare = list(least), room - sum(least)
    for index in sorted(range(len(columns)), key=lambda i: least[i] - natural[i]):
        grant = min(spare, natural[index] - widths[index])  # the most wanting first
        widths[index] += grant
        spare -= grant
    return widths


def column_widths(columns: list[Column], compact: bool,
                  wrap: bool) -> tuple[list[int], list[int]]:
    """Each column's width unwrapped, and the least it can take without cutting a word."""
    natural, least = [], []
    for column in columns:
        header, cells = column.texts(compact)
        natural.append(max([_lines_width(header), *map(_lines_width, cells)]))
        body = map(_words_width if wrap and column.wrap else _lines_width, cells)
        least.append(max([_words_width(header) if compact else _lines_width(header), *body]))
    return natural, least


def _lines_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.split("\n")), default=0)


def _words_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(word) for word in text.split()), default=0)


# -- diagrams of the graph (skdsl graph) ----------------------------------------------------------

MERMAID_EDGE_LIMIT = 500  # mermaid's default maxEdges: larger diagrams do not render


def op_text(node) -> str:
    """A node's op in a few characters: 'conv2d 3×3/2 G32', 'max_pool 3×3/2', 'linear 2048→1000'
    (its registry entry's `text`)."""
    return node["attrs"].text()


def diagram(graph, depth: int | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """The boxes and arrows of a diagram: nodes merged into their first `depth` name parts.

    Each box: {"name", "stage", "lines"} where lines are its label (name, what it does, its output
    shape). Boxes and arrows come in execution order; an arrow joins two different boxes.
    """
    def group(name: str) -> str:
        return name if depth is None else ".".join(name.split(".")[:depth])

    members: dict[str, list[str]] = {}
    for name in graph.nodes:
        members.setdefault(group(name), []).append(name)
    blocks = graph.graph.get("blocks", {})
    boxes = []
    for key, names in members.items():
        nodes = [graph.nodes[name] for name in names]
        last = nodes[-1]
        if names == [key]:
            what = op_text(last) if last["op"] != "input" else "input"
        elif key in blocks:
            what = blocks[key]
        elif len(nodes) <= 3:
            what = " · ".join(op_text(node) for node in nodes)
        else:
            what = _summary(graph, key, names, blocks)
        shape = ", ".join(shape_text(s) for s in last["out_shapes"])
        lines = [key, shape] if what == key else [key, what, shape]
        boxes.append({"name": key, "stage": nodes[0]["stage"], "lines": lines})
    edges: dict[tuple[str, str], None] = {}
    for name, data in graph.nodes(data=True):
        for source, _port in data["inputs"]:
            edge = (group(source), group(name))
            if edge[0] != edge[1]:
                edges[edge] = None
    return boxes, list(edges)


def _summary(graph, key: str, names: list[str], blocks: dict) -> str:
    """What a merged box holds, by its parts one level down: 'max_pool 3×3/2 · 3 × sk_unit'."""
    depth = key.count(".") + 2
    parts: dict[str, list[str]] = {}
    for name in names:
        parts.setdefault(".".join(name.split(".")[:depth]), []).append(name)
    words = []
    for part, members in parts.items():
        if part in blocks:
            words.append(blocks[part])
        elif members == [part]:
            words.append(op_text(graph.nodes[part]))
        else:
            words.append(part.rsplit(".", 1)[-1])
    runs: list[list] = []  # consecutive equal words, counted
    for word in words:
        if runs and runs[-1][0] == word:
            runs[-1][1] += 1
        else:
            runs.append([word, 1])
    if len(runs) > 4:
        return f"{len(names)} ops"
    return " · ".join(word if count == 1 else f"{count} × {word}" for word, count in runs)


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(graph, depth: int | None = None) -> str:
    """Graphviz source: a box per node (name, op, shape), a cluster per stage, edges in order."""
    boxes, edges = diagram(graph, depth)
    title = f"{graph.graph['network']} — {shape_text(graph.graph['input'])}"
    lines = [f"digraph {_dot_quote(graph.graph['network'])} {{",
             f"  graph [rankdir=TB, labelloc=t, fontname=Helvetica, label={_dot_quote(title)}];",
             "  node [shape=box, style=rounded, fontname=Helvetica, fontsize=10];",
             "  edge [arrowsize=0.6];"]

    def box_statement(box: dict) -> str:
        return f"{_dot_quote(box['name'])} [label={_dot_quote(chr(10).join(box['lines']))}];"

    def cluster(stage: str) -> list[str]:
        return [f"subgraph {_dot_quote('cluster_' + stage)} {{",
                f"  label={_dot_quote(stage)}; style=dashed; color=gray50;"]

    lines += _clustered(boxes, box_statement, cluster, "}")
    lines += [f"  {_dot_quote(a)} -> {_dot_quote(b)};" for a, b in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    """Label text for mermaid's ["..."]: entity codes for the characters it would parse."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


def to_mermaid(graph, depth: int | None = None) -> str:
    """A mermaid flowchart: ids without dots (n_conv1_conv), a subgraph per stage."""
    import re

    boxes, edges = diagram(graph, depth)
    ids: dict[str, str] = {}
    used: set[str] = set()

    def identifier(name: str, prefix: str) -> str:
        base = prefix + re.sub(r"[^A-Za-z0-9_]", "_", name)
        candidate, number = base, 1
        while candidate in used:  # 'a.b_c' and 'a_b.c' would meet
            number += 1
            candidate = f"{base}_{number}"
        used.add(candidate)
        return candidate

    for box in boxes:
        ids[box["name"]] = identifier(box["name"], "n_")
    lines = ["flowchart TD"]

    def box_statement(box: dict) -> str:
        return f'{ids[box["name"]]}["{"<br/>".join(map(_mermaid_text, box["lines"]))}"]'

    def cluster(stage: str) -> list[str]:
        return [f'subgraph {identifier(stage, "s_")}["{_mermaid_text(stage)}"]']

    lines += _clustered(boxes, box_statement, cluster, "end")
    lines += [f"  {ids[a]} --> {ids[b]}" for a, b in edges]
    return "\n".join(lines) + "\n"


__all__ = [
    "stage_table", "layer_table", "stage_entries", "stage_cell", "item_lines", "bracket",
    "totals_line", "paper_lines", "caption_lines", "summary_line", "check_line", "grouped", "millions", "giga",
    "shape_text", "size_text", "MULTIPLY_ADDS_NOTE", "op_text", "diagram", "to_dot", "to_mermaid",
    "MERMAID_EDGE_LIMIT", "short_count", "Column", "FittedTable", "fit_widths",
]


def _clustered(boxes: list[dict], statement: Callable[[dict], str],
               opening: Callable[[str], list[str]], closing: str) -> list[str]:
    """A diagram's box statements, indented, those of each stage inside a cluster (its
    `opening` lines and `closing`); the input's outside any."""
    lines = []
    for stage, members in _by_stage(boxes).items():
        statements = [statement(box) for box in members]
        if stage == "input":
            lines += [f"  {line}" for line in statements]
            continue
        lines += [f"  {line}" for line in opening(stage)]
        lines += [f"    {line}" for line in statements]
        lines.append(f"  {closing}")
    return lines


def _by_stage(boxes: list[dict]) -> dict[str, list[dict]]:
    """The diagram's boxes grouped by stage, in order: a cluster (dot) or subgraph (mermaid) each."""
    groups: dict[str, list[dict]] = {}
    for box in boxes:
        groups.setdefault(box["stage"], []).append(box)
    return groups
