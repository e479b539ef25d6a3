"""`explore show` and `explore compare`: study folders read back, the Pareto front, RegNet's EDF,
the tables and the figures, on small fake studies written in tmp_path."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from rich.console import Console

from skdsl.base.errors import SkdslError
from skdsl.explore import figures, show
from skdsl.explore.points import OK, OVER_BUDGET, REJECTED, Point, write_points

NAMES = ["width", "depth"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (width, depth, status, error code, params, macs) of the fake space
POINTS = [
    (16, 1, OK, None, 1_000_000, 100_000_000),
    (32, 1, OK, None, 2_000_000, 200_000_000),
    (32, 2, OK, None, 4_000_000, 400_000_000),
    (64, 2, OVER_BUDGET, None, 8_000_000, 800_000_000),
    (48, 1, REJECTED, "SK303", None, None),
    (48, 2, REJECTED, "SK303", None, None),
    (12, 3, REJECTED, "SK210", None, None),
]
# (number, point, state, error, macs): trial 2 is dominated by trial 1 (dearer, worse)
TRIALS = [
    (0, 0, "complete", 40.0, 100_000_000),
    (1, 1, "complete", 30.0, 200_000_000),
    (2, 2, "complete", 35.0, 400_000_000),
    (3, 3, "complete", 25.0, 800_000_000),
    (4, 2, "pruned", 60.0, 400_000_000),
    (5, 1, "failed", None, 200_000_000),
]


def make_study(folder: Path, trials=TRIALS, shift: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    points = [Point(index, {"width": w, "depth": d}, status=status, error=code,
                    message=f"{code}: no" if code else None, params=params, macs=macs)
              for index, (w, d, status, code, params, macs) in enumerate(POINTS)]
    write_points(folder, points, NAMES)
    if trials is not None:
        lines = [json.dumps(trial_row(*trial, shift=shift)) for trial in trials]
        (folder / "trials.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def trial_row(number, point, state, error, macs, shift=0.0) -> dict:
    w, d = POINTS[point][:2]
    return {"number": number, "point": point, "width": w, "depth": d, "state": state,
            "error": None if error is None else error + shift, "best_error": error,
            "time_s": 1.5, "reason": None, "run": f"trials/{number}", "params": macs // 100,
            "macs": macs, "activations": 10, "peak_bytes": 40}


def rendered(renderable, width: int = 120) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable, crop=False)
    return out.getvalue()


# -- the Pareto front -----------------------------------------------------------------------------


def dominates(a, b) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and a != b


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=25))
def test_no_front_pair_is_dominated_and_every_other_pair_is(pairs):
    front = show.pareto_front(pairs)
    on_front = [pairs[i] for i in front]
    assert len(set(front)) == len(front)
    assert on_front == sorted(on_front)  # cheapest first
    for pair in on_front:
        assert not any(dominates(other, pair) for other in pairs)
    for index, pair in enumerate(pairs):
        if index not in front:
            assert any(dominates(other, pair) for other in on_front)


def test_the_front_keeps_equal_pairs_and_drops_a_dearer_equal_error():
    assert show.pareto_front([(2, 5), (1, 5), (1, 5), (3, 1), (3, 2)]) == [1, 2, 3]
    assert show.pareto_front([]) == []


def test_the_front_of_trials_counts_only_complete_ones(tmp_path):
    study = show.load_study(make_study(tmp_path / "s"))
    assert [t.number for t in show.front_trials(study.trials)] == [0, 1, 3]


# -- the EDF --------------------------------------------------------------------------------------


def test_edf_is_the_share_strictly_below_a_level():
    errors = [20.0, 30.0, 30.0, 40.0]
    assert [show.edf(errors, e) for e in (20.0, 20.5, 30.0, 30.1, 41.0)] == \
        [0.0, 0.25, 0.25, 0.75, 1.0]
    assert show.edf([], 10.0) == 0.0
    assert show.edf_levels(errors) == [21.0, 22.0, 25.0]
    assert show.edf_levels([]) == []


def test_edf_steps_rise_by_one_nth_at_each_value():
    assert figures.edf_steps([3.0, 1.0, 2.0, 2.0]) == ([1.0, 1.0, 2.0, 2.0, 3.0],
                                                      [0.0, 0.25, 0.5, 0.75, 1.0])


# -- reading and summarising a study ------------------------------------------------------------


def test_summary_counts_statuses_codes_spreads_and_the_best_trial(tmp_path):
    summary = show.summarize(show.load_study(make_study(tmp_path / "s")))
    assert summary.statuses == {OK: 3, OVER_BUDGET: 1, REJECTED: 3}
    assert summary.rejected == {"SK303": 2, "SK210": 1}
    assert summary.params == (1_000_000, 3_000_000, 8_000_000)
    assert summary.macs == (100_000_000, 300_000_000, 800_000_000)
    assert summary.states == {"complete": 4, "pruned": 1, "failed": 1}
    assert summary.best.number == 3
    assert summary.levels == [(26.0, 0.25), (27.0, 0.25), (30.0, 0.25)]
    text = rendered(summary_renderables(summary))
    for expected in ("7 points of the space", "SK303", "Pareto front: 3 of 4", "3 *",
                     "width=64 depth=2", "25.00%", "0.800", "1.00M"):
        assert expected in text, expected


def summary_renderables(summary):
    from rich.console import Group

    return Group(show.points_table(summary), show.counts_table(summary),
                 show.front_table(summary), show.edf_table(summary))


def test_print_summary_of_a_study_without_trials(tmp_path):
    summary = show.show(make_study(tmp_path / "s", trials=None), plot=False)
    out = io.StringIO()
    show.print_summary(Console(file=out, width=100, color_system=None), summary)
    assert "no trials: trials.jsonl is absent" in out.getvalue()
    assert summary.front == [] and summary.best is None and summary.figures == []


@pytest.mark.parametrize("damage, expected", [
    (lambda f: None, "no such folder"),
    (lambda f: f.write_text("x"), "it is not a folder"),
    (lambda f: f.mkdir(), "no points.jsonl in it"),
    (lambda f: (f.mkdir(), (f / "points.jsonl").write_text("{not json\n")),
     "points.jsonl is not a table of points (not JSON: Expecting property name enclosed in "
     "double quotes)"),
    (lambda f: (make_study(f), (f / "points.jsonl").write_text('{"names": []}\n[1]\n')),
     "points.jsonl is not a table of points (a line is not a JSON object of the expected "
     "fields)"),
    (lambda f: (make_study(f), (f / "points.jsonl").write_text(
        '{"names": []}\n{"index": 0, "status": "fine"}\n')),
     "points.jsonl is not a table of points (point 0 has the status 'fine')"),
    (lambda f: (make_study(f), (f / "trials.jsonl").write_text('{"number": 0, "state": "x"}\n'
                                                               '{"number": 1}\n')),
     "trials.jsonl line 2 is not a trial (no key 'state')"),
    (lambda f: (make_study(f), (f / "trials.jsonl").write_text(
        '{"number": 0, "state": "complete", "error": "low"}\n')),
     "trials.jsonl line 1 is not a trial ('error' is 'low', not a number)"),
])
def test_a_folder_that_is_no_study_is_sk562(tmp_path, damage, expected):
    folder = tmp_path / "study"
    damage(folder)
    with pytest.raises(SkdslError) as caught:
        show.load_study(folder)
    assert caught.value.code == "SK562"
    assert caught.value.message == f"cannot read the study '{folder}': {expected}"
    assert "skdsl explore SPEC --out DIR" in caught.value.hint


# -- figures ------------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_show_writes_three_valid_reproducible_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    folder = make_study(tmp_path / "s")
    paths = show.show(folder).figures
    assert [p.name for p in paths] == ["space.png", "error_macs.png", "edf.png"]
    assert png_size(paths[0]) == (1000, 380)
    first = [p.read_bytes() for p in paths]
    from matplotlib.image import imread  # decodes the whole image: the file is a valid PNG

    assert all(imread(p).shape[2] == 4 for p in paths)
    again = show.show(folder, tmp_path / "again").figures
    assert [p.read_bytes() for p in again] == first


def test_figures_need_matplotlib_sk564(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    assert not figures.available()
    with pytest.raises(SkdslError) as caught:
        show.show(make_study(tmp_path / "s"))
    assert caught.value.code == "SK564" and "skdsl[plot]" in caught.value.hint
    with pytest.raises(SkdslError):
        figures.edf(tmp_path / "edf.png", {"a": [1.0]})
    assert not (tmp_path / "edf.png").exists()


def test_a_figure_that_cannot_be_written_is_sk504(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(SkdslError) as caught:
        figures.edf(tmp_path / "missing" / "edf.png", {"a": [1.0, 2.0]})
    assert caught.value.code == "SK504" and "does not exist" in caught.value.message


# -- compare ------------------------------------------------------------------------------------


def test_compare_labels_both_studies_and_reads_them_at_equal_cost(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    a = make_study(tmp_path / "small")
    b = make_study(tmp_path / "large", trials=TRIALS[1:4], shift=2.0)  # 0.2G to 0.8G
    drawn = []
    real_edf = figures.edf

    def spy(path, curves, **options):
        drawn.append((Path(path).name, {k: len(v) for k, v in curves.items()}))
        return real_edf(path, curves, **options)

    monkeypatch.setattr(figures, "edf", spy)
    result = show.compare([a, b], tmp_path / "out")
    assert drawn == [("edf.png", {"small": 4, "large": 3}),
                     ("edf_macs.png", {"small": 4, "large": 4})]
    assert [p.name for p in result.files] == ["edf.png", "edf_macs.png", "compare.csv"]
    assert all(png_size(p) == (640, 440) for p in result.files[:2])
    assert result.cost_range == (200_000_000, 800_000_000)
    small, large = result.rows
    assert (small.label, large.label) == ("small", "large")
    assert small.equal_cost == [30.0, 35.0, 25.0] and large.equal_cost == [32.0, 37.0, 27.0]
    assert result.levels == [26.0, 27.0, 30.0]
    assert small.fractions == [0.25, 0.25, 0.25] and large.fractions == [0.0, 0.0, 1 / 3]
    text = rendered(show.comparison_table(result), width=160)
    assert "small" in text and "large" in text and "0.200 to 0.800 G" in text
    rows = (tmp_path / "out" / "compare.csv").read_text().splitlines()
    assert rows[1].startswith("small,") and rows[2].startswith("large,")


def test_compare_without_a_common_cost_range(tmp_path):
    a = make_study(tmp_path / "a", trials=TRIALS[:1])
    b = make_study(tmp_path / "b", trials=TRIALS[3:4])
    result = show.compare([a, b], tmp_path / "out", plot=False)
    assert result.cost_range is None and [row.equal_cost for row in result.rows] == [[], []]
    assert "share no multiply-add range" in rendered(show.comparison_table(result))
    assert [p.name for p in result.files] == ["compare.csv"]


def test_compare_names_folders_that_share_a_name_by_their_paths(tmp_path):
    studies = [show.load_study(make_study(tmp_path / side / "run")) for side in ("x", "y")]
    assert show.labels(studies) == [str(tmp_path / "x" / "run"), str(tmp_path / "y" / "run")]
    assert show.labels(studies[:1] * 2) == ["run #1", "run #2"]


def test_compare_of_a_missing_folder_is_sk562(tmp_path):
    with pytest.raises(SkdslError) as caught:
        show.compare([make_study(tmp_path / "a"), tmp_path / "nowhere"], tmp_path / "out")
    assert caught.value.code == "SK562" and "nowhere" in caught.value.message
    assert not (tmp_path / "out").exists()
