"""`skdsl explore SPEC`: the --where budget (SK561), drawing points (random, sobol, grid; SK565),
and the command end to end on a tiny spec: points.csv / points.jsonl, statuses, --resume (SK562),
--space mistakes (SK560), `explore show`, --train larger than --sample (SK566)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from skdsl.base.errors import SkdslError, SpecError
from skdsl.commands import main
from skdsl.core.space import Space
from skdsl.explore.budget import Budget
from skdsl.explore.counting import Counter
from skdsl.explore.points import OK, OVER_BUDGET, REJECTED, Point, read_points
from skdsl.explore.sampling import draw
from skdsl.lang.parser import parse_text
from skdsl.lang.space import read_space

ROOT = Path(__file__).resolve().parents[2]

# 4 widths × 3 groups × 2 depths = 24 points: G = 3 fails to divide 8, 16 and 32 when lowered
# (SK301), and the where refuses the deep w = 8 (SK243).
TINY = """\
param w = 16 in 8..32 step 8
param G = 2 in {1, 2, 3}
param d = 1 in 1..2
where w != 8 or d == 1

block unit(c, g):
    conv 3x3, c, G=g

network tiny:
    input 3x8x8
    classes 3
    stage stem: conv 3x3, w
    stage body: unit(w, G) x d
    stage head:
        avgpool global
        fc classes
"""
BUDGET = "params <= 4k and macs <= 300k"
PLAIN = TINY.split("network")[1]  # a network with no params at all


def run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_user_error(result, code: str, *fragments: str) -> str:
    status, out, err = result
    assert status == 2, err
    assert f"error {code}" in err, err
    assert "Traceback" not in err and "internal error" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.sk"
    path.write_text(TINY)
    return path


def point(params=1, macs=1, activations=1, peak=1) -> Point:
    return Point(0, {}, params=params, macs=macs, activations=activations, peak_bytes=peak)


# -- the budget -----------------------------------------------------------------------------


def test_a_budget_admits_what_its_condition_says():
    budget = Budget("params <= 25M and macs <= 4.5G")
    assert budget.names == ["macs", "params"]
    assert budget.admits(point(25_000_000, 4_500_000_000))
    assert not budget.admits(point(25_000_001, 4_500_000_000))
    assert not budget.admits(point(25_000_000, 4_500_000_001))
    assert Budget("flops <= 9G").admits(point(macs=4_500_000_000))
    assert not Budget("flops <= 9G").admits(point(macs=4_500_000_001))
    assert Budget("params <= 1.5k").admits(point(1500)) and \
        not Budget("params <= 1.5k").admits(point(1501))
    either = Budget("params < 1M or not activations >= 100k")
    assert either.admits(point(2_000_000, activations=99_999))
    assert not either.admits(point(2_000_000, activations=100_000))
    assert either.admits(point(999_999, activations=10**9))
    assert Budget("peak <= 100M and params > 0").admits(point(1, peak=100_000_000))
    assert not Budget("peak <= 100M").admits(point(peak=100_000_001))
    assert Budget("params * 4 <= peak").admits(point(10, peak=40))
    assert Budget("latency <= 5", counted=("params", "latency")).names == ["latency"]


@pytest.mark.parametrize("text, column, fragments", [
    ("parms <= 25M", 1, ["not 'parms'", "did you mean 'params'"]),
    ("params <= 25M and mac <= 4G", 19, ["not 'mac'", "did you mean 'macs'"]),
    ("latency <= 5", 1, ["does not count latency"]),
    ("params <= 1M and latency < 2", 18, ["does not count latency"]),
    ("params", 1, ["compares a count with a limit"]),
    ("params + macs", 1, ["compares"]),
    ("params <= 1M or macs", None, ["compares"]),
    ("params <=", None, []),
    ("params <= 1M,", None, []),
])
def test_budget_mistakes_are_sk561_in_the_where_flag(text, column, fragments):
    with pytest.raises(SpecError) as caught:
        Budget(text)
    error = caught.value
    assert error.code == "SK561", error.message
    assert error.span is not None and error.span.file == "--where" and error.span.line == 1
    if column is not None:
        assert error.span.column == column
    rendered = error.message + " " + (error.hint or "")
    for fragment in fragments:
        assert fragment in rendered, rendered


def test_a_budget_refuses_a_point_it_cannot_read():
    with pytest.raises(SpecError) as caught:
        Budget("params <= 1M").admits(Point(0, {}))
    assert caught.value.code == "SK561"


# -- drawing points -------------------------------------------------------------------------

SPACE = """\
param w = 16 in 8..32 step 8
param G = 2 in {1, 2, 3}
param k = 4 in log 1..64
param f = 0.5 in 0.25..1.0
param a = relu in {relu, silu}
network n:
    input 3x8x8
    classes 3
    stage head:
        avgpool global
        fc classes
"""


def space_of(text: str, flags=None) -> Space:
    return read_space(parse_text(text, "space.sk"), flags)


def in_space(space: Space, values: dict) -> bool:
    return list(values) == list(space.names) and all(
        values[d.name] in d.domain for d in space.dimensions)


@pytest.mark.parametrize("sampler", ["random", "sobol"])
def test_draws_are_deterministic_per_seed(sampler):
    space = space_of(SPACE)
    first = draw(space, 16, sampler, seed=7)
    assert len(first) == 16 and all(in_space(space, values) for values in first)
    assert draw(space, 16, sampler, seed=7) == first
    assert draw(space, 16, sampler, seed=8) != first
    assert len({repr(values) for values in first}) > 8  # not one point over and over
    assert draw(space, 5, sampler, seed=7) == first[:5]  # a longer run only adds points


def test_tpe_and_nsga2_count_their_random_start():
    space = space_of(SPACE)
    assert draw(space, 6, "tpe", 3) == draw(space, 6, "random", 3) == draw(space, 6, "nsga2", 3)


def test_a_grid_returns_each_point_of_a_finite_space_once():
    space = space_of(SPACE, {"f": "0.25..1.0 step 0.25", "k": "{1, 8}"})
    size = 4 * 3 * 2 * 4 * 2
    assert space.size() == size
    every = draw(space, 10_000, "grid", seed=0)
    assert len(every) == size
    assert all(in_space(space, values) for values in every)
    assert {repr(sorted(v.items())) for v in every} == \
        {repr(sorted(v.items())) for v in space.grid()}
    assert draw(space, 10_000, "grid", seed=0) == every
    assert len({repr(v) for v in draw(space, 20, "grid", seed=1)}) == 20


def test_a_grid_over_a_float_range_without_step_is_sk565():
    with pytest.raises(SkdslError) as caught:
        draw(space_of(SPACE), 10, "grid")
    assert caught.value.code == "SK565" and "f" in caught.value.message
    with pytest.raises(SkdslError) as caught:
        draw(space_of(SPACE), 10, "annealing")
    assert caught.value.code == "SK565"
    assert draw(space_of(SPACE), 0) == [] and draw(Space(), 5) == []


# -- the command ----------------------------------------------------------------------------


def csv_rows(folder: Path) -> list[dict]:
    with open(folder / "points.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def as_csv(value) -> str:
    return "" if value is None else str(value)


def status_counts(out: str) -> dict:
    """The points column of `explore show`'s status table."""
    found = {}
    for status in (OK, OVER_BUDGET, REJECTED):
        match = re.search(rf"^\W*{status}\W+(\d+)\W", out, flags=re.M)
        assert match, (status, out)
        found[status] = int(match.group(1))
    return found


def test_explore_end_to_end(capsys, tiny, tmp_path):
    out_dir = tmp_path / "study"
    status, out, err = run(capsys, "explore", tiny, "--sample", 20, "--out", out_dir,
                           "--where", BUDGET, "--no-plot", "--seed", 3)
    assert status == 0, err
    assert "Traceback" not in err and "20 points drawn in" in err and "counted in" in err
    names, points = read_points(out_dir)
    assert names == ["w", "G", "d"] and len(points) == 20
    assert [p.index for p in points] == list(range(20))
    # the CSV holds the rows of the JSONL, column for column
    rows = csv_rows(out_dir)
    jsonl = [json.loads(line) for line in (out_dir / "points.jsonl").read_text().splitlines()]
    assert jsonl[0] == {"columns": list(rows[0]), "names": names}
    assert rows == [{key: as_csv(value) for key, value in line.items()} for line in jsonl[1:]]
    assert [p.row() for p in points] == jsonl[1:]
    # each row as the budget and the counter say
    budget, counter = Budget(BUDGET), Counter(tiny)
    for p in points:
        assert set(p.values) == set(names) and p.values["w"] in (8, 16, 24, 32)
        counted = counter.count(p.values, p.index)
        assert p.counts() == counted.counts()
        if p.status == REJECTED:
            assert p.error == counted.error and re.fullmatch(r"SK\d{3}", p.error) and p.message
            assert p.params is None
            if p.error == "SK243":
                assert p.values["w"] == 8 and p.values["d"] == 2
            else:
                assert p.error == "SK301" and p.values["G"] == 3
        else:
            assert counted.status == OK and p.error is None and p.params > 0
            assert p.status == (OK if budget.admits(p) else OVER_BUDGET)
    statuses = {s: sum(p.status == s for p in points) for s in (OK, OVER_BUDGET, REJECTED)}
    assert all(statuses.values()), statuses  # seed 3 draws some of each
    assert status_counts(out) == statuses
    settings = json.loads((out_dir / "explore.json").read_text())
    assert settings["sample"] == 20 and settings["seed"] == 3 and settings["where"] == BUDGET
    assert settings["space"]["where"] == ["w != 8 or d == 1"]

    # the same command again: SK562, nothing touched
    before = {name: (out_dir / name).read_bytes() for name in ("points.csv", "points.jsonl")}
    assert_user_error(run(capsys, "explore", tiny, "--sample", 20, "--out", out_dir, "--where",
                          BUDGET, "--no-plot", "--seed", 3), "SK562", "--resume")
    # with --resume: read back, not counted again
    status, out_again, err = run(capsys, "explore", tiny, "--sample", 20, "--out", out_dir,
                                 "--where", BUDGET, "--no-plot", "--seed", 3, "--resume")
    assert status == 0, err
    assert "read back (--resume)" in err
    assert status_counts(out_again) == statuses
    assert read_points(out_dir) == (names, points)
    assert before == {name: (out_dir / name).read_bytes() for name in before}
    # --resume with other settings is SK562 too
    assert_user_error(run(capsys, "explore", tiny, "--sample", 20, "--out", out_dir, "--where",
                          BUDGET, "--no-plot", "--seed", 4, "--resume"), "SK562", "seed")
    # explore show reprints the tables
    status, shown, err = run(capsys, "explore", "show", out_dir, "--no-plot")
    assert status == 0, err
    assert "points of the space" in shown and status_counts(shown) == statuses
    if statuses[REJECTED]:
        assert "SK301" in shown or "SK243" in shown
    assert not list(out_dir.glob("*.png"))


def test_the_same_seed_draws_the_same_rows_and_a_grid_every_point(capsys, tiny, tmp_path):
    for name in ("a", "b"):
        assert run(capsys, "explore", tiny, "--sample", 12, "--out", tmp_path / name,
                   "--no-plot", "--seed", 5)[0] == 0
    assert (tmp_path / "a" / "points.jsonl").read_text() == \
        (tmp_path / "b" / "points.jsonl").read_text()
    status, _, err = run(capsys, "explore", tiny, "--sample", 100, "--out", tmp_path / "grid",
                         "--sampler", "grid", "--no-plot")
    assert status == 0, err
    _, points = read_points(tmp_path / "grid")
    assert len(points) == 24
    assert len({(p.values["w"], p.values["G"], p.values["d"]) for p in points}) == 24
    assert sum(p.error == "SK243" for p in points) == 3  # w = 8, d = 2, any G


def test_space_flags_widen_the_space(capsys, tiny, tmp_path):
    status, _, err = run(capsys, "explore", tiny, "--sample", 8, "--out", tmp_path / "s",
                         "--space", "G={1, 4}", "--space", "d=3..3", "--no-plot")
    assert status == 0, err
    _, points = read_points(tmp_path / "s")
    assert {p.values["G"] for p in points} <= {1, 4} and {p.values["d"] for p in points} == {3}
    settings = json.loads((tmp_path / "s" / "explore.json").read_text())
    assert settings["space"]["G"] == "{1, 4}" and settings["space"]["d"] == "3..3"


@pytest.mark.parametrize("argv, code, fragments", [
    (["--space", "X={1,2}"], "SK560", ["no parameter 'X'", "w, G, d"]),
    (["--space", "W={1,2}"], "SK560", ["no parameter 'W'", "did you mean 'w'"]),
    (["--space", "G"], "SK560", ["NAME=DOMAIN"]),
    (["--space", "G="], "SK560", ["NAME=DOMAIN"]),
    (["--space", "G={1}", "--space", "G={2}"], "SK560", ["twice"]),
    (["--space", "G=256..32"], "SK240", ["--space G:1:1", "is empty"]),
    (["--space", "G={1,,2}"], "SK101", ["--space G:1:"]),
    (["--space", "w={8}", "--space", "d=2..2"], "SK242", ["tiny.sk:4:1", "w != 8"]),
    (["--where", "parms <= 1M"], "SK561", ["--where:1:1", "did you mean 'params'"]),
    (["--where", "latency <= 3"], "SK561", ["latency"]),
    (["--where", "params"], "SK561", ["compares"]),
    (["--train", "21"], "SK566", ["--train 21", "20 points"]),
    (["--sample", "0"], "SK566", ["--sample 0"]),
    (["--set", "G=1"], "SK560", ["--set G"]),
])
def test_explore_mistakes_exit_2_and_write_nothing(capsys, tiny, tmp_path, argv, code,
                                                   fragments):
    out_dir = tmp_path / "study"
    result = run(capsys, "explore", tiny, "--sample", 20, "--out", out_dir, "--no-plot", *argv)
    assert_user_error(result, code, *fragments)
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_a_spec_without_a_space_is_sk560(capsys, tmp_path):
    path = tmp_path / "plain.sk"
    path.write_text("network" + PLAIN)
    out_dir = tmp_path / "study"
    assert_user_error(run(capsys, "explore", path, "--sample", 5, "--out", out_dir, "--no-plot"),
                      "SK560", "declares no design space")
    assert not out_dir.exists()
    assert_user_error(run(capsys, "explore", path, "--sample", 5, "--no-plot"), "SK566",
                      "--out")


# -- found while writing these tests ---------------------------------------------------------


def test_a_grid_over_a_float_step_stays_inside_its_domain():
    # found while writing these tests: 0.1 + 3 × 0.2 is 0.7000000000000001, outside 0.1..0.7
    space = space_of(SPACE, {"f": "0.1..0.7 step 0.2", "w": "{8}", "G": "{1}", "k": "{4}",
                             "a": "{relu}"})
    every = draw(space, 100, "grid")
    assert len(every) == 4
    assert all(in_space(space, values) for values in every), [v["f"] for v in every]
    assert sorted(v["f"] for v in every) == [0.1, 0.3, 0.5, 0.7]


def test_a_param_named_like_a_column_is_refused(capsys, tmp_path):
    # found while writing these tests: the row's `params` column overwrote the param's value
    path = tmp_path / "named.sk"
    path.write_text(TINY.replace("param w = 16", "param params = 16")
                    .replace("w != 8", "params != 8").replace("(w, G)", "(params, G)")
                    .replace("conv 3x3, w", "conv 3x3, params"))
    assert_user_error(run(capsys, "explore", path, "--sample", 6, "--out", tmp_path / "s",
                          "--no-plot"), "SK240", f"{path}:1:7", "'params'")
    assert not (tmp_path / "s").exists()
