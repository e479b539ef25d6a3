"""The latency model's arithmetic, without timing anything: every op the compiler emits has a
prediction path, predictions are deterministic and add up, calibrations of another device,
version or damaged are refused. (tests/nn/test_calibration.py runs a real, small calibration.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import skdsl
from skdsl import ops
from skdsl.core import latency as T
from skdsl.core.graph import lower_table

DEVICE = T.Device("cpu", "test CPU", 1, 1, "fp32", "2.13.0")


def calibration(classes=None, **changes) -> T.Calibration:
    values = dict(device=DEVICE, classes=classes or {}, peak_mult_adds=1e10, bandwidth=1e10,
                  dispatch=2e-6, per_node=1e-5, in_network=1.1, stream_bandwidth=1e10)
    return T.Calibration(**{**values, **changes})


def keyword_network(word: str) -> skdsl.Network:
    body = "\n".join(f"        {line}" for line in ops.KEYWORDS[word].example.splitlines())
    uses = 'use "std/resnext.sk"\n'
    return skdsl.parse(f"{uses}network n:\n    input 16x16x16\n    stage s:\n{body}\n")


@pytest.mark.parametrize("word", sorted(ops.KEYWORDS))
def test_every_op_a_keyword_makes_is_predicted(word):
    graph = lower_table(keyword_network(word))
    fallback = T.predict(graph, calibration())
    assert set(fallback.nodes) == {n for n, node in graph.nodes.items() if node.op != "input"}
    assert all(t.how == "roofline" and t.seconds > 0 for t in fallback.nodes.values())
    classes = {T.node_class(node): T.ClassModel((1e-6, 1e-10, 1e-11, 1e-9))
               for node in graph.nodes.values() if node.op != "input"}
    fitted = T.predict(graph, calibration(classes))
    assert all(t.how == "fit" for t in fitted.nodes.values()) and not fitted.fallbacks


def test_the_keyword_examples_reach_every_op_the_compiler_emits():
    """So the test above predicts every op: a new op with no keyword example fails here."""
    reached = {node.op for word in ops.KEYWORDS
               for node in lower_table(keyword_network(word)).nodes.values()}
    split = skdsl.parse("network n:\n    input 16x8x8\n    stage s:\n        split 2 -> a, b\n"
                        "        concat b, a\n")
    reached |= {node.op for node in lower_table(split).nodes.values()}
    assert set(ops.OPS) - reached == set()


def test_a_prediction_is_deterministic_and_adds_up():
    spec = skdsl.load("specs/sknet50.sk")
    graph = lower_table(spec)
    classes = {T.node_class(n): T.ClassModel((3e-6, 2e-11, 1e-10, 1e-9))
               for n in graph.nodes.values() if n.op != "input"}
    first, again = T.predict(spec, calibration(classes)), T.predict(graph, calibration(classes))
    assert first == again
    assert sum(first.stages.values()) == pytest.approx(first.total, rel=1e-12)
    assert sum(t.seconds for t in first.nodes.values()) == pytest.approx(first.total, rel=1e-12)
    assert sum(first.blocks.values()) < first.total  # the stem and head are in no block


def test_a_measured_configuration_is_looked_up_and_others_fit():
    graph = lower_table(skdsl.load("specs/sknet_tiny.sk"))
    conv = next(node for node in graph.nodes.values() if node.op == "conv2d")
    model = T.ClassModel((1e-6, 0.0, 0.0, 0.0), {T.config_key(conv): 0.5})
    prediction = T.predict(graph, calibration({T.node_class(conv): model}, in_network=1.0,
                                              per_node=0.0, stream_bandwidth=0.0))
    looked_up = [t for t in prediction.nodes.values() if t.how == "lookup"]
    assert looked_up and all(t.seconds == 0.5 for t in looked_up)
    assert "conv2d 3x3/2 dense" not in prediction.fallbacks


def test_a_calibration_round_trips_through_its_file(tmp_path):
    original = calibration({"act relu": T.ClassModel((1e-6, 0.0, 2e-10, 0.0), {"k": 3e-6}, 0.05)})
    original.save(tmp_path / "c.json")
    assert T.load_calibration(tmp_path / "c.json") == original


@pytest.mark.parametrize("text, code, words", [
    ("{not json", "SK570", "is not a calibration file"),
    ("[1, 2]", "SK570", "no format version"),
    ('{"version": 99}', "SK571", "format 99"),
    ('{"version": 2, "device": {}}', "SK570", "damaged calibration file"),
])
def test_a_broken_calibration_file_is_refused(tmp_path, text, code, words):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(T.LatencyError) as raised:
        T.load_calibration(path)
    assert raised.value.code == code and words in raised.value.message


def test_a_calibration_of_another_device_is_refused_or_flagged():
    other = T.Device("cpu", "another CPU", 2, 1, "fp32", "2.11.0")
    with pytest.raises(T.LatencyError) as raised:
        T.check_device(calibration(), other)
    assert raised.value.code == "SK572" and "threads 1 (here 2)" in raised.value.message
    assert len(T.check_device(calibration(), other, allow_other=True)) == 3
    assert T.check_device(calibration(), DEVICE) == []


def test_predict_needs_no_torch(tmp_path):
    calibration().save(tmp_path / "c.json")
    code = ("import sys, skdsl\nfrom skdsl.core import latency as T\n"
            f"p = T.predict(skdsl.load('specs/sknet50.sk'), T.load_calibration({str(tmp_path / 'c.json')!r}))\n"
            "assert p.total > 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_predicts_as_json(tmp_path, capsys):
    from skdsl.commands import main

    calibration().save(tmp_path / "c.json")
    assert main(["latency", "predict", "specs/sknet50.sk", "sknet_tiny", "--calibration",
                 str(tmp_path / "c.json"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["network"] for row in rows] == ["sknet50", "sknet_tiny"]
    assert all(row["predicted_ms"] > 0 and row["fallbacks"] for row in rows)


def test_build_adds_the_predicted_time_and_its_stages_add_up(tmp_path, capsys):
    from skdsl.commands import main

    calibration().save(tmp_path / "c.json")
    assert main(["build", "specs/sknet50.sk", "--json", "--latency", str(tmp_path / "c.json")]) == 0
    found = json.loads(capsys.readouterr().out)
    expected = T.predict(skdsl.load("specs/sknet50.sk"), calibration())
    assert found["latency_ms"] == pytest.approx(expected.milliseconds, rel=1e-12)
    assert sum(stage["latency_ms"] for stage in found["stages"]) == pytest.approx(
        found["latency_ms"], rel=1e-12)
    assert main(["build", "specs/sknet50.sk", "--report", "--latency",
                 str(tmp_path / "c.json")]) == 0
    table = capsys.readouterr().out
    assert f"{expected.milliseconds:.2f}" in table and "(predicted)" in table


def test_a_fifo_is_never_read_as_a_calibration_nor_replaced_by_one(tmp_path, capsys):
    import os

    from skdsl.commands import main

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(T.LatencyError) as raised:
        T.load_calibration(fifo)  # would wait for a writer forever if opened as a file
    assert raised.value.code == "SK570" and "pipe" in raised.value.message
    assert main(["latency", "calibrate", "--out", str(fifo)]) == 2
    assert "error SK574" in capsys.readouterr().err and fifo.is_fifo()


def test_compare_shows_each_networks_predicted_time_and_its_delta(tmp_path, capsys):
    from skdsl.commands import main

    calibration().save(tmp_path / "c.json")
    assert main(["compare", "specs/resnext50_32x4d.sk", "specs/sknet50.sk", "--format", "json",
                 "--latency", str(tmp_path / "c.json")]) == 0
    base, sk = json.loads(capsys.readouterr().out)["rows"]
    predicted = {name: T.predict(skdsl.load(f"specs/{name}.sk"), calibration()).milliseconds
                 for name in ("resnext50_32x4d", "sknet50")}
    assert base["latency_ms"] == pytest.approx(predicted["resnext50_32x4d"], rel=1e-12)
    assert sk["delta_latency_percent"] == pytest.approx(
        round(100 * (predicted["sknet50"] / predicted["resnext50_32x4d"] - 1), 2))
