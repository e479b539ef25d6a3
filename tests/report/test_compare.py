"""`skdsl compare`: Table 1 with the paper's figures, sweeps, baselines, formats and errors."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import pytest

from skdsl.report import compare
from skdsl.commands import main

ROOT = Path(__file__).resolve().parents[2]
RESNEXT = str(ROOT / "specs" / "resnext50_32x4d.sk")
SENET = str(ROOT / "specs" / "senet50.sk")
SKNET = str(ROOT / "specs" / "sknet50.sk")
SK_PAIR = str(ROOT / "specs" / "ablations" / "sk_pair.sk")


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def table_1_json(capsys) -> dict:
    status, out, err = run(capsys, "compare", RESNEXT, SENET, SKNET, "--baseline", RESNEXT,
                           "--format", "json")
    assert status == 0, err
    return json.loads(out)


def test_table_1_with_the_papers_figures(capsys):
    data = table_1_json(capsys)
    rows = {row["network"]: row for row in data["rows"]}
    assert list(rows) == ["resnext50_32x4d", "senet50", "sknet50"]
    assert data["baseline"]["network"] == "resnext50_32x4d" and rows["resnext50_32x4d"]["baseline"]
    sk = rows["sknet50"]
    assert (sk["params"], sk["macs"], sk["flops"]) == (27_479_784, 4_462_710_784, 8_925_421_568)
    assert sk["delta_params"] == 2_450_880 and sk["delta_macs"] == 232_230_912
    # "+10% params, +5% compute": ours +9.79% and +5.49%, the paper's +10.0% and +5.42%
    assert (sk["delta_params_percent"], sk["delta_macs_percent"]) == (9.79, 5.49)
    paper = sk["paper"]
    assert (paper["params_millions"], paper["gflops"]) == (27.5, 4.47)
    assert (paper["delta_params_percent"], paper["delta_gflops_percent"]) == (10.0, 5.42)
    assert paper["ours_minus_paper_gflops"] == pytest.approx(-0.0073, abs=1e-4)


def test_the_rich_table_shows_deltas_and_the_paper(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # piped: 160 columns, every column
    status, out, _ = run(capsys, "compare", RESNEXT, SENET, SKNET, "--baseline", RESNEXT)
    assert status == 0
    line = next(line for line in out.splitlines() if "sknet50" in line)
    for text in ("27,479,784", "+2.45M (+9.8%)", "4.463", "8.925", "+0.232 G (+5.5%)",
                 "27.5M (+10.0%)", "4.47 (+5.4%)", "-0.02M, -0.007 G"):
        assert text in line
    assert "GFLOPs (2×)" in out and "(baseline)" in out


def test_markdown_and_csv(capsys):
    status, out, _ = run(capsys, "compare", SKNET, "--baseline", RESNEXT, "--stages",
                         "--format", "markdown")
    assert status == 0
    assert out.startswith("| network | params | Δ params |")
    assert "&nbsp;&nbsp;conv4 (14×14)" in out and "not listed" in out
    status, out, _ = run(capsys, "compare", SKNET, "--baseline", RESNEXT, "--stages",
                         "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["stage"] for r in rows] == ["", "conv1", "conv2", "conv3", "conv4", "conv5", "head"]
    assert sum(int(r["params"]) for r in rows[1:]) == int(rows[0]["params"]) == 27_479_784
    assert rows[0]["delta_params"] == "2450880" and rows[0]["paper_params_millions"] == "27.5"


def test_sweeps_make_the_cross_product(capsys):
    status, out, err = run(capsys, "compare", SK_PAIR, "--sweep", "k2=3,5", "--sweep",
                           "G2=32,64", "--format", "json")
    assert status == 0, err
    rows = json.loads(out)["rows"]
    assert [r["overrides"] for r in rows] == [
        {"k2": 3, "G2": 32}, {"k2": 3, "G2": 64}, {"k2": 5, "G2": 32}, {"k2": 5, "G2": 64}]
    assert rows[3]["params"] == 28_029_928  # Table 6: 5×5, G=64
    assert rows[0]["baseline"] and rows[0]["params"] == 27_479_784


def test_set_and_sweep_apply_to_the_specs_that_declare_them(capsys):
    status, out, err = run(capsys, "compare", RESNEXT, str(ROOT / "specs" / "sknet101.sk"),
                           "--sweep", "L3=32,16", "--format", "json")
    assert status == 0, err
    rows = json.loads(out)["rows"]
    assert [(r["network"], r["overrides"], r["params"]) for r in rows] == [
        ("resnext50_32x4d", {}, 25_028_904), ("sknet101", {"L3": 32}, 48_736_040),
        ("sknet101", {"L3": 16}, 48_686_760)]


def test_count_adds_op_classes(capsys):
    status, out, _ = run(capsys, "compare", SKNET, "--count", "add", "--format", "json")
    data = json.loads(out)
    assert data["count"] == ["conv", "fc", "add"]
    assert data["rows"][0]["macs"] == 4_462_710_784 + 5_519_360 + 2_759_680


def test_no_torch_is_imported():
    import subprocess
    import sys

    code = ("import sys; from skdsl.commands import main; main(['compare', 'specs/sknet50.sk', "
            "'--format', 'csv']); print('torch' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stderr.strip() == "False"


@pytest.mark.parametrize("argv, code, text", [
    (["--sweep", "k3=3,5"], "SK541", "no listed spec declares a parameter 'k3'"),
    (["--set", "r=4"], "SK541", "the listed specs declare: D1, D2, G2, k2"),
    (["--sweep", "k2=3,x"], "SK542", "k2 takes an integer, like its default 3"),
    (["--set", "G2=1.5"], "SK542", "G2 is declared at"),
    (["--sweep", "k2="], "SK540", "expected NAME=V1,V2,..."),
    (["--sweep", "k2=3", "--sweep", "k2=5"], "SK540", "--sweep k2 is given twice"),
    (["--sweep", "k2=3,3"], "SK540", "a value is listed twice"),
    (["--set", "k2=5", "--sweep", "k2=3"], "SK540", "name the same parameter"),
    (["--sweep", "k2=1,3,5,7", "--sweep", "D1=1,2,3,4,5,6,7,8", "--sweep", "D2=1,2,3,4,5,6,7,8,9"],
     "SK543", "at most 256"),
])
def test_mistakes_are_located_errors(capsys, argv, code, text):
    status, out, err = run(capsys, "compare", SK_PAIR, *argv)
    assert status == 2 and out == ""
    assert f"error {code}" in err and text in err and "Traceback" not in err


def test_a_variant_the_spec_cannot_build_is_named(capsys):
    status, _, err = run(capsys, "compare", SK_PAIR, "--sweep", "G2=32,3")
    assert status == 2
    assert "does not divide" in err and "in the variant G2=3" in err


def test_the_python_api():
    comparison = compare.compare([SKNET, RESNEXT], baseline=RESNEXT)
    assert comparison.baseline is comparison.rows[1]
    assert [row.label for row in comparison.rows] == ["sknet50", "resnext50_32x4d"]


def test_build_sweeps_print_one_line_per_variant(capsys):
    status, out, err = run(capsys, "build", SK_PAIR, "--sweep", "k2=3,5", "--set", "G2=64")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("[G2=64 k2=3] sknet50_sk_pair: 26,772,456 params")
    assert lines[1].startswith("[G2=64 k2=5] sknet50_sk_pair: 28,029,928 params")
    status, out, _ = run(capsys, "build", SK_PAIR, "--sweep", "D2=1,3", "--json")
    data = json.loads(out)
    assert [(d["overrides"], d["params"]) for d in data] == [({"D2": 1}, 27_479_784),
                                                          ({"D2": 3}, 27_479_784)]


# -- honest output: the paper's figures, and 80 columns --------------------------------------------

OPTIONS = str(ROOT / "examples" / "sknet50_options.sk")


def test_paper_figures_only_for_the_spec_as_written(capsys):
    status, out, err = run(capsys, "compare", OPTIONS, "--sweep", "M=1,2,3", "--format", "json")
    assert status == 0, err
    rows = {row["overrides"]["M"]: row for row in json.loads(out)["rows"]}
    assert rows[1]["paper"] is None and rows[3]["paper"] is None
    assert rows[2]["paper"]["params_millions"] == 27.5  # M=2 is the default: SKNet-50 itself
    status, out, _ = run(capsys, "compare", SKNET, OPTIONS, "--set", "G=16", "--format", "csv")
    papers = [row["paper_params_millions"] for row in csv.DictReader(io.StringIO(out))]
    assert papers == ["27.5", ""]  # sknet50.sk declares no G: --set leaves it as written


def test_build_sweeps_show_the_paper_only_for_the_default(capsys):
    status, out, _ = run(capsys, "build", OPTIONS, "--sweep", "M=2,3", "--json")
    assert [d["paper"] is not None for d in json.loads(out)] == [True, False]


NUMBER = re.compile(r"[-+(]*\d[\d,.]*[%MGk)]*")


def rendered(renderable, width: int) -> str:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def whole_numbers(comparison) -> set[str]:
    """Every number of every cell and caption line, as written and as shortened."""
    found = set()
    for cells, _ in compare._all_cells(comparison):
        for text in cells.values():
            found |= set(NUMBER.findall(text)) | set(NUMBER.findall(text.replace(" G", "G")))
    for line in compare.caption(comparison):
        found |= set(NUMBER.findall(line))
    return found | {"3×224×224", "80", "60"}


@pytest.mark.parametrize("width", [80, 60])
@pytest.mark.parametrize("case", ["table 1", "sweep"])
def test_the_table_fits_without_cutting_a_number(width, case):
    if case == "table 1":
        comparison = compare.compare([RESNEXT, SENET, SKNET], baseline=RESNEXT)
    else:
        comparison = compare.compare([OPTIONS], sweeps={"M": [1, 2, 3]})
    text = rendered(compare.rich_table(comparison), width)
    assert max(map(len, text.splitlines())) <= width
    assert_no_number_is_cut(text, comparison)
    for row in comparison.rows:  # every row's parameters, exact or as 27.48M
        assert f"{row.analysis.total.params / 1e6:.2f}M" in text


def assert_no_number_is_cut(text: str, comparison) -> None:
    assert "…" not in text
    allowed = whole_numbers(comparison)
    cut = [token for token in NUMBER.findall(text.replace("×", " ")) if token not in allowed
           and token not in {t for n in allowed for t in NUMBER.findall(n.replace("×", " "))}]
    assert cut == []


@pytest.mark.parametrize("columns", ["0", "-5", "abc", "1", "20", "60"])
@pytest.mark.parametrize("case", ["table 1", "sweep"])
def test_compare_prints_every_count_whole_at_any_width(capsys, monkeypatch, columns, case):
    if case == "table 1":
        argv = [RESNEXT, SENET, SKNET, "--baseline", RESNEXT]
        comparison = compare.compare([RESNEXT, SENET, SKNET], baseline=RESNEXT)
    else:
        argv = [OPTIONS, "--sweep", "M=1,2,3"]
        comparison = compare.compare([OPTIONS], sweeps={"M": [1, 2, 3]})
    monkeypatch.setenv("COLUMNS", columns)
    status, out, _ = run(capsys, "compare", *argv)
    assert status == 0 and out.strip()
    assert_no_number_is_cut(out, comparison)
    tokens = set(NUMBER.findall(out))
    counted = [c for c in compare.rich_table(comparison).columns if c.header in ("params", "GMACs")]
    for column in counted:  # as written; at 60 columns maybe as 27.48M
        forms = zip(column.cells, column.compact if columns == "60" else column.cells)
        assert all(full in tokens or short in tokens for full, short in forms), column.header
    if columns in ("0", "-5", "abc"):  # no width: the piped 160 columns, every column
        assert "GFLOPs (2×)" in out and "left out" not in out


def test_columns_env_is_honoured_when_piped():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "skdsl", "compare", RESNEXT, SENET, SKNET,
                             "--baseline", RESNEXT], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert max(map(len, result.stdout.splitlines())) <= 80 and "…" not in result.stdout
    assert "left out at this width: GFLOPs (2×)" in result.stdout
