"""Runs are never lost: `skdsl train` killed (SIGKILL) at random moments, inside checkpoint
writes too, resumes to the very weights of an uninterrupted run; two runs never share an --out.

The normal suite kills 10 times; `SKDSL_TEST_KILLS=30 pytest tests/train/test_train_kills.py` kills
more (each kill costs a process start, about 3 s on a busy 2-core machine).
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from skdsl.nn import state_io
from skdsl.train import checkpoint as C

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("SKDSL_TEST_KILLS", "10"))

# Dropout: a resumed run must restore the random state too, or the weights differ.
SPEC = """\
network tiny:
    input 3x8x8
    classes 3
    stage body: conv 3x3, 8
    stage head:
        avgpool global
        dropout 0.2
        fc classes
"""
# 4 steps an epoch, and enough epochs (checkpoint writes) that every kill finds work to stop.
EPOCHS = max(6, KILLS + 2)
FLAGS = ["--data", "synthetic:train=32,val=8", "--batch-size", "8", "--epochs", str(EPOCHS),
         "--seed", "1", "--device", "cpu"]


def start(spec: Path, out: Path, *extra: str, delay: float = 0.15) -> subprocess.Popen:
    """`skdsl train` in a process of its own; every checkpoint write pauses `delay` seconds
    between its bytes and its rename (state_io's test hook), so kills can land inside one."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
                   state_io.WRITE_DELAY_VARIABLE: str(delay)}
    resume = ["--resume"] if (out / "last.pt").exists() else []
    return subprocess.Popen([sys.executable, "-m", "skdsl.train", "train", str(spec), "--out",
                             str(out), *FLAGS, *resume, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=environment)


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll until `condition()` holds (True) or the process ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("the training process neither progressed nor ended")


def temporaries(out: Path) -> list[Path]:
    return list(out.glob(".*.tmp"))


def step_lines(out: Path) -> int:
    try:
        return (out / "metrics.jsonl").read_text().count('"event": "step"')
    except FileNotFoundError:
        return 0


def kill_inside_a_write(process: subprocess.Popen, out: Path, writes: int) -> bool:
    """SIGKILL while the `writes`-th checkpoint write of this process is under way."""
    seen = 0
    while seen < writes:
        if not wait_for(lambda: temporaries(out), process):
            return False
        seen += 1
        if seen < writes and not wait_for(lambda: not temporaries(out), process):
            return False
    process.kill()
    return True


def kill_after_steps(process: subprocess.Popen, out: Path, steps: int) -> bool:
    """SIGKILL once the process has logged `steps` more optimiser steps."""
    before = step_lines(out)
    if not wait_for(lambda: step_lines(out) >= before + steps, process):
        return False
    process.kill()
    return True


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("kills") / "tiny.sk"
    path.write_text(SPEC)
    return path


def test_killed_runs_resume_to_the_weights_of_an_uninterrupted_one(spec, tmp_path):
    finish(start(spec, tmp_path / "straight", delay=0))
    reference = C.load(tmp_path / "straight" / "last.pt")
    out, chosen = tmp_path / "killed", random.Random(14)
    kills = inside_writes = 0
    while kills < KILLS:
        process = start(spec, out)
        if kills % 2 == 0:
            killed = kill_inside_a_write(process, out, writes=chosen.choice((1, 2, 2)))
            inside_writes += killed
        else:
            killed = kill_after_steps(process, out, steps=chosen.randint(1, 5))
        process.wait()
        if not killed:  # it finished before the moment came: start over from scratch
            assert process.returncode == 0, process.stdout.read()
            pytest.fail("the run ended before its kill: choose kill moments earlier")
        kills += 1
        assert process.returncode == -signal.SIGKILL
        if (out / "last.pt").exists():
            C.load(out / "last.pt")  # whole and sound after every kill
    assert inside_writes >= KILLS // 2
    finish(start(spec, out))
    assert not temporaries(out)  # the killed writes' leftovers were cleared
    resumed = C.load(out / "last.pt")
    assert ((resumed["epoch"], resumed["step"]) == (reference["epoch"], reference["step"])
            == (EPOCHS, 4 * EPOCHS))
    for name, tensor in reference["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    for index, state in reference["optimizer"]["state"].items():
        assert torch.equal(resumed["optimizer"]["state"][index]["momentum_buffer"],
                           state["momentum_buffer"])
    assert [r["val_top1"] for r in resumed["history"]] == [r["val_top1"]
                                                          for r in reference["history"]]


def test_a_second_run_on_the_same_out_is_refused_naming_the_first(spec, tmp_path):
    out = tmp_path / "run"
    first = start(spec, out, delay=1.0)  # slow writes keep it running a while
    try:
        assert wait_for(lambda: (out / "last.pt").exists(), first)
        for extra in ([], ["--resume"]):
            second = subprocess.run([sys.executable, "-m", "skdsl.train", "train", str(spec),
                                     "--out", str(out), *FLAGS, *extra], capture_output=True,
                                    text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert second.returncode == 2
            assert (f"error SK608: --out '{out}' is in use by another run (pid {first.pid} on "
                    in second.stderr), second.stderr
        assert first.poll() is None  # the first run goes on undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # A dead process holds nothing: the run resumes at once.
    finish(start(spec, out, "--max-steps", str(C.load(out / "last.pt")["step"] + 1), delay=0))
