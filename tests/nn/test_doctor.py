"""skdsl/nn/doctor.py: the report's keys, the self-check passing, and a failed check exiting 1."""

import json

from skdsl.nn import doctor
from skdsl.commands import main

TOP_KEYS = ["skdsl", "python", "platform", "packages", "extras", "device", "threads", "checks",
            "ok"]
CHECKS = ["parse", "analyse", "compile", "parameters", "multiply-adds", "training step"]


def doctor_json(capsys) -> tuple[int, dict]:
    status = main(["doctor", "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_every_check_passes_and_the_json_has_the_documented_keys(capsys):
    status, data = doctor_json(capsys)
    assert status == 0 and data["ok"] is True
    assert list(data) == TOP_KEYS
    assert [check["name"] for check in data["checks"]] == CHECKS
    assert all(check["status"] == "ok" and check["seconds"] >= 0 for check in data["checks"])
    assert set(data["packages"]) == {"torch", "pydantic", "lark", "networkx", "rich", "numpy"}
    assert data["packages"]["torch"] and data["packages"]["pydantic"]
    assert set(data["extras"]) == {"pillow", "matplotlib", "onnx", "onnxscript", "timm",
                                   "tensorboard"}
    assert set(data["device"]) == {"cpu", "cpu_count", "cuda", "cuda_version", "mps"}
    assert set(data["threads"]) == {"torch", "torch_interop", "affinity", "OMP_NUM_THREADS"}
    analysed = data["checks"][1]["detail"]
    assert analysed.startswith("3,850 params")  # TINY_SPEC's count, pinned


def test_a_count_that_disagrees_fails_and_exits_1(capsys, monkeypatch):
    real = doctor.module_parameters
    monkeypatch.setattr(doctor, "module_parameters", lambda model: real(model) + 1)
    status = main(["doctor"])
    out = capsys.readouterr().out
    assert status == 1
    line = next(line for line in out.splitlines() if "parameters" in line and "FAIL" in line)
    assert "sum(p.numel()) is 3,851, the analysis says 3,850" in line
    assert "skipped" in next(line for line in out.splitlines() if "training step" in line)
    assert "FAILED: parameters, multiply-adds, training step" in out


def test_an_absent_package_is_reported_as_absent():
    assert doctor.installed_version("no-such-distribution", "no_such_module_xyz") is None
    assert doctor.installed_version("rich", "rich")
