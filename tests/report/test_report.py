"""skdsl/report/network.py: the paper's notation, Table 1 layout, totals beside the paper's, diagrams."""

import io
import re
import subprocess
import sys

import pytest
from rich.console import Console

import skdsl
from skdsl.report import network as report
from skdsl.core import spec as S
from skdsl.commands import main
from skdsl.base.terminal import MAX_WIDTH, PIPED_WIDTH, console_width


@pytest.fixture(scope="module")
def sknet50():
    spec = skdsl.load("specs/sknet50.sk")
    return spec, skdsl.analyze(spec)


def render(renderable, width: int = 200) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def conv(name="conv", kernel=3, out=64, **options):
    return S.Conv(name=name, kernel=(kernel, kernel), out_channels=out, **options)


def sk(branches, **options):
    return S.SelectiveKernel(name="sk", out_channels=128, branches=branches, **options)


def paper_branches(count, groups=32):
    return [S.KernelBranch(dilation=d, groups=groups) for d in range(1, count + 1)]


# -- numbers ------------------------------------------------------------------------------------


def test_number_formats():
    assert report.grouped(27479784) == "27,479,784"
    assert report.millions(27479784) == "27.5M"
    assert report.millions(27479784, 2) == "27.48M"
    assert report.giga(4462710784) == "4.46"
    assert report.shape_text((128, 56, 56)) == "128×56×56"
    assert report.size_text((128, 56, 56)) == "56×56"
    assert report.size_text((1000,)) == "1000"
    assert report.size_text((2048, 1, 1)) == "1×1"


def test_totals_line(sknet50):
    assert report.totals_line(sknet50[1]) == (
        "#P 27.5M (27,479,784), GFLOPs 4.46 (4,462,710,784 multiply-adds)")


def test_paper_lines_quote_the_paper_and_our_difference(sknet50):
    assert report.paper_lines(*sknet50) == [
        "paper: 27.5M, 4.47 GFLOPs (Table 1)",
        "ours − paper: -0.02M (-0.07%), -0.01 GFLOPs (-0.16%)",
    ]


def test_paper_lines_keep_the_papers_precision():
    spec = skdsl.load("specs/resnext50_32x4d.sk")
    lines = report.paper_lines(spec, skdsl.analyze(spec))
    assert lines[0] == "paper: 25.0M, 4.24 GFLOPs (Table 1)"
    assert lines[1] == "ours − paper: +0.03M (+0.12%), -0.01 GFLOPs (-0.22%)"


def test_paper_lines_say_when_the_input_differs(sknet50):
    spec = sknet50[0]
    lines = report.paper_lines(spec, skdsl.analyze(spec, (3, 320, 320)))
    assert lines[-1] == "the paper's figures are for 3×224×224 input, ours for 3×320×320"


def test_no_paper_lines_without_figures():
    spec = skdsl.load("specs/sknet26.sk")
    assert spec.paper is None
    assert report.paper_lines(spec, skdsl.analyze(spec)) == []


def test_paper_figures_of_one_kind_only(sknet50):
    spec, analysis = sknet50
    only = spec.model_copy(update={"paper": S.PaperFigures(params_millions=27.0, gflops=None)})
    assert report.paper_lines(only, analysis) == ["paper: 27.0M", "ours − paper: +0.48M (+1.78%)"]


def test_paper_figures_must_be_positive():
    with pytest.raises(ValueError):
        S.PaperFigures(params_millions=0.0)


def test_summary_and_check_lines(sknet50):
    analysis = sknet50[1]
    assert report.summary_line(analysis) == (
        "sknet50: 27,479,784 params (27.5M), 4,462,710,784 multiply-adds (4.46 GFLOPs), "
        "3×224×224 → 1000")
    assert report.check_line(analysis) == (
        "ok: sknet50 — 27,479,784 params, 4,462,710,784 multiply-adds")


# -- notation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("item, in_block, lines", [
    (conv(kernel=7, out=64, stride=2), False, ["7×7, 64, stride 2"]),
    (conv(kernel=7, out=64, stride=2), True, ["7×7, 64"]),
    (conv(out=128, groups=32), True, ["3×3, 128, G=32"]),
    (conv(out=128, dilation=2), True, ["3×3, 128, D=2"]),
    (S.Conv(name="dw", kernel=(3, 3), out_channels=None, groups="depthwise"), True, ["3×3, dw"]),
    (sk(paper_branches(2)), True, ["SK[M=2, G=32, r=16], 128"]),
    (sk(paper_branches(3, 64), reduction_ratio=8), True, ["SK[M=3, G=64, r=8], 128"]),
    (sk(paper_branches(2), min_attention_width=64, attention_width_override=48), True,
     ["SK[M=2, G=32, r=16, L=64, d=48], 128"]),
    (sk(paper_branches(2), stride=2), False, ["SK[M=2, G=32, r=16], 128, stride 2"]),
    (sk(paper_branches(2), attention=False), True, ["SUM[M=2, G=32], 128"]),
    (sk(paper_branches(2), split_input=True), True, ["SK[M=2, G=32, r=16, split], 128"]),
    (sk(paper_branches(2), attention_bias=True, attention_groups=4, attention_norm=False,
        attention_act="sigmoid"), True,
     ["SK[M=2, G=32, r=16, fc_bias=yes, fc_groups=4, fc_bn=no, fc_act=sigmoid], 128"]),
    (sk([S.KernelBranch(kernel=(3, 3), groups=32), S.KernelBranch(kernel=(5, 5), groups=64)]),
     True, ["SK[3×3 D1 G32 | 5×5 D1 G64, r=16], 128"]),
    (sk([S.KernelBranch(dilation=1, groups=32), S.KernelBranch(dilation=2, groups=16)]),
     True, ["SK[3×3 D1 G32 | 3×3 D2 G16, r=16], 128"]),
    (S.SqueezeExcite(name="se", reduction_ratio=16), True, ["SE[r=16]"]),
    (S.Pool(name="pool", mode="max", kernel=(3, 3), stride=2), False, ["3×3 max pool, stride 2"]),
    (S.GlobalPool(name="pool"), False, ["global average pool"]),
    (S.GlobalPool(name="pool", mode="max"), False, ["global max pool"]),
    (S.Linear(name="fc", out_features=1000), False, ["fc, 1000"]),
    (S.Dropout(name="dropout", p=0.2), False, ["dropout, p=0.2"]),
    (S.ChannelShuffle(name="shuffle", groups=2), True, ["channel shuffle, G=2"]),
    (S.ChannelSplit(name="split", outputs=["a", "b"]), True, ["split 2 → a, b"]),
    (S.Merge(name="concat", kind="concat", inputs=["a", "b"]), True, ["concat(a, b)"]),
    (S.Activation(name="act", function="none"), True, []),
])
def test_item_lines(item, in_block, lines):
    assert report.item_lines(item, in_block=in_block) == lines


def test_residual_lists_its_body_and_an_explicit_shortcut_only():
    implicit = S.Residual(body=[conv("conv1", 1, 128), conv("conv2", 1, 256, act="none")])
    assert report.item_lines(implicit, in_block=True) == ["1×1, 128", "1×1, 256"]
    explicit = implicit.model_copy(update={"shortcut": [conv("proj", 1, 256, stride=2)]})
    assert report.item_lines(explicit, in_block=True) == [
        "1×1, 128", "1×1, 256", "shortcut: 1×1, 256"]


def test_branches_are_prefixed_with_their_name():
    branch = S.Branch(name="left", body=[conv("a", 1, 32), conv("b", 3, 32, groups=4)])
    assert report.item_lines(branch, in_block=True) == ["left: 1×1, 32", "left: 3×3, 32, G=4"]


def test_a_stage_groups_runs_of_alike_blocks(sknet50):
    spec = sknet50[0]
    assert report.stage_entries(spec.stages[0]) == [(["7×7, 64, stride 2"], None)]
    assert report.stage_entries(spec.stages[1]) == [
        (["3×3 max pool, stride 2"], None),
        (["1×1, 128", "SK[M=2, G=32, r=16], 128", "1×1, 256"], 3),
    ]
    # conv3's first block has stride 2 and a projection; it still reads like the other three
    assert [count for _, count in report.stage_entries(spec.stages[2])] == [4]
    assert report.stage_entries(spec.stages[-1]) == [
        (["global average pool"], None), (["fc, 1000"], None)]


def test_blocks_that_read_differently_are_separate_runs():
    def unit(name, width):
        return S.Block(name=name, template="unit", body=[S.Residual(body=[conv("c", 1, width)])])

    stage = S.Stage(name="s", body=[unit("block1", 64), unit("block2", 64), unit("block3", 32)])
    assert report.stage_entries(stage) == [(["1×1, 64"], 2), (["1×1, 32"], 1)]


def test_bracket_puts_the_count_beside_the_middle_line():
    assert report.bracket(["1×1, 128", "SK[M=2, G=32, r=16], 128", "1×1, 256"], 3) == [
        "[ 1×1, 128                 ]",
        "[ SK[M=2, G=32, r=16], 128 ] × 3",
        "[ 1×1, 256                 ]",
    ]
    assert report.bracket(["fc, 10"], 1) == ["[ fc, 10 ] × 1"]


def test_other_networks_in_the_papers_notation():
    resnext = skdsl.load("specs/resnext50_32x4d.sk")
    assert report.stage_entries(resnext.stages[2]) == [
        (["1×1, 256", "3×3, 256, G=32", "1×1, 512"], 4)]
    senet = skdsl.load("specs/senet50.sk")
    assert report.stage_entries(senet.stages[4]) == [
        (["1×1, 1024", "3×3, 1024, G=32", "1×1, 2048", "SE[r=16]"], 3)]


# -- tables -------------------------------------------------------------------------------------


def test_stage_table_is_table_1(sknet50):
    table = report.stage_table(*sknet50)
    assert table.row_count == len(sknet50[0].stages) + 1  # and the total
    text = render(table)
    for expected in ("conv1", "112×112", "7×7, 64, stride 2", "3×3 max pool, stride 2",
                     "[ SK[M=2, G=32, r=16], 128 ] × 3", "[ SK[M=2, G=32, r=16], 1024 ] × 3",
                     "× 4", "× 6", "global average pool", "fc, 1000", "7×7", "16.03", "1.61",
                     "27.48", "4.46", "multiply-adds",
                     "#P 27.5M (27,479,784), GFLOPs 4.46 (4,462,710,784 multiply-adds)",
                     "paper: 27.5M, 4.47 GFLOPs (Table 1)"):
        assert expected in text, expected


def test_stage_table_caption_does_not_wrap_on_a_narrow_network():
    spec = skdsl.parse("network tiny:\n    input 3x8x8\n    stage a: conv 3x3, 8\n"
                       "    stage b:\n        avgpool global\n        fc 10\n")
    text = render(report.stage_table(spec, skdsl.analyze(spec)), width=120)
    assert "#P 0.0M (322), GFLOPs 0.00 (13,904 multiply-adds)" in text


def test_layer_table_lists_every_layer(sknet50):
    analysis = sknet50[1]
    table = report.layer_table(analysis)
    assert table.row_count == len(analysis.layers) + 1
    text = render(table)
    assert "conv3.block1.sk.branch2" in text and "head.fc" in text
    assert "27,479,784" in text and "4,462,710,784" in text


def test_report_imports_neither_torch_nor_rich_until_it_draws():
    code = ("import sys, skdsl, skdsl.report.network as r; "
            "s = skdsl.load('specs/sknet50.sk'); a = skdsl.analyze(s); r.totals_line(a); "
            "r.to_dot(skdsl.lower(s)); assert 'rich' not in sys.modules; "
            "r.stage_table(s, a); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- diagrams -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sknet50_graph(sknet50):
    return skdsl.lower(sknet50[0])


def test_op_text(sknet50_graph):
    nodes = sknet50_graph.nodes
    assert report.op_text(nodes["conv1.conv.conv"]) == "conv2d 7×7/2"
    assert report.op_text(nodes["conv3.block1.sk.branch1.conv"]) == "conv2d 3×3/2 G32"
    assert report.op_text(nodes["conv3.block1.sk.branch2.conv"]) == "conv2d 3×3/2 G32 D2"
    assert report.op_text(nodes["conv2.pool"]) == "max_pool 3×3/2"
    assert report.op_text(nodes["head.fc"]) == "linear 2048→1000"
    assert report.op_text(nodes["conv2.block1.sk.select"]) == "select M=2"


def test_diagram_depth_two_shows_blocks(sknet50_graph):
    boxes, edges = report.diagram(sknet50_graph, 2)
    names = [box["name"] for box in boxes]
    assert names[:4] == ["input", "conv1.conv", "conv2.pool", "conv2.block1"]
    assert len(names) == 21 and len(edges) == 20  # a chain: stem, pool, 16 blocks, head
    block = boxes[3]
    assert block == {"name": "conv2.block1", "stage": "conv2",
                     "lines": ["conv2.block1", "sk_unit", "256×56×56"]}


def test_diagram_depth_one_summarises_stages(sknet50_graph):
    boxes, edges = report.diagram(sknet50_graph, 1)
    assert [box["lines"] for box in boxes] == [
        ["input", "3×224×224"],
        ["conv1", "conv2d 7×7/2 · batchnorm · act relu", "64×112×112"],
        ["conv2", "max_pool 3×3/2 · 3 × sk_unit", "256×56×56"],
        ["conv3", "4 × sk_unit", "512×28×28"],
        ["conv4", "6 × sk_unit", "1024×14×14"],
        ["conv5", "3 × sk_unit", "2048×7×7"],
        ["head", "global_pool avg · linear 2048→1000", "1000"],
    ]
    assert edges == [("input", "conv1"), ("conv1", "conv2"), ("conv2", "conv3"),
                     ("conv3", "conv4"), ("conv4", "conv5"), ("conv5", "head")]
    assert report.diagram(sknet50_graph, 3)[0][6]["lines"] == [
        "conv2.block1.sk", "13 ops", "128×56×56"]


def test_full_diagram_has_every_node_and_edge(sknet50_graph):
    boxes, edges = report.diagram(sknet50_graph)
    assert len(boxes) == sknet50_graph.number_of_nodes()
    assert set(edges) == set(sknet50_graph.edges)


def test_dot_source(sknet50_graph):
    dot = report.to_dot(sknet50_graph, 2)
    assert dot.startswith('digraph "sknet50" {') and dot.endswith("}\n")
    assert 'subgraph "cluster_conv3" {' in dot
    assert '"conv3.block1" [label="conv3.block1\\nsk_unit\\n512×28×28"];' in dot
    assert '"conv3.block4" -> "conv4.block1";' in dot
    assert dot.count("{") == dot.count("}")


def test_mermaid_source(sknet50_graph):
    text = report.to_mermaid(sknet50_graph)
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert ('    n_conv3_block1_sk_branch1_conv["conv3.block1.sk.branch1.conv<br/>'
            'conv2d 3×3/2 G32<br/>256×28×28"]') in lines
    assert "  n_input --> n_conv1_conv_conv" in lines
    ids = [line.split("[")[0].strip() for line in lines if "[" in line and "subgraph" not in line]
    assert all("." not in identifier for identifier in ids)
    assert len(ids) == len(set(ids)) == sknet50_graph.number_of_nodes()
    assert text.count("subgraph") == text.count("  end") == 6


def test_diagrams_escape_names():
    spec = S.Network(name='say "hi"', input=(3, 8, 8), stages=[
        S.Stage(name="a", body=[conv("x", 1, 8)]), S.Stage(name="a_x", body=[conv("conv", 1, 8)])])
    graph = skdsl.lower(spec)
    assert 'digraph "say \\"hi\\"" {' in report.to_dot(graph)
    mermaid = report.to_mermaid(graph, 2)
    # 'a.x' and 'a_x.conv' both want the id n_a_x: the second gets a number
    assert 'n_a_x["a.x<br/>' in mermaid and "n_a_x_conv" in mermaid
    assert report._mermaid_text('x"<y>#') == "x#quot;#lt;y#gt;#35;"


# -- tables that fit the terminal ------------------------------------------------------------------


@pytest.mark.parametrize("width", [80, 60])
def test_tables_fit_without_cutting_a_number(sknet50, width):
    spec, analysis = sknet50
    text = render(report.stage_table(spec, analysis), width=width)
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    for part in analysis.stages:
        assert f"{part.cost.params / 1e6:.2f}" in text and report.giga(part.cost.mult_adds) in text
    assert "27,479,784" in text and "4,462,710,784" in text  # the caption wraps between words
    layers = render(report.layer_table(analysis), width=width)
    assert "…" not in layers and max(map(len, layers.splitlines())) <= width
    for part in analysis.layers[:20]:
        assert part.name in layers
        assert any(f" {number} " in layers for number in (
            report.grouped(part.cost.params), report.short_count(part.cost.params)))
    assert ("4,462,710,784" if width >= 80 else "4.46G") in layers


def test_a_wide_console_shows_the_table_as_written(sknet50):
    text = render(report.stage_table(*sknet50), width=200)
    assert "(mult-adds)" in text and "left out" not in text


def test_a_column_left_out_is_named(sknet50):
    text = render(report.layer_table(sknet50[1]), width=60)
    assert "left out at this width: output" in text and "64×112×112" not in text


# -- any terminal width: `skdsl build --report` as printed ---------------------------------------

# COLUMNS as a probe found it: unset-like values, widths too small for any table, and ordinary ones
ANY_COLUMNS = ["0", "-5", "abc", "1", "10", "20", "30", "37", "60", "80", "200"]


def numbers_in(text: str) -> set[str]:
    """Every number of `text` as a whole token: '(4,462,710,784' gives '4,462,710,784'."""
    return set(re.findall(r"\d[\d,.]*\d|\d", text))


def printed(capsys, monkeypatch, columns: str | None, *argv: str) -> str:
    """What `skdsl ARGV` prints with COLUMNS set to `columns` (None: unset, as piped); exit 0."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    status = main(list(argv))
    out = capsys.readouterr().out
    assert status == 0 and out.strip(), f"COLUMNS={columns}: exit {status}, {len(out)} characters"
    assert not re.search(r"\d…|…\d", out), f"COLUMNS={columns}: a number is cut"
    return out


@pytest.fixture(scope="module")
def report_numbers(sknet50):
    """The params and GFLOPs cells of the report at full width, and the exact totals."""
    table = report.stage_table(*sknet50)
    counted = [c for c in table.columns if c.header.startswith(("params", "GFLOPs"))]
    assert len(counted) == 2 and all(c.compact is None for c in counted)  # one form at any width
    total = sknet50[1].total
    return {cell for column in counted for cell in column.cells} | {
        report.grouped(total.params), report.grouped(total.mult_adds)}


@pytest.mark.parametrize("columns", ANY_COLUMNS)
def test_the_report_prints_every_number_whole_at_any_width(capsys, monkeypatch, report_numbers,
                                                           columns):
    out = printed(capsys, monkeypatch, columns, "build", "specs/sknet50.sk", "--report")
    assert report_numbers <= numbers_in(out), sorted(report_numbers - numbers_in(out))


@pytest.mark.parametrize("columns", ["0", "-5", "abc", "9" * 5000])
def test_a_columns_that_is_no_width_is_the_piped_width(capsys, monkeypatch, columns):
    """A 5,000-digit COLUMNS is no width either: rich, which would read it again, is given an
    environment without it (int() of it raised: exit 70, found by the command-line fuzzer)."""
    out = printed(capsys, monkeypatch, columns, "build", "specs/sknet50.sk", "--report")
    assert out == printed(capsys, monkeypatch, None, "build", "specs/sknet50.sk", "--report")
    assert "(mult-adds)" in out and "left out" not in out  # 160 columns: the table as written


def test_console_width_reads_only_a_positive_columns(monkeypatch):
    for columns, width in (("0", PIPED_WIDTH), ("-5", PIPED_WIDTH), ("abc", PIPED_WIDTH),
                           ("", PIPED_WIDTH), (" 72 ", 72), ("1", 1),
                           ("1000000000", MAX_WIDTH), ("9" * 5000, PIPED_WIDTH)):
        monkeypatch.setenv("COLUMNS", columns)
        assert console_width() == width, columns


@pytest.mark.parametrize("columns", ["1", "20"])
def test_too_narrow_for_any_table_a_list_of_every_cell(capsys, monkeypatch, columns):
    out = printed(capsys, monkeypatch, columns, "build", "specs/sknet50.sk", "--report")
    assert "┃" not in out and "│" not in out
    lines = out.splitlines()
    conv5 = lines.index("conv5")
    assert lines[conv5 + 1: conv5 + 3] == ["  output: 7×7", "  layers:"]
    assert "    [ SK[M=2, G=32, r=16], 1024 ] × 3" in lines
    assert lines[lines.index("total") + 1:][:3] == [
        "  output: 1000", "  params (M): 27.48", "  GFLOPs (mult-adds): 4.46"]
    assert "#P 27.5M (27,479,784), GFLOPs 4.46 (4,462,710,784 multiply-adds)" in lines


def test_a_narrow_table_names_the_columns_it_leaves_out(capsys, monkeypatch):
    out = printed(capsys, monkeypatch, "40", "build", "specs/sknet50.sk", "--report")
    assert "┃ stage" in out and "left out at this width: output" in out and "112×112" not in out


@pytest.mark.parametrize("columns", ["0", "20", "60"])
def test_layers_print_every_count_whole(capsys, monkeypatch, sknet50, columns):
    out = printed(capsys, monkeypatch, columns, "build", "specs/sknet50.sk", "--layers")
    numbers, analysis = numbers_in(out), sknet50[1]
    for cost in [*(part.cost for part in analysis.layers), analysis.total]:
        for count in (cost.params, cost.mult_adds):  # 9,536 as written, 9.54k when compact
            assert {report.grouped(count), report.short_count(count).rstrip("kMG")} & numbers


def test_short_count():
    assert [report.short_count(n) for n in (0, 512, 9_536, 27_479_784, 4_462_710_784)] == [
        "0", "512", "9.54k", "27.5M", "4.46G"]
