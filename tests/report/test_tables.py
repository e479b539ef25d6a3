"""`skdsl tables`: the manifest, the checks against tables.md and the paper, and the generated page.

docs/paper-tables.md is generated from specs/paper_tables.toml; the first test fails when it is
stale (regenerate it with `skdsl tables`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import skdsl
from skdsl.report import tables
from skdsl.commands import main
from skdsl.base.errors import InputFileError
from skdsl.report.tables.prose import parse_prose

ROOT = Path(__file__).resolve().parents[2]
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
    for rival in ("resnext50_bam", "resnext50_cbam", "dpn92", "inception_v3", "inception_v4",
                  "inception_resnet_v2", "attentionnext56", "attention92"):
        assert rows[rival].spec is not None
    table2 = next(t for t in manifest.tables if t.id == "table2")
    assert len([row for row in table2.rows if row.id != "sknet101_official"]) == 17
    assert rows["sknet101_official"].overrides == {"L3": 16}


def test_every_shipped_paper_spec_has_a_row(manifest):
    used = {row.spec for table in manifest.tables for row in table.rows}
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "specs").rglob("*.sk")}
    # sknet_tiny is a CIFAR demo; the skresnets and the ECA, SE-ResNeXt-D and ResNeSt networks
    # are timm's, not rows of the paper
    timm_only = {f"specs/{name}.sk" for name in (
        "skresnet18", "skresnet34", "skresnet50", "skresnet50d", "ecaresnet26t", "ecaresnet50d",
        "seresnext26d_32x4d", "resnest14d", "resnest26d", "resnest50d")}
    assert shipped - used == {"specs/sknet_tiny.sk"} | timm_only


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
    figure = tables.figure("27.5M")
    assert figure.rounds(27_479_784) and not figure.rounds(27_559_896)
    assert figure.reading(27_559_896) == "27.6M"
    assert tables.figure("4.463G").rounds(4_462_710_784)
    assert tables.figure("25.0M").decimals == 1
    assert tables.figure("27.1M").truncates(27_161_264)
    assert not tables.figure("27.2M").truncates(27_161_264)
    with pytest.raises(ValueError, match="is not a number"):
        tables.figure("4.4x")


# -- prose: our counts are fields, never typed -----------------------------------------------------


def _rendered(text: str, values: dict) -> str:
    return parse_prose(text).render(lambda row, quantity: values[row, quantity])


def test_prose_fields_format_our_counts():
    values = {("a", "params"): 27_559_896, ("b", "params"): 25_028_904}
    assert _rendered("{a.params} ({a.params:.1M}), {a.params - b.params:+,}; "
                     "{a.params / b.params - 1:+.1%}, {a.params:.3G}, {{1 … 64}}", values) == (
        "27,559,896 (27.6M), +2,530,992; +10.1%, 0.028G, {1 … 64}")
    assert _rendered("{-a.params:+.2M} {b.params / 1000:.1f}", values) == "-27.56M 25028.9"


def test_the_prose_types_none_of_our_counts(manifest, results):
    """A count of ours in the manifest's prose is a `{ROW.QUANTITY}` field, so it cannot go
    stale: no caption, note or reason spells one out."""
    counts = {f"{value:,}" for result in results.values() if result.params is not None
              for value in (result.params, result.macs, result.params_with_stats)}
    for table in manifest.tables:
        texts = [table.caption] + [text for row in table.rows for text in row.prose.values()]
        for text in filter(None, texts):
            literal = "".join(part for part in text.parts if isinstance(part, str))
            assert not [count for count in counts if count in literal], text.source


def test_how_a_row_compares_with_the_paper_is_computed(results):
    notes = PAGE.read_text(encoding="utf-8")
    assert ("#P 27,161,264 reads 27.2M, not the paper's 27.1M (27.1M is ours cut, not rounded)"
            in notes)
    assert "with BN's running statistics 44,315,560 → 44.3M, the paper's figure" in notes
    assert "#P 1,366,792 reads as the paper's 1.4M; 40.48M multiply-adds, -1.28% from the " \
           "paper's 41: outside ±0.5%" in notes
    senet50 = results["senet50"]
    assert senet50.params_with_stats == 27_559_896 + 2 * 34_112


def test_a_changed_paper_figure_changes_what_the_page_says(tmp_path):
    """Nothing the page concludes is typed: give SENet-50's Table 1 row the figure ours reads
    as, and the row turns ✓ and the conventions section marks it as fitting."""
    path = _copy(tmp_path)
    text = path.read_text(encoding="utf-8")
    old = 'paper = { params = "27.7M", gflops = "4.25", error = "21.12", source'
    assert old in text
    path.write_text(text.replace(old, old.replace("27.7M", "27.6M"), 1), encoding="utf-8")
    manifest = tables.load_manifest(path)
    page = tables.render(manifest, tables.evaluate(manifest))
    senet_line = next(line for line in page.splitlines() if line.startswith("| 2 | SENet-50 |"))
    assert senet_line.endswith("| ✓ |")
    assert "reads 27.6M, not the paper's 27.7M" in page  # Table 2's SENet-50 keeps 27.7M
    assert "| SENet-50 | 27.6M | 27.56M | ✓ | 27.63M | ✓ |" in page  # either way, then
    assert "| SENet-50 | 27.7M | 27.56M |  | 27.63M |  |" in page


def test_the_conventions_verdicts_are_computed(manifest, results):
    page = PAGE.read_text(encoding="utf-8")
    rows = [r for r in tables.results.distinct(manifest, results, "params")]
    only_with = [f"{r.row.label} {r.row.paper.params.text}" for r in rows
                 if not r.params_ok and r.row.paper.params.rounds(r.params_with_stats)]
    assert only_with and f"Fit only with them: {'; '.join(only_with)}." in page
    assert tables.page._conventions_verdict({(): 3, ("act",): 5}, 5).startswith(
        "`--count act` fits every row.")
    assert tables.page._conventions_verdict({(): 3, ("act",): 4}, 5).startswith(
        "No convention fits every row")


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


@pytest.mark.parametrize("columns", ["0", "20", "60"])
def test_the_page_on_stdout_is_the_same_at_any_width(manifest, results, capsys, monkeypatch,
                                                     columns):
    # markdown, not a rich table: a narrow terminal wraps its lines but changes none of them
    monkeypatch.setenv("COLUMNS", columns)
    assert main(["tables", "--manifest", str(MANIFEST_PATH), "--output", "-"]) == 0
    assert capsys.readouterr().out == tables.render(manifest, results)


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


SENET50_PAPER = 'paper = { params = "27.7M", gflops = "4.25", error = "21.12", source'
BN_FIELD = "{senet50.bn_channels}"


@pytest.mark.parametrize("edit, message", [
    (('id = "resnext50"\nlabel', 'id = "resnext50"\nlabl = "x"\nlabel'),
     "table1.resnext50 has an unknown key 'labl'\n  = hint: did you mean 'label'?"),
    (('id = "resnext50"\nlabel', 'label'), "table1.rows[0] needs an id"),
    (('spec = "specs/senet50.sk"', 'spec = "specs/senet5.sk"'),
     "table1.senet50.spec: no spec file 'specs/senet5.sk'"),
    (('gflops = "4.47", error = "20.79"', 'gflops = "4.4x", error = "20.79"'),
     "table1.sknet50.paper.gflops = '4.4x' is not a number"),
    ((SENET50_PAPER, SENET50_PAPER.replace('"27.7M"', "27.7")),
     "table1.senet50.paper.params: write the figure as a string, such as '27.5M': its printed "
     "precision counts"),
    ((SENET50_PAPER, SENET50_PAPER.replace('gflops', 'mflops = "4", gflops')),
     "table1.senet50.paper: give gflops or mflops, not both"),
    (('confidence = "A" }\ncalc = { params = 25028904',
      'confidence = "D" }\ncalc = { params = 25028904'),
     "table1.resnext50.paper.confidence: input should be 'A', 'B' or 'C'"),
    (('baseline = "resnext50"', 'baseline = "resnext5"'),
     "table1: baseline 'resnext5' is not one of its rows"),
    (('id = "senet50"', 'id = "resnext50"'), "the row id 'resnext50' is used twice"),
    (('set = { L3 = 16 }', 'set = { L3 = [16] }'),
     "table2.sknet101_official.set.L3: a param value is a number, a string or a boolean"),
    (('reason = "See Table 1: no counting rule gives 27.7M and the paper\'s other rows at once."',
      "reason = 5"), "table2.t2_senet50.reason: expected a string"),
    (('label = "Attention-92"', 'label = ["Attention-92"]'),
     "table2.attention92.label: input should be a valid string"),
    ((BN_FIELD, "{senet5.bn_channels}"), "table1.senet50.reason: no row 'senet5' (did you mean "
                                         "'senet50', 'sknet50' or 'senet29'?)"),
    ((BN_FIELD, "{senet50.bn_channel}"), "table1.senet50.reason: {senet50.bn_channel}: no "
                                         "quantity 'bn_channel' (did you mean 'bn_channels'?)"),
    (('spec = "specs/rivals/attention92.sk"\n', ""),
     "table2.attention92.reason: row 'attention92' has no spec to count"),
    ((BN_FIELD, "{resnext50_wider.paper_macs}"),
     "table1.senet50.reason: row 'resnext50_wider' gives no paper figure for paper_macs"),
    ((BN_FIELD, "{print(1)}"),
     "table1.senet50.reason: {print(1)}: 'print(1)' is not ROW.QUANTITY arithmetic"),
    ((BN_FIELD, "{senet50.params:.1X}"), "table1.senet50.reason: {senet50.params:.1X}: bad "
                                         "format '.1X': Precision not allowed in integer format "
                                         "specifier"),
    ((BN_FIELD, "{senet50.params"), "table1.senet50.reason: unexpected '{' in field name "
                                    "(write '{{' or '}}' for a literal brace)"),
])
def test_manifest_mistakes_are_errors(tmp_path, edit, message):
    """Every mistake is one SK545 that names the table, the row and the key."""
    manifest = _copy(tmp_path)
    text = manifest.read_text(encoding="utf-8")
    assert edit[0] in text
    manifest.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    with pytest.raises(InputFileError) as raised:
        tables.load_manifest(manifest)
    assert raised.value.render() == f"error SK545: manifest: {message}"


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


def test_a_manifest_without_tables_is_sk545(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("[[table]]\nid = 't'\n")
    with pytest.raises(InputFileError, match=r"has no \[\[tables\]\]") as raised:
        tables.load_manifest(empty)
    assert raised.value.code == "SK545"


def test_the_manifest_models_are_strict_and_described():
    """Frozen, unknown keys refused, and every field described (the format's documentation)."""
    from skdsl.report.tables import manifest as models

    for model in (models.ManifestFile, models.Table, models.Row, models.PaperFigures,
                  models.Calc):
        assert model.model_config["frozen"] and model.model_config["extra"] == "forbid"
        for name, field in model.model_fields.items():
            assert field.description or name in ("paper", "calc", "rows"), (model, name)


def test_tables_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; from skdsl.report import tables as t; m = t.load_manifest(%r); "
            "t.render(m, t.evaluate(m)); assert 'torch' not in sys.modules, 'torch imported'"
            % str(MANIFEST_PATH))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


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
