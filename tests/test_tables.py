"""`skdsl tables`: the manifest, the checks against tables.md and the paper, and the generated page.

docs/paper-tables.md is generated from specs/paper_tables.toml; the first test fails when it is
stale (regenerate it with `skdsl tables`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import skdsl
from skdsl import tables
from skdsl.cli import main
from skdsl.errors import CliError

ROOT = Path(__file__).resolve().parent.parent
MANIFEST_PATH = ROOT / "specs" / "paper_tables.toml"
PAGE = ROOT / "docs" / "paper-tables.md"


@pytest.fixture(scope="module")
def manifest():
    return tables.load_manifest(MANIFEST_PATH)


@pytest.fixture(scope="module")
def results(manifest):
    return tables.evaluate(manifest)


def test_the_page_is_fresh(manifest, results):
    assert PAGE.read_text(encoding="utf-8") == tables.render(manifest, results), (
        "docs/paper-tables.md is stale: run `skdsl tables`")


def test_every_hand_count_of_tables_md_is_matched(results):
    checked = [r for r in results.values() if r.calc_ok is not None]
    assert len(checked) >= 45
    assert [r.row.id for r in checked if not r.calc_ok] == []


def test_every_gap_to_the_paper_is_explained(results):
    assert tables.consistency_problems(results) == []
    for result in results.values():
        if result.row.spec is None or result.matches is False:
            assert result.row.reason, result.row.id


def test_the_manifest_covers_tables_1_to_7_and_the_rivals(manifest):
    ids = [table.id for table in manifest.tables]
    assert ids[:7] == [f"table{n}" for n in range(1, 8)]
    rows = {row.id: row for table in manifest.tables for row in table.rows}
    for rival in ("resnext50_bam", "resnext50_cbam", "dpn92", "inception_v3"):
        assert rows[rival].spec is not None
    table2 = next(t for t in manifest.tables if t.id == "table2")
    assert len([row for row in table2.rows if row.id != "sknet101_official"]) == 17
    assert rows["sknet101_official"].overrides == {"L3": 16}


def test_every_shipped_paper_spec_has_a_row(manifest):
    used = {row.spec for table in manifest.tables for row in table.rows}
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "specs").rglob("*.sk")}
    assert shipped - used == {"specs/sknet_tiny.sk"}


def test_paper_lines_of_the_specs_agree_with_the_manifest(manifest):
    """A spec's own `paper` line (shown by build and compare) quotes the manifest's figures."""
    for table in manifest.tables:
        for row in table.rows:
            if row.spec is None or row.overrides:
                continue
            paper = skdsl.load(ROOT / row.spec).paper
            if paper is None or row.paper.params is None:
                continue
            assert paper.params_millions == float(row.paper.params.value), row.id
            if row.paper.compute is not None and row.paper.compute.unit == "G":
                assert paper.gflops == float(row.paper.compute.value), row.id


def test_exact_figures_from_tables_md(results):
    """The figures the issue names, to the unit."""
    expected = {
        "sknet101": 48_736_040, "sknet101_official": 48_686_760,
        "resnext29_16x32d": 25_136_970, "resnext29_16x32d_c100": 25_229_220,
        "resnext29_8x64d": 34_426_698, "resnext29_16x64d": 68_155_210,
        "senet29_8x64d": 35_040_756, "shufflenet_x1_0_sk": 2_543_040,
        "shufflenet_x0_5_sk": 1_478_432, "t6_5x5": 28_029_928, "t6_7x7": 27_990_632,
        "t7_k3_k5_k7": 27_888_424, "t7_k3_k5_k7_sk": 29_249_512, "resnext56": 27_281_704,
        "resnext50_36x4d": 27_549_352,
    }
    assert {key: results[key].params for key in expected} == expected


def test_figures_round_as_printed():
    figure = tables.figure("27.5M", "x")
    assert figure.rounds(27_479_784) and not figure.rounds(27_559_896)
    assert tables.figure("4.463G", "x").rounds(4_462_710_784)
    assert tables.figure("25.0M", "x").decimals == 1


def _copy(tmp_path: Path) -> Path:
    """A manifest in a scratch checkout (specs/ with the manifest, docs/)."""
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    (tmp_path / "docs").mkdir()
    return tmp_path / "specs" / "paper_tables.toml"


def test_check_exits_1_when_stale_and_0_when_fresh(tmp_path, capsys):
    manifest = _copy(tmp_path)
    page = tmp_path / "docs" / "paper-tables.md"
    assert main(["tables", "--manifest", str(manifest), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["tables", "--manifest", str(manifest)]) == 0
    assert page.read_text(encoding="utf-8") == PAGE.read_text(encoding="utf-8")
    assert main(["tables", "--manifest", str(manifest), "--check"]) == 0
    page.write_text(page.read_text(encoding="utf-8") + "edited\n", encoding="utf-8")
    assert main(["tables", "--manifest", str(manifest), "--check"]) == 1


def test_a_count_that_misses_tables_md_fails(tmp_path, capsys):
    manifest = _copy(tmp_path)
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace("calc = { params = 25028904, macs = 4230479872 }",
                                     "calc = { params = 25028905, macs = 4230479872 }", 1),
                        encoding="utf-8")
    assert main(["tables", "--manifest", str(manifest)]) == 1
    err = capsys.readouterr().err
    assert "table1 resnext50" in err and "tables.md" in err


def test_an_unexplained_gap_fails(tmp_path, capsys):
    manifest = _copy(tmp_path)
    text = manifest.read_text(encoding="utf-8")
    start = text.index('reason = "27.7M is out of reach')
    end = text.index("\n", start)
    manifest.write_text(text[:start] + text[end + 1:], encoding="utf-8")
    assert main(["tables", "--manifest", str(manifest), "-o", "-"]) == 1
    assert "table1 senet50: differs from the paper's figures" in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (("[[tables.rows]]\nid = \"resnext50\"", "[[tables.rows]]\nid = \"resnext50\"\nlabl = \"x\""),
     "unknown key 'labl'"),
    (('spec = "specs/senet50.sk"', 'spec = "specs/senet5.sk"'), "no spec file 'specs/senet5.sk'"),
    (('gflops = "4.47", error = "20.79", source = "Table 1; official README"',
      'gflops = "4.4x", error = "20.79", source = "Table 1; official README"'), "is not a number"),
    (('baseline = "resnext50"', 'baseline = "resnext5"'), "baseline 'resnext5'"),
])
def test_manifest_mistakes_are_errors(tmp_path, edit, message):
    manifest = _copy(tmp_path)
    text = manifest.read_text(encoding="utf-8")
    assert edit[0] in text
    manifest.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    with pytest.raises(CliError, match=message.replace("(", r"\(")):
        tables.load_manifest(manifest)


def test_check_without_a_page_checks_the_rows(tmp_path, monkeypatch, capsys):
    """Outside a checkout, `tables --check` reads skdsl's own manifest and specs (as an
    installed wheel does, where there is no docs/ to compare with) and checks every row."""
    monkeypatch.chdir(tmp_path)
    assert main(["tables", "--check"]) == 0
    out = capsys.readouterr().out
    rows = sum(len(table.rows) for table in tables.load_manifest(MANIFEST_PATH).tables)
    assert out.startswith(f"{rows} rows checked; no docs/paper-tables.md beside ")
    assert str(tables.SPECS_DIR / "paper_tables.toml") in out
    assert not (tmp_path / "docs").exists()


def test_invalid_toml_is_sk544(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[tables]\n")
    assert main(["tables", "--manifest", str(bad), "--check"]) == 2
    assert "error SK544" in capsys.readouterr().err


def test_the_model_zoo_page_lists_every_spec_with_its_counts():
    """docs/model-zoo.md's spec tables: every shipped spec, its network name and exact counts."""
    import json
    import re

    golden = json.loads((ROOT / "tests" / "golden_counts.json").read_text())
    text = (ROOT / "docs" / "model-zoo.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(specs/[\w/]+\.sk)` \| (\w+) \| ([\d,]+) \| ([\d.]+) \|", text, re.M)
    assert {path for path, *_ in rows} == set(golden) - {"specs/sknet_tiny.sk"}
    for path, name, params, compute in rows:
        assert skdsl.load(ROOT / path).name == name, path
        assert int(params.replace(",", "")) == golden[path]["params"], path
        macs = golden[path]["macs"]
        digits = len(compute.split(".")[1])
        unit = 1e6 if "shufflenetv2" in path else 1e9
        assert f"{macs / unit:.{digits}f}" == compute, path
