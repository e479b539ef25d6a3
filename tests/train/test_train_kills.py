"""Runs are never lost: `skdsl train` killed (SIGKILL) at random moments, inside checkpoint
writes too, resumes to the very weights of an uninterrupted run; two runs never share an --out.

The normal suite kills 10 times; `SKDSL_TEST_KILLS=30 pytest tests/train/test_train_kills.py` kills
more. The killed, refused and resumed runs are `python -m skdsl.train`'s main forked from a process
that imported torch and skdsl once (ZYGOTE below), so that a kill does not cost an interpreter
start and the imports (about 7 s on a busy 2-core machine). The uninterrupted run they must
equal is a fresh `python -m skdsl.train`, sharing nothing with them (not even Python's hash
seed or `random` state); it runs while they are killed.
"""

import json
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


ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

# The zygote: imports what `python -m skdsl.train train` imports (torch and torch._dynamo
# included, OpenMP told to wait passively first, as the command does) and parses the spec once,
# runs nothing of torch's (its OpenMP threads would not survive a fork), then forks one child
# per request on stdin: `python -m skdsl.train`'s main with the request's argv and environment,
# stdout and stderr into one log file. It reaps them and answers one JSON line per request:
# {"pid": N} to "start", {"status": S} to "wait" (None if still running at the deadline; -9
# after a SIGKILL, as Popen's returncode says it).
ZYGOTE = """\
import atexit, json, os, sys, time
from skdsl.train.threads import prefer_passive_waiting
prefer_passive_waiting()
import torch
import torch._dynamo  # what torch.optim's first optimizer imports
import skdsl
import skdsl.train.runner
from skdsl.commands.program import main, training_parser
skdsl.parse(open(sys.argv[1]).read())  # the grammar, built once


def child(request):
    os.environ.clear()
    os.environ.update(request["env"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    status = 70
    try:
        status = main(request["argv"], training_parser)
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def status_of(pid, deadline):
    while True:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(code) if os.WIFSIGNALED(code) else os.WEXITSTATUS(code)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)


for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "start":
        pid = os.fork()
        if pid == 0:
            child(request)
        answer = {"pid": pid}
    else:
        answer = {"status": status_of(request["pid"], time.monotonic() + request["timeout"])}
    sys.stdout.write(json.dumps(answer) + "\\n")
    sys.stdout.flush()
"""


class Zygote:
    """The forking process, from the test's side."""

    def __init__(self, folder: Path, spec: Path):
        self.folder, self.runs = folder, []
        self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(spec)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=ENVIRONMENT, cwd=ROOT)

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, f"the zygote ended (exit {self.process.wait()})"
        return json.loads(answer)

    def start(self, argv: list[str], env: dict[str, str]) -> "Forked":
        log = self.folder / f"run{len(self.runs) + 1}.log"
        run = Forked(self, self.ask(op="start", argv=argv, env=env, log=str(log))["pid"], log)
        self.runs.append(run)
        return run

    def close(self) -> None:
        for run in self.runs:  # a failed test may leave one running
            if self.process.poll() is None and run.poll() is None:
                run.kill()
                run.wait()
        self.process.stdin.close()
        self.process.kill()  # nothing to save, and torch's interpreter exit takes a second
        self.process.wait(timeout=60)


class Forked:
    """A run forked by the zygote, with what the tests use of Popen's interface."""

    def __init__(self, zygote: Zygote, pid: int, log: Path):
        self.zygote, self.pid, self.log, self.returncode = zygote, pid, log, None

    def poll(self, timeout: float = 0.0) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.ask(op="wait", pid=self.pid, timeout=timeout)["status"]
        return self.returncode

    def wait(self, timeout: float = 300) -> int:
        if self.poll(timeout) is None:
            raise subprocess.TimeoutExpired(f"skdsl train (pid {self.pid})", timeout)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, number)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def zygote(tmp_path_factory, spec):
    forks = Zygote(tmp_path_factory.mktemp("forked"), spec)
    yield forks
    forks.close()


def train_argv(spec: Path, out: Path, *extra: str) -> list[str]:
    resume = ["--resume"] if (out / "last.pt").exists() else []
    return ["train", str(spec), "--out", str(out), *FLAGS, *resume, *extra]


def start(spec: Path, out: Path, *extra: str, delay: float = 0.15,
          zygote: Zygote | None = None) -> "subprocess.Popen | Forked":
    """`skdsl train` in a process of its own: forked by `zygote`, else a fresh interpreter
    (`python -m skdsl.train`). Every checkpoint write pauses `delay` seconds between its bytes
    and its rename (state_io's test hook), so kills can land inside one."""
    environment = {**ENVIRONMENT, state_io.WRITE_DELAY_VARIABLE: str(delay)}
    if zygote is not None:
        return zygote.start(train_argv(spec, out, *extra), environment)
    return subprocess.Popen([sys.executable, "-m", "skdsl.train", *train_argv(spec, out, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=environment)


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


def finish(process: "subprocess.Popen | Forked") -> str:
    if isinstance(process, Forked):
        process.wait(timeout=300)
        output = process.output()
    else:
        output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("kills") / "tiny.sk"
    path.write_text(SPEC)
    return path


def test_killed_runs_resume_to_the_weights_of_an_uninterrupted_one(spec, tmp_path, zygote):
    # The uninterrupted run, in a fresh interpreter, trains beside the killed ones (on a core
    # they leave idle: one run at a time, and the test mostly waits for it).
    straight = start(spec, tmp_path / "straight", delay=0)
    try:
        out, chosen = tmp_path / "killed", random.Random(14)
        kills = inside_writes = 0
        while kills < KILLS:
            process = start(spec, out, zygote=zygote)
            if kills % 2 == 0:
                killed = kill_inside_a_write(process, out, writes=chosen.choice((1, 2, 2)))
                inside_writes += killed
            else:
                killed = kill_after_steps(process, out, steps=chosen.randint(1, 5))
            process.wait()
            if not killed:  # it finished before the moment came: start over from scratch
                assert process.returncode == 0, process.output()
                pytest.fail("the run ended before its kill: choose kill moments earlier")
            kills += 1
            assert process.returncode == -signal.SIGKILL
            if (out / "last.pt").exists():
                C.load(out / "last.pt")  # whole and sound after every kill
        assert inside_writes >= KILLS // 2
        finish(start(spec, out, delay=0, zygote=zygote))  # not killed: no pause in its writes
        finish(straight)
    finally:
        if straight.poll() is None:  # the test failed before it ended
            straight.kill()
            straight.wait()
    assert not temporaries(out)  # the killed writes' leftovers were cleared
    reference = C.load(tmp_path / "straight" / "last.pt")
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


def test_a_second_run_on_the_same_out_is_refused_naming_the_first(spec, tmp_path, zygote):
    out = tmp_path / "run"
    first = start(spec, out, delay=1.0, zygote=zygote)  # slow writes keep it running a while
    try:
        assert wait_for(lambda: (out / "last.pt").exists(), first)
        for extra in ([], ["--resume"]):
            second = zygote.start(["train", str(spec), "--out", str(out), *FLAGS, *extra],
                                  {**os.environ, "PYTHONPATH": str(ROOT)})
            assert second.wait(timeout=120) == 2
            assert (f"error SK608: --out '{out}' is in use by another run (pid {first.pid} on "
                    in second.output()), second.output()
        assert first.poll() is None  # the first run goes on undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # A dead process holds nothing: the run resumes at once.
    finish(start(spec, out, "--max-steps", str(C.load(out / "last.pt")["step"] + 1), delay=0,
                 zygote=zygote))
