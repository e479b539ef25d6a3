"""Running what a property test runs: `run_check()`, the `skdsl check` command in process,
and `time_limit()`, which turns a hang into a TimeoutError.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import signal
import threading
from pathlib import Path

import skdsl
from skdsl.errors import SpecError


def run_check(path: str | Path, *extra: str) -> tuple[int, str]:
    """Run `skdsl check PATH` in process: (exit status, stdout + stderr).

    Uses skdsl.cli.main when skdsl/cli.py exists; otherwise does what `check` does: load and
    lower the spec, exit status 0, or 2 with the SpecError rendered. Exceptions other than
    SystemExit propagate (a crash is a bug).
    """
    if importlib.util.find_spec("skdsl.cli") is None:
        try:
            skdsl.analyze(skdsl.load(path))
        except SpecError as error:
            return error.exit_status, error.render() + "\n"
        return 0, f"{path}: ok\n"
    from skdsl import cli

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            status = cli.main(["check", str(path), *extra])
        except SystemExit as exit_:
            status = exit_.code
    if status is None:
        status = 0
    elif not isinstance(status, int):
        buffer.write(str(status))
        status = 1
    return status, buffer.getvalue()


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
