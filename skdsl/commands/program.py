"""The `skdsl` command line: arguments in, exit status out.

    skdsl build specs/sknet50.sk --report      # Table 1 of the paper, for this spec
    skdsl check specs/sknet50.sk               # ok: sknet50 — 27,479,784 params, ...

Exit statuses: 0 ok, 2 a user's mistake (every `SkdslError`, bad flags, unusable files),
70 an internal error (a bug: reported in one line, no traceback), 130 interrupted. The warnings
(SK7xx) of the specs a command reads are printed before it runs and change no status, unless
--strict makes them errors (arguments.add_strict_argument).

Each command is a module of this package with `register(commands)` (its subparser, with
`run=` set) and `run(args) -> int`; COMMANDS lists them in the order `skdsl --help` shows.
A module imports what its command needs inside `run`: build, check, spec and graph never
import torch, and rich only when they draw a table. Errors below the command line name
settings (`batch_size`); `_report` prints them with the flags' names (`--batch-size`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from typing import Callable

from ..base.errors import CliError, SkdslError
from ..version import __version__
from . import (build, check, compare, doctor, explore, export, graph, inspect, latency, spec,
               tables, train, weights)
from .arguments import WarningsAsErrors, flag, spec_warnings

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 70
EXIT_INTERRUPTED = 130

EPILOG = """\
examples:
  skdsl build specs/sknet50.sk                   one-line summary: params, multiply-adds
  skdsl build specs/sknet50.sk --report          the paper's Table 1 for this network
  skdsl build specs/sknet50.sk --layers          every layer with its shape and cost
  skdsl build specs/sknet50.sk --json            machine-readable counts (docs/cli.md)
  skdsl build specs/sknet50.sk --input 3x320x320 the same network on 320×320 images
  skdsl build my_net.sk --set M=3 --set G=64     override the spec's `param`s
  skdsl check specs/sknet50.sk                   parse, expand and infer every shape
  skdsl spec specs/sknet50.sk --json > s.json    the expanded spec; `build s.json` reads it back
  skdsl spec --schema                            the JSON schema of a spec
  skdsl graph specs/sknet50.sk --depth 2 -o sknet50.dot && dot -Tsvg sknet50.dot -o sknet50.svg

exit status: 0 ok, 2 error in a spec or on the command line, 70 internal error, 130 interrupted.
"""

COMMANDS = [build.register, check.register, spec.register, graph.register, train.register,
            export.register, weights.register, compare.register, tables.register,
            inspect.register, explore.register, latency.register, doctor.register]

def build_parser(commands: list[Callable] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skdsl", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="skdsl: a declarative language and compiler for Selective Kernel Networks.")
    parser.add_argument("--version", action="version", version=f"skdsl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS if commands is None else commands:
        register(subparsers)
    return parser


def training_parser() -> argparse.ArgumentParser:
    """`python -m skdsl.train`'s parser (for torchrun): the train and eval commands alone."""
    parser = argparse.ArgumentParser(prog="python -m skdsl.train",
                                     description="skdsl's training and evaluation commands.")
    train.register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


# -- entry point --------------------------------------------------------------------------------


def main(argv: list[str] | None = None,
         parser: Callable[[], argparse.ArgumentParser] = build_parser) -> int:
    """Run one command; the exit status is returned, never raised (argparse's own --help and
    usage errors are caught here too). `parser` builds the parser (another program's, such as
    `python -m skdsl.train`'s)."""
    _tolerate_narrow_encodings()
    with _usable_standard_streams():
        return _run(argv, parser)


def _run(argv: list[str] | None, parser: Callable[[], argparse.ArgumentParser]) -> int:
    try:
        args = parser().parse_args(argv)
        _warn(args)
        status = args.run(args)
        sys.stdout.flush()  # a full disk must fail here, where it is reported, not at exit
        return status
    except SkdslError as error:
        return _report(error)
    except SystemExit as exit_:  # argparse: --help, --version (0) and usage errors (2)
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USER_ERROR)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `skdsl graph ... | head`: the reader left; say nothing, and keep Python from
        # complaining again when it flushes stdout at exit.
        _silence_stdout()
        return EXIT_OK
    except OutputLost as lost:  # `>&-`, `>/dev/full`: the exit status must say the output is lost
        _silence_stdout()
        return _report(CliError(f"cannot write the output: {lost}", code="SK507"))
    except Exception as error:  # noqa: BLE001 - the last line of defence: no tracebacks
        return _internal_error(error)


def _warn(args: argparse.Namespace) -> None:
    """The warnings of the specs the command reads, on stderr before it runs; under --strict,
    errors that stop it."""
    warnings = spec_warnings(args)
    if warnings and getattr(args, "strict", False):
        raise WarningsAsErrors(warnings)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, the first process speaks for all
        for warning in warnings:
            _tell(warning.render(flag))


def _report(error: SkdslError) -> int:
    _tell(error.render(flag))
    return error.exit_status


def _tell(text: str) -> None:
    """A message on stderr; when stderr is closed (`2>&-`) it is lost, and only the exit status
    speaks."""
    if sys.stderr is None:  # print(file=None) would write to stdout
        return
    try:
        print(text, file=sys.stderr)
    except (OSError, ValueError):
        pass


class OutputLost(Exception):
    """stdout cannot take the command's output: closed by the shell, or on a full disk."""


class _GuardedStdout:
    """stdout for the length of one command: a failed write raises `OutputLost`, so that a lost
    output is reported as such (SK507), not as a bug in skdsl nor as success. Python sets a
    stream the shell closed (`>&-`) to None: then every write fails."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guarded("write", text)

    def flush(self) -> None:
        self._guarded("flush")

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def _guarded(self, method: str, *args):
        if self._stream is None:
            raise OutputLost("standard output is closed")
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputLost(_os_reason(error)) from None

    def __getattr__(self, name: str):
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def _os_reason(error: OSError) -> str:
    if error.errno == errno.EBADF:
        return "standard output is closed"
    return error.strerror or str(error)


@contextlib.contextmanager
def _usable_standard_streams():
    """stdout guarded (see `_GuardedStdout`) while a command runs; restored afterwards."""
    saved = sys.stdout
    sys.stdout = _GuardedStdout(saved)
    try:
        yield
    finally:
        sys.stdout = saved


def _tolerate_narrow_encodings() -> None:
    """On a terminal that cannot show '×' or '—' (PYTHONIOENCODING=ascii), print '?' instead
    of failing with a UnicodeEncodeError; on a UTF-8 one, a file name that is not UTF-8 (held
    as surrogates) is printed with a backslash escape, as its raw bytes would break a reader
    that decodes the output as UTF-8."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        errors = "backslashreplace" if encoding.startswith("utf") else "replace"
        if getattr(stream, "errors", errors) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors=errors)
            except (OSError, ValueError):
                pass


def _internal_error(error: BaseException) -> int:
    if os.environ.get("SKDSL_DEBUG"):
        import traceback

        traceback.print_exception(error)
    _tell(f"internal error: {type(error).__name__}: {error}\n"
          f"this is a bug in skdsl {__version__}, not in your spec; please report it with the "
          f"command you ran (set SKDSL_DEBUG=1 for the traceback)")
    return EXIT_INTERNAL_ERROR


def _silence_stdout() -> None:
    """Point stdout's file descriptor at /dev/null, so that what its buffer still holds is
    dropped quietly when Python flushes it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
