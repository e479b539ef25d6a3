"""Running what a property test runs: `run_check()`, what the `skdsl check` command does, in
process, and `time_limit()`, which turns a hang into a TimeoutError.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from skdsl.core.analysis import analyze
from skdsl.base.errors import SkdslError
from skdsl.lang.loading import load


def run_check(path: str | Path, overrides: dict | None = None) -> tuple[int, str]:
    """What `skdsl check PATH` (with `--set` `overrides`) does, through the library: (exit
    status, output). 0 and the check line, or the error's status (2) and the error rendered;
    any other exception propagates (a crash is a bug). The command line itself is fuzzed
    (skdsl/fuzz/spec.py) and tested (tests/commands/test_cli.py); this is the same in the library's words.
    """
    from skdsl.report import network as report

    try:
        analysis = analyze(load(path, overrides))
    except SkdslError as error:
        return error.exit_status, error.render() + "\n"
    return 0, report.check_line(analysis) + "\n"


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TimeoutError in the block after `seconds` (a hang becomes a failing example).

    Uses SIGALRM, so it only acts in the main thread on POSIX; elsewhere it does nothing.
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds:g} s: a hang?")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
