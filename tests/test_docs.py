"""The documentation is true: its `.sk` examples lower, and its numbers are recomputed here.

Convention for ```sk blocks in docs/*.md (documented at the end of docs/language.md):

* A block that contains a `network` line is a complete file: it must load with `skdsl.parse`
  and lower with `skdsl.analyze` as written.
* Any other block is a fragment and needs a marker comment on the line(s) right above its fence:
    <!-- sk-fragment layers 64x56x56 -->   the lines are a stage body; the input is 64×56×56
    <!-- sk-fragment stages 3x224x224 -->  the lines are a network's stages
  The test wraps the lines in a network (with `use "std/resnext.sk"`, and `use` of any further
  library named after the shape: `<!-- sk-fragment layers 64x14x14 std/attention.sk -->`) and
  lowers it.
* `<!-- sk-expect params=N macs=M -->` above a block also pins its parameters and multiply-adds.

Code that is not meant to be checked goes in a fence of another language (```text, ```python).
The numbers quoted in docs/analysis.md are computed here from the graph and looked up in it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import pytest

import skdsl
from skdsl.lang import expand, syntax
from skdsl import ops
from skdsl.lang.parser import LAYER_KEYWORDS, parse_text

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LANGUAGE = DOCS / "language.md"
ANALYSIS = DOCS / "analysis.md"

FENCE = re.compile(r"^```sk[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*sk-(fragment|expect)\s+(.*?)\s*-->")


@dataclass
class Example:
    doc: str
    line: int
    text: str
    markers: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def source(self) -> str:
        """The example as a complete .sk file."""
        if re.search(r"^network\s", self.text, re.M):
            return self.text
        kind, shape, *libraries = self.markers["fragment"].split()
        body = "".join(f"    {line}\n" if kind == "stages" else f"        {line}\n"
                       for line in self.text.splitlines())
        uses = "".join(f'use "{library}"\n' for library in ["std/resnext.sk", *libraries])
        head = f"{uses}\nnetwork fragment:\n    input {shape}\n"
        return head + body if kind == "stages" else head + "    stage s:\n" + body


def examples(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").splitlines()
        markers = {}
        while before and MARKER.fullmatch(before[-1].strip()):
            kind, value = MARKER.fullmatch(before.pop().strip()).groups()
            markers[kind] = value
        line = text.count("\n", 0, match.start()) + 1
        found.append(Example(path.name, line, match.group(1), markers))
    return found


ALL_EXAMPLES = examples(LANGUAGE) + examples(ANALYSIS)


def test_the_docs_have_examples():
    assert len(examples(LANGUAGE)) >= 15


@pytest.mark.parametrize("example", ALL_EXAMPLES, ids=lambda e: e.id)
def test_example_lowers(example):
    complete = re.search(r"^network\s", example.text, re.M)
    assert complete or "fragment" in example.markers, (
        f"{example.id}: a fragment needs <!-- sk-fragment layers|stages CxHxW --> above it")
    if not complete:
        kind, shape, *_ = example.markers["fragment"].split()
        assert kind in ("layers", "stages") and re.fullmatch(r"\d+x\d+x\d+", shape), example.id
    try:
        report = skdsl.analyze(skdsl.parse(example.source(), file=example.id))
    except skdsl.SpecError as error:
        pytest.fail(f"{example.id} does not lower:\n{error.render()}\n\n{example.source()}")
    if "expect" in example.markers:
        expected = dict(item.split("=") for item in example.markers["expect"].split())
        assert report.params == int(expected["params"]), example.id
        assert report.mult_adds == int(expected["macs"]), example.id


def _layer_keywords(node, found: set[str]) -> set[str]:
    """Every layer keyword in a syntax tree, as the parser read it."""
    if isinstance(node, syntax.LayerStmt):
        found.add(node.keyword)
    if isinstance(node, list):
        for item in node:
            _layer_keywords(item, found)
    elif is_dataclass(node):
        for field in fields(node):
            _layer_keywords(getattr(node, field.name), found)
    return found


def test_every_layer_keyword_has_an_example():
    used: set[str] = set()
    for example in examples(LANGUAGE):
        _layer_keywords(parse_text(example.source(), example.id), used)
    assert set(LAYER_KEYWORDS) - used == set()


def test_every_layer_keyword_is_described():
    text = LANGUAGE.read_text(encoding="utf-8").lower()
    missing = [k for k in LAYER_KEYWORDS if f"`{k}`" not in text]
    assert missing == []


def test_every_option_spelling_is_documented():
    text = LANGUAGE.read_text(encoding="utf-8")
    tables = [expand.CONV_OPTIONS, expand.DWCONV_OPTIONS, expand.SK_OPTIONS, expand.SUM_OPTIONS,
              expand.BRANCH_OPTIONS, expand.SE_OPTIONS, ops.pool.AVGPOOL_OPTIONS, expand.FC_OPTIONS,
              expand.RESIDUAL_OPTIONS]
    spellings = {name for table in tables for option in table for name in option.names}
    words = set(expand.ACTIVATIONS) | set(expand._TRUE) | set(expand._FALSE)
    missing = sorted(s for s in spellings | words if f"`{s}`" not in text)
    assert missing == []


def test_standard_library_signatures_are_documented():
    text = LANGUAGE.read_text(encoding="utf-8")
    paths = sorted((ROOT / "skdsl" / "lang" / "std").glob("*.sk"))
    assert paths, "no standard library found"
    for path in paths:
        assert f'use "std/{path.name}"' in text
        for name, formals in re.findall(r"^block (\w+)\((.*)\):", path.read_text(), re.M):
            assert f"`{name}`" in text and f"`{formals}`" in text, name


# -- docs/analysis.md ---------------------------------------------------------------------------


def number(value: int) -> str:
    return f"{value:,}"


@pytest.fixture(scope="module")
def analysis_text() -> str:
    return ANALYSIS.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def graphs() -> dict:
    return {name: skdsl.lower(skdsl.load(ROOT / "specs" / f"{name}.sk"))
            for name in ("sknet50", "resnext50_32x4d", "senet50")}


def mult_adds_by_part(graph) -> dict[str, int]:
    """SKNet-50's multiply-adds split as in tables.md, from node attributes."""
    parts: dict[str, int] = defaultdict(int)
    costs = skdsl.analyze(graph).nodes
    for name, node in graph.nodes(data=True):
        if node["op"] not in ("conv2d", "linear"):
            continue
        if node["stage"] == "conv1":
            part = "stem"
        elif node["op"] == "linear":
            part = "classifier"
        elif node["layer"].endswith(".shortcut"):
            part = "projections"
        elif re.search(r"\.sk\.branch\d$", node["layer"]):
            part = f"3x3 dilation {node['dilation']}"
        elif name.endswith((".sk.reduce.conv", ".sk.logits")):
            part = "sk fcs"
        else:
            assert node["kernel"] == (1, 1), name
            part = "1x1"
        parts[part] += costs[name].mult_adds
    return dict(parts)


def test_sknet50_breakdown(graphs, analysis_text):
    report = skdsl.analyze(graphs["sknet50"])
    assert (report.params, report.mult_adds) == (27_479_784, 4_462_710_784)
    parts = mult_adds_by_part(graphs["sknet50"])
    assert parts == {"stem": 118_013_952, "1x1": 3_519_545_344, "projections": 359_661_568,
                     "3x3 dilation 1": 231_211_008, "3x3 dilation 2": 231_211_008,
                     "sk fcs": 1_019_904, "classifier": 2_048_000}
    assert sum(parts.values()) == report.mult_adds
    for value in [report.params, report.mult_adds, 14_450_688, *parts.values()]:
        assert number(value) in analysis_text


def sk_unit_cost(C, H, W, M=2, k=3, G=32, r=16, L=32):
    d = max(C // r, L)
    params = M * (k * k * C * C // G + 2 * C) + C * d + 2 * d + d * M * C
    macs = M * k * k * C * C // G * H * W + C * d + d * M * C
    return params, macs


def test_sk_unit_formula(graphs, analysis_text):
    report = skdsl.analyze(graphs["sknet50"])
    units = {node["layer"].split(".sk")[0] + ".sk" for _, node in graphs["sknet50"].nodes(data=True)
             if node["op"] == "select"}
    assert len(units) == 16
    for unit in units:
        nodes = [n for n in report.nodes if n.startswith(unit + ".")]
        channels, height, width = graphs["sknet50"].nodes[f"{unit}.select"]["out_shapes"][0]
        cost = (sum(report.nodes[n].params for n in nodes),
                sum(report.nodes[n].mult_adds for n in nodes))
        assert cost == sk_unit_cost(channels, height, width), unit
    assert sk_unit_cost(128, 56, 56) == (22_080, 28_913_664)
    assert sk_unit_cost(1024, 7, 7) == (790_656, 29_097_984)
    for value in (22_080, 28_913_664, 28_901_376, 790_656, 29_097_984):
        assert number(value) in analysis_text
    fcs = 3 * (3 * 128 * 32) + 4 * (3 * 256 * 32) + 6 * (3 * 512 * 32) + 3 * (3 * 1024 * 64)
    assert fcs == 1_019_904


def test_se_formula(graphs, analysis_text):
    report = skdsl.analyze(graphs["senet50"])
    nodes = [n for n in report.nodes if n.startswith("conv2.block1.se.")]
    C, s = 256, 256 // 16
    assert sum(report.nodes[n].params for n in nodes) == 2 * C * s + s + C == 8_464
    assert sum(report.nodes[n].mult_adds for n in nodes) == 2 * C * s == 8_192
    assert "8,464" in analysis_text and "8,192" in analysis_text


def test_sknet50_overhead_over_resnext50(graphs, analysis_text):
    sk, rx = (skdsl.analyze(graphs[n]) for n in ("sknet50", "resnext50_32x4d"))
    nodes = sk.nodes
    branch2 = sum(c.params for n, c in nodes.items() if ".sk.branch2." in n)
    fc_weights = sum(c.params for n, c in nodes.items()
                     if n.endswith((".sk.reduce.conv", ".sk.logits")))
    reduce_bn = sum(c.params for n, c in nodes.items() if n.endswith(".sk.reduce.bn"))
    assert (branch2, fc_weights, reduce_bn) == (1_429_760, 1_019_904, 1_216)
    assert sk.params - rx.params == branch2 + fc_weights + reduce_bn == 2_450_880
    assert sk.mult_adds - rx.mult_adds == 232_230_912
    for value in (rx.params, rx.mult_adds, 2_450_880, 1_429_760, 1_216, 232_230_912):
        assert number(value) in analysis_text
    assert f"{sk.params / rx.params:.3f}" == "1.098" and f"{sk.mult_adds / rx.mult_adds:.3f}" == "1.055"


def test_receptive_field_claim(graphs):
    fields = {name: {s.name: s.receptive_field for s in skdsl.analyze(g).stages}
              for name, g in graphs.items()}
    assert fields["sknet50"]["conv2"] == (59, 59)
    assert fields["resnext50_32x4d"]["conv2"] == (35, 35)
    assert fields["sknet50"]["head"] is None


PAPER_GFLOPS = {"resnext50_32x4d": 4.24, "senet50": 4.25, "sknet50": 4.47}


def small_ops(graph) -> dict[str, int]:
    """One operation per element of the ops the conv + fc convention leaves out."""
    ops: dict[str, int] = defaultdict(int)
    for name, node in graph.nodes(data=True):
        op, size = node["op"], math.prod(node["out_shapes"][0])
        if op == "add":
            ops["sk fuse" if name.endswith(".fuse") else "residual add"] += size
        elif op == "mul":
            ops["se scale"] += size
        elif op == "select":
            ops["sk select"] += size
        elif op == "max_pool":
            ops["max pool"] += size * node["kernel"][0] * node["kernel"][1]
        elif op == "global_pool":
            ops["global pool"] += math.prod(node["in_shapes"][0])
        elif op in ("batchnorm", "act"):
            ops[op] += size
    return ops


def test_paper_gflops_gap(graphs, analysis_text):
    windows = {}
    for name, gflops in PAPER_GFLOPS.items():
        macs = skdsl.analyze(graphs[name]).mult_adds
        low, high = round((gflops - 0.005) * 1e9) - macs, round((gflops + 0.005) * 1e9) - macs
        windows[name] = (low, high)
        row = (f"| {number(macs)} | {gflops} | {gflops * 1e9 / macs - 1:.2%} | "
               f"{number(low)} to {number(high)} |")
        assert row in analysis_text, row
        ops = small_ops(graphs[name])
        for value in ops.values():
            assert number(value) in analysis_text, (name, value)
    percents = [PAPER_GFLOPS[n] * 1e9 / skdsl.analyze(g).mult_adds - 1 for n, g in graphs.items()]
    assert f"{min(percents):.2%}" == "0.16%" and f"{max(percents):.2%}" == "0.40%"

    def fits(name, value):
        return windows[name][0] <= value <= windows[name][1]

    # no single op class lands in all three windows ...
    classes = set().union(*(small_ops(g) for g in graphs.values()))
    for op in classes:
        assert not all(fits(n, small_ops(g).get(op, 0)) for n, g in graphs.items()), op
    # ... while adds + pools + SE scale (not SK's fuse and select) does, and all of them do not
    partial = {n: sum(small_ops(g)[k] for k in ("residual add", "max pool", "global pool",
                                                "se scale")) for n, g in graphs.items()}
    assert all(fits(n, v) for n, v in partial.items())
    everything = sum(small_ops(graphs["sknet50"])[k] for k in (
        "residual add", "max pool", "global pool", "sk fuse", "sk select"))
    assert not fits("sknet50", everything)
    for value in [*partial.values(), everything]:
        assert number(value) in analysis_text


def test_senet50_parameter_arithmetic(graphs, analysis_text):
    rows = {}
    for name, graph in graphs.items():
        params = skdsl.analyze(graph).params
        bn_channels = sum(n["channels"] for _, n in graph.nodes(data=True) if n["op"] == "batchnorm")
        rows[name] = (params, bn_channels, params + 2 * bn_channels)
    assert rows["senet50"] == (27_559_896, 34_112, 27_628_120)
    assert rows["sknet50"] == (27_479_784, 42_272, 27_564_328)
    assert rows["resnext50_32x4d"] == (25_028_904, 34_112, 25_097_128)
    se_biases = sum(n["out_channels"] for _, n in graphs["senet50"].nodes(data=True)
                    if n["op"] == "conv2d" and n["bias"])
    assert se_biases == 16_048
    for value in [*(v for row in rows.values() for v in row), se_biases,
                  rows["senet50"][0] - se_biases, 2 * 34_112]:
        assert number(value) in analysis_text, value
    # neither rule rounds SENet-50 to the paper's 27.7M
    assert round(27_559_896 / 1e6, 1) == round(27_628_120 / 1e6, 1) == 27.6


# -- docs/cli.md against the argparse tree --------------------------------------------------------

CLI = DOCS / "cli.md"
CLI_HEADING = re.compile(r"^## `skdsl ([a-z]+(?: [a-z]+)?)\b[^`]*`.*$", re.M)
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def parser_commands() -> dict[str, tuple[set[str], set[str]]]:
    """'weights convert' -> ({'--from', '--set', '--skip-head'}, {'SPEC', 'IN', 'OUT'}) for every
    command that runs (a group such as `weights` is its subcommands)."""
    import argparse

    from skdsl.commands import build_parser

    found = {}

    def walk(parser, path):
        flags, positionals, groups = set(), set(), []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                groups.append(action)
            elif isinstance(action, argparse._HelpAction):
                continue
            elif action.option_strings:
                flags.update(action.option_strings)
            else:
                positionals.add(action.metavar or action.dest.upper())
        for group in groups:
            for name, sub in group.choices.items():
                walk(sub, [*path, name])
        if path and not groups:
            found[" ".join(path)] = (flags, positionals)

    walk(build_parser(), [])
    return found


def cli_sections() -> dict[str, str]:
    """Each `## \\`skdsl COMMAND ...\\`` section of docs/cli.md, by command."""
    text = CLI.read_text(encoding="utf-8")
    headings = list(CLI_HEADING.finditer(text))
    sections: dict[str, str] = {}
    for index, heading in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else text.find(
            "\n## ", heading.end())
        sections[heading.group(1)] = text[heading.start(): end if end != -1 else len(text)]
    return sections


def documented_flags(section: str) -> set[str]:
    """The flags a section declares: in its heading's usage and its flag tables' first cells."""
    heading, *lines = section.splitlines()
    cells = [line.split("|")[1] for line in lines if line.startswith("| `")]
    return set(FLAG.findall(heading)) | {flag for cell in cells for flag in FLAG.findall(cell)}


def test_cli_md_documents_every_command_and_flag():
    commands, sections = parser_commands(), cli_sections()
    problems = [f"command `skdsl {name}` has no `## \\`skdsl {name} ...\\`` section in docs/cli.md"
                for name in commands if name not in sections]
    problems += [f"docs/cli.md has a section for `skdsl {name}`, which is no command"
                 for name in sections if name not in commands]
    for name, (flags, positionals) in commands.items():
        section = sections.get(name)
        if section is None:
            continue
        mentioned = set(FLAG.findall(section))
        problems += [f"`skdsl {name} {flag}` is not documented in its docs/cli.md section"
                     for flag in sorted(flags - mentioned)]
        problems += [f"`skdsl {name}`'s argument {metavar} is not in its docs/cli.md heading"
                     for metavar in sorted(positionals)
                     if metavar not in section.splitlines()[0]]
        problems += [f"docs/cli.md documents `skdsl {name} {flag}`, which the parser does not have"
                     for flag in sorted(documented_flags(section) - flags)]
    assert problems == [], "\n".join(problems)


def test_cli_md_calls_no_command_to_come():
    assert "to come" not in CLI.read_text(encoding="utf-8")
