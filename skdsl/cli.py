"""The `skdsl` command line: arguments in, exit status out.

    skdsl build specs/sknet50.sk --report      # Table 1 of the paper, for this spec
    skdsl check specs/sknet50.sk               # ok: sknet50 — 27,479,784 params, ...
    skdsl spec specs/sknet50.sk --json         # the expanded spec as JSON (and back: build x.json)
    skdsl graph specs/sknet50.sk --depth 2     # a Graphviz (or mermaid) diagram

Exit statuses: 0 ok, 2 a user's mistake (every `SkdslError`, bad flags, unusable files),
70 an internal error (a bug: reported in one line, no traceback), 130 interrupted.

build, check, spec and graph never import torch, and rich only when they draw a table: the
commands that train or evaluate (registered in COMMANDS below) import it themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import re
import sys
from pathlib import Path

from . import __version__
from .errors import CliError, SkdslError, Span, SpecError, register_source

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

# -- arguments shared by several commands -------------------------------------------------------


def add_spec_argument(parser: argparse.ArgumentParser, optional: bool = False,
                      carried: bool = False) -> None:
    """SPEC and its --set overrides, as every command that reads one spec takes them."""
    parser.add_argument("spec", metavar="SPEC", nargs="?" if optional else None,
                        help="a .sk spec file, or a .json spec written by `skdsl spec --json`")
    add_overrides_argument(parser, "of the spec", carried)


def add_overrides_argument(parser: argparse.ArgumentParser, whose: str,
                           carried: bool = False) -> None:
    """--set NAME=VALUE into args.overrides; `carried`: None when not given, so that a
    resumed run keeps the overrides it was started with."""
    parser.add_argument("--set", metavar="NAME=VALUE", action="append",
                        default=None if carried else [], dest="overrides",
                        help=f"override a `param` {whose} (repeatable): --set M=3")


def add_input_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", metavar="CxHxW",
                        help="the input shape instead of the spec's, such as 3x320x320")


_DIMS = re.compile(r"(\d+)[x×X](\d+)[x×X](\d+)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def parse_input_shape(text: str | None) -> tuple[int, int, int] | None:
    """'3x320x320' -> (3, 320, 320); None stays None (the spec's own input)."""
    if text is None:
        return None
    match = _DIMS.fullmatch(text.strip())
    if not match:
        raise CliError(f"--input {text!r}: expected channels×height×width such as 3x224x224",
                       code="SK501")
    shape = tuple(int(size) for size in match.groups())
    if min(shape) < 1:
        raise CliError(f"--input {text!r}: every size must be at least 1", code="SK501")
    return shape


def parse_overrides(items: list[str]) -> dict[str, int | float | str]:
    """['M=3', 'act=silu'] -> {'M': 3, 'act': 'silu'}: an int if it reads as one, else a float,
    else the word itself."""
    overrides: dict[str, int | float | str] = {}
    for item in items:
        name, equals, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        if not equals or not _NAME.fullmatch(name) or not raw:
            raise CliError(f"--set {item!r}: expected NAME=VALUE, such as --set M=3",
                           code="SK502")
        if name in overrides:
            raise CliError(f"--set {name} is given twice", code="SK502",
                           hint="keep one --set per parameter")
        if _INT.fullmatch(raw):
            overrides[name] = int(raw)
        elif _FLOAT.fullmatch(raw):
            overrides[name] = float(raw)
        else:
            overrides[name] = raw
    return overrides


# -- loading specs ------------------------------------------------------------------------------


def load_spec(path: str, overrides: dict | None = None):
    """A .sk file or zoo name (parsed, expanded) or a .json spec (validated): a `spec.Network`."""
    if path.lower().endswith(".json"):
        if overrides:
            raise CliError(f"--set cannot change '{path}': a JSON spec is already expanded",
                           code="SK503", hint="use --set with the .sk spec it came from")
        return load_json_spec(path)
    import skdsl

    return skdsl.load(path, overrides=overrides or None)


def load_json_spec(path: str | Path):
    """A spec written by `skdsl spec --json`; a mistake is an SK401 located at its JSON value."""
    from pydantic import ValidationError

    from .parser import read_source
    from .spec import Network

    file = str(path)
    text = read_source(path)
    if max(map(len, text.splitlines()), default=0) <= 400:
        register_source(file, text)  # excerpts of minified JSON would print the whole file
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"not valid JSON: {error.msg}",
                        Span(file, error.lineno, error.colno, error.lineno, error.colno + 1),
                        code="SK401") from None
    except RecursionError:
        raise SpecError("the JSON is nested too deeply to be a spec", Span(file, 1, 1, 1, 2),
                        code="SK401") from None
    try:
        return Network.model_validate_json(text)
    except ValidationError as error:
        raise _json_spec_error(file, text, data, error) from None


def _json_spec_error(file: str, text: str, data, error) -> SpecError:
    """One SpecError for pydantic's errors: the first located at its JSON path, the rest as notes."""
    problems: dict[str, list[str]] = {}  # JSON path -> messages (a union gives one per member)
    where: dict[str, tuple] = {}
    for item in error.errors(include_url=False):
        path, keys = _json_path(data, item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.setdefault(path, [])
        if message not in problems[path]:
            problems[path].append(message)
        where.setdefault(path, keys)
    described = [f"{path}: {' or '.join(messages)}" for path, messages in problems.items()]
    first = next(iter(problems))
    span = _json_span(file, text, where[first])
    count = len(described)
    return SpecError(f"invalid spec: {described[0]}", span, code="SK401",
                     notes=[f"also: {d}" for d in described[1:6]] +
                     ([f"and {count - 6} more"] if count > 6 else []),
                     hint="`skdsl spec --schema` prints what a JSON spec may contain")


def _json_path(data, loc) -> tuple[str, tuple]:
    """pydantic's error location as a JSON path ('stages[1].body[0].kernel'), and the keys of
    the deepest value present in the file. Union tags in the location are skipped."""
    text, keys, node, present = "", (), data, True
    for key in loc:
        if present and isinstance(node, dict) and isinstance(key, str) and key in node:
            node, keys = node[key], keys + (key,)
        elif present and isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node, keys = node[key], keys + (key,)
        elif present and isinstance(node, dict) and key == node.get("kind"):
            continue  # the discriminator of a layer: `stages.0.body.0.conv.kernel`
        elif present and not isinstance(node, (dict, list)):
            break  # the members of a union tried on a plain value: `groups.int`
        else:
            present = False  # a missing field, or inside one
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text.lstrip(".") or "(the whole spec)", keys


def _json_span(file: str, text: str, keys: tuple) -> Span | None:
    """Where the value at `keys` starts in the JSON text, found by walking the text."""
    try:
        start, end = _JsonLocator(text).find(keys)
    except (ValueError, IndexError, RecursionError):
        return None
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    end_line = text.count("\n", 0, end) + 1
    end_column = end - (text.rfind("\n", 0, end) + 1) + 1
    return Span(file, line, column, end_line, end_column)


class _JsonLocator:
    """The start and end offsets of one value in well-formed JSON text."""

    _SPACE = re.compile(r"[ \t\n\r]*")
    _SCALAR = re.compile(r'-?[0-9.eE+-]+|true|false|null')

    def __init__(self, text: str):
        self.text = text

    def find(self, keys: tuple) -> tuple[int, int]:
        return self._value(self._skip(0), keys)

    def _skip(self, index: int) -> int:
        return self._SPACE.match(self.text, index).end()

    def _value(self, index: int, keys: tuple) -> tuple[int, int]:
        """(start, end) of the value at `keys` below the value starting at `index`."""
        if not keys:
            return index, self._end(index)
        char = self.text[index]
        if char == "{":
            index = self._skip(index + 1)
            while self.text[index] != "}":
                key, index = json.decoder.scanstring(self.text, index + 1)
                index = self._skip(self._skip(index) + 1)  # past ':'
                if key == keys[0]:
                    return self._value(index, keys[1:])
                index = self._skip(self._end(index))
                if self.text[index] == ",":
                    index = self._skip(index + 1)
        elif char == "[":
            index, position = self._skip(index + 1), 0
            while self.text[index] != "]":
                if position == keys[0]:
                    return self._value(index, keys[1:])
                index = self._skip(self._end(index))
                if self.text[index] == ",":
                    index = self._skip(index + 1)
                position += 1
        raise ValueError(f"no value at {keys}")

    def _end(self, index: int) -> int:
        """The offset just past the value starting at `index`."""
        char = self.text[index]
        if char == '"':
            return json.decoder.scanstring(self.text, index + 1)[1]
        if char in "[{":
            closing = "]" if char == "[" else "}"
            index = self._skip(index + 1)
            while self.text[index] != closing:
                if char == "{":
                    index = json.decoder.scanstring(self.text, index + 1)[1]
                    index = self._skip(self._skip(index) + 1)
                index = self._skip(self._end(index))
                if self.text[index] == ",":
                    index = self._skip(index + 1)
            return index + 1
        match = self._SCALAR.match(self.text, index)
        if not match:
            raise ValueError(f"no JSON value at offset {index}")
        return match.end()


def _load(args):
    return load_spec(args.spec, parse_overrides(args.overrides))


# -- output -------------------------------------------------------------------------------------


def _print_rich(*renderables) -> None:
    from rich.console import Console

    # Piped output gets a generous width (a wrapped table is hard to read and to grep), unless
    # COLUMNS asks for another; rich reads COLUMNS itself when the width is None.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    console = Console(file=sys.stdout, width=width, highlight=False, soft_wrap=False)
    for renderable in renderables:
        console.print(renderable)


def _print_json(value) -> None:
    print(to_json_text(value))


def to_json_text(value, indent: str = "") -> str:
    """JSON indented by two spaces, with lists of numbers and words kept on one line."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {to_json_text(v, inner)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        items = [f"{inner}{to_json_text(v, inner)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False)


def _write_text(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot write '{output}': {error.strerror or error}", code="SK504") from None


# -- commands -----------------------------------------------------------------------------------
# One small function per command registers its subparser and names the function that runs it.


def _add_build(commands) -> None:
    parser = commands.add_parser(
        "build", help="count a network's parameters and multiply-adds (Table 1)",
        description="Parse, expand and analyse a spec: parameters, multiply-adds and shapes,\n"
                    "without building a model (no torch).",
        epilog="examples:\n  skdsl build specs/sknet50.sk --report\n"
               "  skdsl build specs/sknet50.sk --json --input 3x320x320",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_argument(parser)
    add_input_argument(parser)
    parser.add_argument("--report", action="store_true",
                        help="the stage table, laid out like the paper's Table 1")
    parser.add_argument("--layers", action="store_true",
                        help="every layer with its output shape, parameters and multiply-adds")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object on stdout (the contract is in docs/cli.md)")
    add_count_argument(parser)
    from .compare import add_sweep_argument  # no torch

    add_sweep_argument(parser)
    parser.set_defaults(run=run_build)


def add_count_argument(parser) -> None:
    parser.add_argument("--count", metavar="CLASSES", default="",
                        help="also count these op classes in the multiply-adds, comma-separated: "
                             "bn, act, pool, add, mul, softmax, or all (docs/analysis.md)")


def parse_count(text: str) -> tuple[str, ...]:
    """`--count bn,add` -> ("bn", "add"); `all` -> every class."""
    from .analysis import EXTRA_COUNTS
    from .errors import did_you_mean

    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return tuple(EXTRA_COUNTS)
    for name in names:
        if name not in EXTRA_COUNTS:
            raise CliError(f"--count {text}: no op class '{name}'", code="SK506",
                           hint=did_you_mean(name, EXTRA_COUNTS) or
                           f"choose from {', '.join(EXTRA_COUNTS)} or all")
    return tuple(names)


def run_build(args) -> int:
    if args.json and (args.report or args.layers):
        raise CliError("--json prints only JSON: leave out --report and --layers", code="SK505")
    if args.sweeps:  # one network per point of the sweep
        from .compare import run_build_sweep

        return run_build_sweep(args)
    import skdsl

    input_shape = parse_input_shape(args.input)
    count = parse_count(args.count)
    overrides = parse_overrides(args.overrides)
    spec = load_spec(args.spec, overrides)
    if overrides:
        from .compare import changes_the_spec, declared_parameters

        if changes_the_spec(overrides, declared_parameters(args.spec)[0]):
            spec = spec.model_copy(update={"paper": None})  # not the network the paper measured
    analysis = skdsl.analyze(spec, input_shape, count)
    if args.json:
        paper = spec.paper.model_dump(mode="json") if spec.paper is not None else None
        _print_json({**analysis.to_json(), "paper": paper})
        return EXIT_OK
    from . import report

    if not (args.report or args.layers):
        print(report.summary_line(analysis))
        return EXIT_OK
    tables = []
    if args.report:
        tables.append(report.stage_table(spec, analysis))
    if args.layers:
        tables.append(report.layer_table(analysis))
    _print_rich(*tables)
    return EXIT_OK


def _add_check(commands) -> None:
    parser = commands.add_parser(
        "check", help="parse, expand and infer every shape; report the first mistake",
        description="Check a spec: parse, expand and lower it, inferring every shape.")
    add_spec_argument(parser)
    add_input_argument(parser)
    parser.set_defaults(run=run_check)


def run_check(args) -> int:
    import skdsl

    from . import report

    input_shape = parse_input_shape(args.input)
    analysis = skdsl.analyze(_load(args), input_shape)
    print(report.check_line(analysis))
    return EXIT_OK


def _add_spec(commands) -> None:
    parser = commands.add_parser(
        "spec", help="print the expanded spec as JSON, or the JSON schema of specs",
        description="Print a spec fully expanded (templates called, repeats unrolled, every\n"
                    "layer named) as JSON; `skdsl build FILE.json` reads it back.",
        epilog="examples:\n  skdsl spec specs/sknet50.sk --json > sknet50.json\n"
               "  skdsl spec --schema > skdsl.schema.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_argument(parser, optional=True)
    parser.add_argument("--json", action="store_true",
                        help="the spec as JSON (the default, and the only format)")
    parser.add_argument("--schema", action="store_true",
                        help="the JSON schema of specs instead of a spec")
    parser.set_defaults(run=run_spec)


def run_spec(args) -> int:
    if args.schema:
        if args.spec is not None or args.overrides:
            raise CliError("--schema takes no SPEC or --set", code="SK505")
        from .spec import json_schema

        _print_json(json_schema())
        return EXIT_OK
    if args.spec is None:
        raise CliError("name a SPEC to print, or ask for --schema", code="SK505",
                       hint="skdsl spec specs/sknet50.sk --json")
    _print_json(_load(args).model_dump(mode="json"))
    return EXIT_OK


def _add_graph(commands) -> None:
    parser = commands.add_parser(
        "graph", help="draw the network as Graphviz dot or mermaid",
        description="Write a diagram of the lowered graph: a box per op with its output shape,\n"
                    "arrows in execution order, one cluster per stage.",
        epilog="examples:\n  skdsl graph specs/sknet50.sk --depth 2 -o sknet50.dot\n"
               "  dot -Tsvg sknet50.dot -o sknet50.svg\n"
               "  skdsl graph specs/sknet26.sk --format mermaid --depth 3",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_argument(parser)
    add_input_argument(parser)
    parser.add_argument("--format", choices=("dot", "mermaid"), default="dot",
                        help="dot (Graphviz, the default) or mermaid")
    parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--depth", type=int, metavar="N",
                        help="merge ops into their first N name parts: 1 = stages, 2 = blocks")
    parser.set_defaults(run=run_graph)


def run_graph(args) -> int:
    if args.depth is not None and args.depth < 1:
        raise CliError(f"--depth {args.depth}: the depth counts name parts, from 1 (stages)",
                       code="SK505")
    import skdsl

    from . import report

    input_shape = parse_input_shape(args.input)
    graph = skdsl.lower(_load(args), input_shape)
    if args.format == "dot":
        text = report.to_dot(graph, args.depth)
    else:
        text = report.to_mermaid(graph, args.depth)
        edges = text.count(" --> ")
        if edges > report.MERMAID_EDGE_LIMIT:
            print(f"warning: {edges} edges; mermaid draws at most {report.MERMAID_EDGE_LIMIT} "
                  f"unless its maxEdges is raised: try --depth 2", file=sys.stderr)
    _write_text(text, args.output)
    return EXIT_OK


# Subcommands in the order `skdsl --help` lists them. `train`, `eval`, `compare` and `export`
# will register here, each with its own `_add_<name>(commands)` that sets `run=`; they may
# import torch inside their run function, never at the top of this module.
def _add_weights(commands) -> None:
    from . import weights  # torch is imported only when a conversion runs

    weights.register(commands)


def _add_compare(commands) -> None:
    from . import compare  # no torch: the comparison is the analysis of every spec

    compare.register(commands)


def _add_tables(commands) -> None:
    from . import tables

    tables.register(commands)


def _add_export(commands) -> None:
    from . import export  # torch is imported when an export runs

    export.register(commands)


def _add_train(commands) -> None:
    from .train import commands as train_commands  # torch is imported when a run starts

    train_commands.register(commands)


def _add_doctor(commands) -> None:
    from . import doctor  # torch is imported when the self-check runs

    doctor.register(commands)


COMMANDS = [_add_build, _add_check, _add_spec, _add_graph, _add_train, _add_export, _add_weights, _add_compare,
            _add_tables, _add_doctor]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skdsl", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="skdsl: a declarative language and compiler for Selective Kernel Networks.")
    parser.add_argument("--version", action="version", version=f"skdsl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(commands)
    return parser


# -- entry point --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is returned, never raised (except by argparse's own
    --help and usage errors, caught here too)."""
    _tolerate_narrow_encodings()
    with _usable_standard_streams():
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
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


def _report(error: SkdslError) -> int:
    _tell(error.render())
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
    of failing with a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if not encoding.startswith("utf") and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
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


if __name__ == "__main__":
    sys.exit(main())
