"""The exactness assertions (torch imported when one is called): `assert_compiles_exactly`
(module leaves, parameters, FLOPs / 2 and output shape equal skdsl.analyze's numbers),
`assert_shapes` (a real forward pass gives the inferred shapes) and `assert_rejected` (a
SpecError located in the file, that renders).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

from skdsl.core import spec as S
from skdsl.core.analysis import analyze
from skdsl.base.errors import SpecError, printable
from skdsl.core.graph import lower_table
from skdsl.lang.loading import load, parse


def _as_network(spec, overrides: dict | None = None) -> S.Network:
    """A Network as is; a Path or a one-line str as a file; a str with newlines as .sk text."""
    if isinstance(spec, S.Network):
        return spec
    if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec):
        return load(spec, overrides)
    if isinstance(spec, str):
        return parse(spec, overrides=overrides)
    raise TypeError(f"expected a Network, a path or .sk text, not {type(spec).__name__}")

@dataclass(frozen=True)
class ExactReport:
    """What assert_compiles_exactly checked, all numbers agreeing."""

    network: str
    params: int
    mult_adds: int
    output: tuple[int, ...]  # with the batch dimension
    modules: int


def _leaf_names(model) -> set[str]:
    return {name for name, module in model.named_modules() if name and not any(True for _ in module.children())}


def assert_compiles_exactly(spec, input_shape=None, *, threads: int | None = 1) -> ExactReport:
    """Compile `spec` and check that torch agrees with skdsl.analyze to the unit.

    `spec` is a Network, a path or .sk text. Checked, in eval mode under torch.no_grad at batch
    size 1 (and `input_shape`, C×H×W, if given): the module's leaf names are exactly the graph's
    nodes less "input"; sum(p.numel()) equals the analysis' params; FlopCounterMode's total / 2
    equals its mult_adds; the output shape is (1, *analysis.output). Raises AssertionError that
    lists every disagreement with both numbers (and the first nodes that disagree).
    torch runs on `threads` threads (None: as set); one is fastest for networks this small.
    """
    with _torch_threads(threads):
        return _compiles_exactly(spec, input_shape)


@contextlib.contextmanager
def _torch_threads(count: int | None):
    import torch

    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _compiles_exactly(spec, input_shape) -> ExactReport:
    import torch

    from skdsl.nn.compiler import compile as compile_network

    network = _as_network(spec)
    shape = tuple(input_shape or network.input)
    graph = lower_table(network, shape)
    analysis = analyze(network, shape)
    model = compile_network(network, shape)
    model.eval()
    problems: list[str] = []

    # A branch that `shares` another's weights runs the other's modules: its nodes are
    # `tied_to` a node with a module and have none of their own.
    tied = {name: node.tied_to for name, node in graph.nodes.items() if node.tied_to}
    nodes = set(graph.nodes) - {"input"} - set(tied)
    leaves = _leaf_names(model)
    if leaves != nodes:
        extra, missing = sorted(leaves - nodes), sorted(nodes - leaves)
        if extra:
            problems.append(f"module leaves that are not graph nodes: {_few(extra)}")
        if missing:
            problems.append(f"graph nodes without a module: {_few(missing)}")

    params = sum(p.numel() for p in model.parameters())
    if params != analysis.params:
        problems.append(f"parameters: the module has {params:,}, the analysis says "
                        f"{analysis.params:,} ({params - analysis.params:+,})")
        modules = dict(model.named_modules())
        wrong = [f"{name} (module {sum(p.numel() for p in modules[name].parameters())}, "
                 f"analysis {cost.params})" for name, cost in analysis.nodes.items()
                 if name in modules and name not in tied and
                 sum(p.numel() for p in modules[name].parameters()) != cost.params]
        if wrong:
            problems.append(f"  nodes that disagree: {_few(wrong)}")

    try:
        y, more = _mult_add_problems(model, torch.randn(1, *shape), analysis, tied)
    except Exception as crash:  # noqa: BLE001 - a module that cannot run is a disagreement
        problems.append(f"the forward pass failed: {type(crash).__name__}: {crash}")
        raise AssertionError(f"spec '{network.name}' (input {'x'.join(map(str, shape))}) does "
                             f"not compile exactly:\n  " + "\n  ".join(problems)) from crash
    problems += more
    output = tuple(y.shape) if isinstance(y, torch.Tensor) else None
    expected = (1, *analysis.output)
    if output != expected:
        problems.append(f"output shape: the module gives {output}, the analysis says {expected}")

    if problems:
        raise AssertionError(f"spec '{network.name}' (input {'x'.join(map(str, shape))}) does "
                             f"not compile exactly:\n  " + "\n  ".join(problems))
    return ExactReport(network.name, params, analysis.mult_adds, expected, len(leaves))


def _mult_add_problems(model, x, analysis, tied: dict[str, str]):
    """Run `model` on `x` under FlopCounterMode: its output, and how its multiply-adds
    disagree with `analysis` (in total, then by node)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    flops = counter.get_total_flops()
    if flops == 2 * analysis.mult_adds:
        return y, []
    problems = [f"mult-adds: FlopCounterMode total / 2 is {flops / 2:,g}, the analysis says "
                f"{analysis.mult_adds:,} ({flops / 2 - analysis.mult_adds:+,g})"]
    prefix = type(model).__name__ + "."
    counted = {name.removeprefix(prefix): sum(ops.values())
               for name, ops in counter.get_flop_counts().items() if name.startswith(prefix)}
    expected: dict[str, int] = {}  # by module: a tied node's work is its twin module's
    for name, cost in analysis.nodes.items():
        if name != "input":
            module = tied.get(name, name)
            expected[module] = expected.get(module, 0) + cost.mult_adds
    wrong = [f"{name} (torch {counted.get(name, 0) / 2:g}, analysis {mult_adds})"
             for name, mult_adds in expected.items() if counted.get(name, 0) != 2 * mult_adds]
    if wrong:
        problems.append(f"  nodes that disagree: {_few(wrong)}")
    return y, problems


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" … and {len(items) - limit} more" if len(items) > limit else "")


def assert_shapes(spec, input=None, expected_output=None, *, batch: int = 2,
                  every_node: bool = True, threads: int | None = 1) -> tuple[int, ...]:
    """A real forward pass (eval mode, `batch` images of shape `input`, default the spec's)
    gives the inferred output shape, and `expected_output` if given (with or without the batch
    dimension). With `every_node`, every graph node's output has its inferred shape too.
    Returns the output shape with the batch dimension. torch runs on `threads` threads."""
    with _torch_threads(threads):
        return _shapes_agree(spec, input, expected_output, batch, every_node)


def _shapes_agree(spec, input, expected_output, batch, every_node) -> tuple[int, ...]:
    import torch

    from skdsl.nn.compiler import compile as compile_network

    network = _as_network(spec)
    shape = tuple(input or network.input)
    graph = lower_table(network, shape)
    model = compile_network(network, shape)
    model.eval()
    x = torch.randn(batch, *shape)
    problems = []
    with torch.no_grad():
        y = model(x)
        if every_node:
            names = [n for n in graph.nodes if n != "input"]
            for name, value in model.features(x, names).items():
                got = [tuple(t.shape) for t in (value if isinstance(value, tuple) else (value,))]
                want = [(batch, *s) for s in graph.nodes[name].out_shapes]
                if got != want:
                    problems.append(f"node {name}: the module gives {_shapes(got)}, the graph "
                                    f"says {_shapes(want)}")
    output_node, port = graph.output
    inferred = (batch, *graph.nodes[output_node].out_shapes[port])
    if tuple(y.shape) != inferred:
        problems.insert(0, f"output: the module gives {tuple(y.shape)}, inferred {inferred}")
    if expected_output is not None:
        expected = tuple(expected_output)
        if len(expected) == len(inferred) - 1:
            expected = (batch, *expected)
        if inferred != expected:
            problems.insert(0, f"output: inferred {inferred}, expected {expected}")
    if problems:
        raise AssertionError(f"spec '{network.name}' on input {'x'.join(map(str, shape))}:\n  "
                             + "\n  ".join(problems[:10]))
    return inferred


def _shapes(shapes) -> str:
    return ", ".join("x".join(map(str, s)) for s in shapes)


_LOCATION = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): error (?P<code>SK\d{3}): ")


def assert_rejected(text: str | bytes, *, code: str | None = None, filename: str = "spec.sk",
                    overrides: dict | None = None, folder: str | Path | None = None) -> SpecError:
    """`text` (str, or bytes written as they are) saved as a file is rejected with a SpecError.

    Loading and lowering (so shape errors count) must raise SpecError, not any other
    exception; the error must have a span inside the file (1-based line and column, the line
    at most one past the last), `render()` must work and start with `file:line:col: error
    SKnnn: `, and when it shows the source line, it must be the line the span names. With
    `code`, the error's code must be it. Returns the error.
    """
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    with contextlib.ExitStack() as stack:
        where = Path(folder) if folder is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="skdsl-")))
        path = where / filename
        path.write_bytes(data)
        try:
            network = load(path, overrides)
            lower_table(network)
        except SpecError as error:
            _check_located(error, path, data)
            if code is not None and error.code != code:
                raise AssertionError(f"expected error {code}, got {error.code}:\n{error.render()}")
            return error
        except Exception as error:  # noqa: BLE001 - any other exception is the bug we look for
            trace = "".join(traceback.format_exception(error))
            raise AssertionError(f"{path.name} crashed with {type(error).__name__}: {error} "
                                 f"instead of a SpecError\n{trace}") from error
    raise AssertionError(f"the spec was accepted, but should be rejected:\n"
                         f"{data.decode('utf-8', 'replace')}")


def _check_located(error: SpecError, path: Path, data: bytes) -> None:
    try:
        rendered = error.render()
    except Exception as crash:  # noqa: BLE001
        raise AssertionError(f"SpecError {error.code} ({error.message}) fails to render: "
                             f"{type(crash).__name__}: {crash}") from crash
    span = error.span
    if span is None:
        raise AssertionError(f"SpecError without a location:\n{rendered}")
    if not re.fullmatch(r"SK\d{3}", error.code):
        raise AssertionError(f"error code {error.code!r} is not SKnnn:\n{rendered}")
    if span.line < 1 or span.column < 1 or (span.end_line, span.end_column) < (span.line, span.column):
        raise AssertionError(f"span {span!r} is not a region of the file:\n{rendered}")
    match = _LOCATION.match(rendered)
    if not match or match["line"] != str(span.line) or match["column"] != str(span.column):
        raise AssertionError(f"render() does not start with '{span}: error {error.code}: ':\n"
                             f"{rendered}")
    if span.file != str(path):
        return  # an error in an imported file (std/...): its own text, not ours
    lines = data.decode("utf-8-sig", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if span.line > len(lines) + 1:
        raise AssertionError(f"span line {span.line} is past the end of the file "
                             f"({len(lines)} lines):\n{rendered}")
    shown = re.search(rf"^{span.line} \| (.*)$", rendered, re.MULTILINE)
    if shown is not None and span.line <= len(lines):
        actual = printable(lines[span.line - 1].rstrip("\r").expandtabs(1))
        # A long line may be clipped to a window around the span: a part of the line is fine.
        if shown.group(1).rstrip() not in actual:
            raise AssertionError(f"the excerpt shows another line than line {span.line} "
                                 f"({actual!r}):\n{rendered}")
