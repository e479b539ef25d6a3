"""Training one point of a study: `skdsl train` in a child process, and what became of it.

    check_settings(settings) -> dict      the training settings a study passes to every trial
    train_command(spec, run, values, settings, threads, ...) -> list[str]
    run_trial(command, run, threads, stop=None) -> Outcome
    read_outcome(run, exit_status, seconds) -> Outcome

A trial is `python -m skdsl train SPEC --out RUN --set NAME=VALUE ... --threads T ...` run in a
child process, with its output in RUN/train.log and RUN/train.err. The child imports torch; this
module does not, so the explore process stays light and a crash, a NaN or an out-of-memory kill
of one trial never takes the study down. On Linux the child is tied to the thread that started
it (PR_SET_PDEATHSIG): when the explore process dies, its trials get SIGTERM, save last.pt and
stop, rather than train on, orphaned, beside the trials of the resumed study.

What the run wrote decides the outcome: the epoch records of RUN/metrics.jsonl give the final
and the best validation top-1 (error = 100 - top-1, in %). A child that exits with an error (a
spec that does not build at that point, SK610 a NaN loss, SK611 out of memory), is killed by a
signal, or ends before its first epoch was validated is a failed trial, its reason the last
`error SKnnn` line of its stderr (or its last line) and its exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

from ..base import files
from ..base.errors import SettingError, SkdslError, did_you_mean
from ..core.settings import TrainConfig, config_problem

COMPLETE, FAILED, STOPPED = "complete", "failed", "stopped"
LOG, ERRORS = "train.log", "train.err"  # the child's stdout and stderr, in its run folder
# Settings that explore itself gives every trial: they are not the study's to set.
OWN_SETTINGS = frozenset({"spec", "out", "overrides", "threads", "resume"})
TRAIN_SETTINGS = frozenset(f.name for f in fields(TrainConfig)) - OWN_SETTINGS
SWITCHES = frozenset({"channels_last", "compile", "sync_bn", "deterministic", "plot",
                      "allow_imports_outside"})
FLAG_NAMES = {"config_file": "config"}  # a setting whose flag is not its name
STOP_GRACE_S = 60.0  # how long a trial stopped by SIGINT may take to save last.pt
_TAIL_BYTES = 65536  # of the child's stderr, read for its last error line
# How a child stopped by SIGINT or SIGTERM ends: `skdsl train` saves and exits 128 + n.
_STOP_STATUSES = (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM)

# Linux: the child asks for SIGTERM when the thread that started it ends, then becomes
# `skdsl train` (the request survives exec). argv: the parent's pid, then the command.
_TIED = ("import ctypes, os, signal, sys\n"
         "ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
         "if os.getppid() != int(sys.argv[1]):\n"
         "    sys.exit(143)  # the parent is gone already\n"
         "os.execvp(sys.argv[2], sys.argv[2:])\n")


@dataclass
class Outcome:
    """What became of one trial. `state`: complete (it validated at least one epoch), failed,
    or stopped (explore itself was interrupted: the study retries the point). `error` and
    `best_error` are top-1 errors in % (the last epoch's, the best epoch's)."""

    state: str
    error: float | None = None
    best_error: float | None = None
    time_s: float | None = None
    reason: str | None = None
    exit_status: int | None = None
    epochs: int = 0

    def attrs(self) -> dict:
        """What the study records of it (its `outcome` user attribute; the reason is kept
        apart, in `reason`, as for every trial)."""
        return {"state": self.state, "error": self.error, "best_error": self.best_error,
                "time_s": self.time_s, "exit_status": self.exit_status, "epochs": self.epochs}


def check_settings(settings: dict | None) -> dict:
    """The training settings of a study (TrainConfig's field names: epochs, data, batch_size,
    max_steps, recipe, ...), checked as `skdsl train` would check them, None values left out.
    SettingError (SK510) for one `skdsl train` does not take, or a value it would refuse: a
    mistake is said once, before any trial starts, not once a trial."""
    checked = {}
    for name, value in (settings or {}).items():
        if name in OWN_SETTINGS:
            raise SettingError(f"the training setting '{name}' is explore's own: each trial is "
                               f"given its run folder, its parameter values and its threads",
                               code="SK510")
        if name not in TRAIN_SETTINGS:
            raise SettingError(f"'{name}' is no setting of `skdsl train`", code="SK510",
                               hint=did_you_mean(name, sorted(TRAIN_SETTINGS)))
        if value is None or (name in SWITCHES and value is False):
            continue
        if isinstance(value, tuple):
            value = list(value)  # as JSON keeps it (the study's user attributes)
        checked[name] = value
    problem = config_problem({k: tuple(v) if isinstance(v, list) else v
                              for k, v in checked.items()})
    if problem:
        raise SettingError(f"training {problem}", code="SK510")
    return checked


def value_text(value) -> str:
    """A parameter value as `--set` reads it back: an int as digits, a float by repr (0.5,
    1e-05), a word as it is."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def train_command(spec: str | Path, run: str | Path, values: dict, settings: dict, threads: int,
                  *, overrides: dict | None = None,
                  program: Sequence[str] | None = None) -> list[str]:
    """The command line that trains one point: `program` (default: this Python's
    `-m skdsl train`), the spec, `--out RUN`, a `--set` per parameter (`overrides`, then the
    point's `values`, which win), `--threads`, then the settings as their flags."""
    command = list(program) if program else [sys.executable, "-m", "skdsl", "train"]
    command += [str(spec), "--out", str(run)]
    for name, value in {**(overrides or {}), **values}.items():
        command += ["--set", f"{name}={value_text(value)}"]
    command += ["--threads", str(threads)]
    for name, value in settings.items():
        flag = "--" + FLAG_NAMES.get(name, name).replace("_", "-")
        if name in SWITCHES:
            if value:
                command.append(flag)
        elif name == "crop_scale" and isinstance(value, (list, tuple)):
            command += [flag, f"{value_text(value[0])}-{value_text(value[1])}"]
        elif value is not None:
            command += [flag, value_text(value)]
    return command


def run_trial(command: Sequence[str], run: str | Path, threads: int,
              stop: threading.Event | None = None) -> Outcome:
    """Run `command` (train_command's) in a child process and read what it left in `run`.

    The child's stdout and stderr go to RUN/train.log and RUN/train.err; OMP_NUM_THREADS and
    MKL_NUM_THREADS are set to `threads`. When `stop` is set while it trains, the child gets
    SIGINT (it saves last.pt and exits 130), and the outcome is `stopped`."""
    run = Path(run)
    try:
        run.mkdir(parents=True, exist_ok=True)
        for name in (LOG, ERRORS):
            files.check_output(run / name)
    except OSError as error:  # FileProblem included
        raise SkdslError(f"cannot write the trial's folder '{run}': {error}",
                         code="SK504") from None
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    argv = list(command)
    if sys.platform.startswith("linux"):
        argv = [sys.executable, "-c", _TIED, str(os.getpid()), *argv]
    started = time.monotonic()
    stopped = False
    with open(run / LOG, "wb") as out, open(run / ERRORS, "wb") as err:
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     env=env)
        except OSError as error:
            return Outcome(FAILED, time_s=0.0, reason=f"cannot start {argv[0]!r}: "
                                                      f"{error.strerror or error}")
        try:
            while True:
                try:
                    child.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if stop is not None and stop.is_set() and not stopped:
                        stopped = True
                        child.send_signal(signal.SIGINT)
                        _wait_or_kill(child, STOP_GRACE_S)
                        break
        except BaseException:  # KeyboardInterrupt in the main thread: the child stops too
            child.send_signal(signal.SIGINT)
            _wait_or_kill(child, STOP_GRACE_S)
            raise
    seconds = round(time.monotonic() - started, 3)
    if not stopped and stop is not None and child.returncode in _STOP_STATUSES:
        # Ctrl-C on a terminal reaches the child as well as explore: the child may end before
        # explore's own stop is seen here. A trial stopped by the study's interruption is
        # retried; one stopped by a signal of its own alone is a failure.
        stopped = stop.wait(1.0)
    if stopped:
        return Outcome(STOPPED, time_s=seconds, reason="stopped: explore was interrupted",
                       exit_status=child.returncode)
    return read_outcome(run, child.returncode, seconds)


def _wait_or_kill(child: subprocess.Popen, grace: float) -> None:
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def read_outcome(run: str | Path, exit_status: int, seconds: float | None) -> Outcome:
    """The outcome of a finished child from its exit status and what it left in `run`:
    complete when it exited 0 having validated an epoch; else failed, with the reason."""
    run = Path(run)
    epochs = epoch_records(run / "metrics.jsonl")
    tops = [r["val_top1"] for r in epochs if isinstance(r.get("val_top1"), (int, float))]
    error = best = None
    if tops:
        error, best = _error(tops[-1]), _error(max(tops))
    if exit_status == 0 and tops:
        return Outcome(COMPLETE, error, best, seconds, None, 0, len(epochs))
    if exit_status == 0:
        reason = ("the run validated no epoch (a max_steps below one epoch's steps stops it "
                  "before validation)")
    else:
        reason = f"{_failure(run / ERRORS, exit_status)} ({_exit_text(exit_status)})"
    return Outcome(FAILED, error, best, seconds, reason, exit_status, len(epochs))


def _error(top1: float) -> float:
    return round(100.0 * (1.0 - float(top1)), 6)


def epoch_records(path: Path) -> list[dict]:
    """The epoch records of a run's metrics.jsonl (a line cut short by a kill is skipped);
    none when there is no such file. Read a line at a time: a long run's log is large."""
    records = []
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if '"epoch"' not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("event") == "epoch":
                    records.append(record)
    except OSError:
        return []
    return records


def last_error_line(text: str) -> str | None:
    """The last `... error SKnnn: ...` line of a child's stderr, else its last non-empty line
    (a traceback's last line: `MemoryError`), else None."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error SK" in line:
            return line
    return lines[-1] if lines else None


def _failure(path: Path, exit_status: int) -> str:
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - _TAIL_BYTES))
            text = stream.read().decode("utf-8", errors="replace")
    except OSError:
        text = ""
    line = last_error_line(text)
    if line is not None:
        return line
    if exit_status < 0 or exit_status > 128:
        number = -exit_status if exit_status < 0 else exit_status - 128
        if number == signal.SIGKILL:
            return "killed (SIGKILL: the out-of-memory killer, or a user)"
        return f"stopped by {_signal_name(number)}"
    return "it said nothing on stderr"


def _exit_text(exit_status: int) -> str:
    if exit_status < 0:
        return f"killed by {_signal_name(-exit_status)}"
    return f"exit status {exit_status}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


__all__ = ["Outcome", "check_settings", "train_command", "run_trial", "read_outcome",
           "epoch_records", "last_error_line", "value_text", "TRAIN_SETTINGS", "COMPLETE",
           "FAILED", "STOPPED"]
