"""A real calibration of this machine, as small as it goes (one shape per op class), through the
command line; and `latency check` beside it. Nothing here asserts on a time: only that times are
measured, kept, read back and compared (benchmarks/latency_accuracy.py measures accuracy)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from skdsl.commands import main
from skdsl.core import latency as T
from skdsl.nn import calibration as C


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    path = tmp_path_factory.mktemp("latency") / "cal.json"
    assert main(["latency", "calibrate", "--per-class", "1", "--out", str(path)]) == 0
    return path


def test_a_calibration_times_every_class_of_the_shipped_specs(calibrated):
    calibration = T.load_calibration(calibrated)
    assert set(calibration.classes) == set(C.shipped_configurations())
    assert all(len(model.measured) == 1 for model in calibration.classes.values())
    assert calibration.device == C.current_device()
    assert calibration.per_node >= 0 and calibration.in_network >= 0.5
    assert calibration.peak_mult_adds > 0 and calibration.stream_bandwidth > 0


def test_check_builds_times_and_compares(calibrated, capsys):
    assert main(["latency", "check", "sknet_tiny", "--calibration", str(calibrated),
                 "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["network"] == "sknet_tiny" and row["predicted_ms"] > 0 and row["measured_ms"] > 0
    assert set(row["measured_stages"]) == set(row["stages"])


def test_check_refuses_another_devices_calibration(calibrated, tmp_path, capsys):
    other = T.load_calibration(calibrated)
    other = replace(other, device=replace(other.device, name="another CPU"))
    other.save(tmp_path / "other.json")
    assert main(["latency", "check", "sknet_tiny", "--calibration",
                 str(tmp_path / "other.json")]) == 2
    assert "error SK572" in capsys.readouterr().err


def test_spread_runs_from_the_least_work_to_the_most():
    nodes = list(C.shipped_configurations()["conv2d 1x1/1 dense"].values())
    chosen = C.spread(nodes, 5)
    works = [T.node_work(node) for node in chosen]
    assert len(chosen) == 5 and works == sorted(works)
    assert works[0] == min(map(T.node_work, nodes)) and works[-1] == max(map(T.node_work, nodes))


def test_the_fit_is_a_non_negative_line_through_its_samples():
    samples = [(m, e, w, 1e-6 + 2e-11 * m + 3e-10 * e + 4e-9 * w) for m, e, w in
               ((0, 10, 0), (1e6, 100, 5e3), (1e8, 5e4, 1e4), (3e7, 1e3, 3e5), (5e5, 7e3, 40))]
    line, error = C.fit(samples)
    assert line == pytest.approx((1e-6, 2e-11, 3e-10, 4e-9), rel=1e-6) and error < 1e-9
    line, _ = C.fit([(1.0, 1.0, 1.0, 5.0), (2.0, 2.0, 2.0, 1.0)])  # falls with work: no negative
    assert min(line) >= 0


def test_the_memory_guard_bounds_every_shipped_op():
    from skdsl.commands.latency import LARGEST_OP_ELEMENTS

    assert max(T.node_work(node)[1] for nodes in C.shipped_configurations().values()
               for node in nodes.values()) <= LARGEST_OP_ELEMENTS


@pytest.mark.parametrize("flags, words", [
    (["--threads", "100000"], "cores"), (["--per-class", "65"], "at most 64"),
    (["--batch", "100000000"], "more than half of the memory"), (["--batch", "0"], "at least 1"),
])
def test_calibrate_refuses_settings_out_of_reach(flags, words, capsys):
    assert main(["latency", "calibrate", *flags]) == 2
    err = capsys.readouterr().err
    assert "error SK573" in err and words in err


def test_out_dash_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["latency", "calibrate", "--out", "-"]) == 2
    assert "error SK574" in capsys.readouterr().err and not (tmp_path / "-").exists()
