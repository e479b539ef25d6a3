"""skdsl: a declarative architecture language and model compiler for Selective Kernel Networks.

    import skdsl
    spec = skdsl.load("specs/sknet50.sk")     # text -> validated spec (no torch)
    report = skdsl.analyze(spec)              # exact params and multiply-adds (no torch)
    model = skdsl.compile(spec)               # torch.nn.Module with exactly those counts
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CheckpointError, CliError, SkdslError, SpecError
from .spec import Network

if TYPE_CHECKING:
    from .analysis import Analysis

__version__ = "0.1.0"

__all__ = ["load", "parse", "analyze", "compile", "lower", "Network", "SkdslError", "SpecError",
           "CliError", "CheckpointError", "__version__"]


def load(path: str | Path, overrides: dict | None = None) -> Network:
    """Read, parse and expand a .sk file (and what it imports) into a validated spec."""
    from .expand import expand, parse_file

    return expand(parse_file(path), overrides)


def parse(text: str, file: str = "<string>", overrides: dict | None = None) -> Network:
    """Parse and expand .sk text; `use` paths resolve against the current directory."""
    from .expand import expand
    from .parser import parse_text

    return expand(parse_text(text, file), overrides)


def lower(spec: Network, input_shape=None):
    """The networkx graph of a spec, one node per primitive op, with every shape inferred."""
    from .graph import lower as _lower

    return _lower(spec, input_shape)


def analyze(spec: Network, input_shape=None, count=()) -> "Analysis":
    """Exact parameters, multiply-adds, shapes and receptive fields, without building a model.

    `count` adds op classes to the multiply-adds (bn, act, pool, add, mul, softmax); the
    default counts convolutions and fc layers only, as the paper and FlopCounterMode do.
    """
    from .analysis import analyze as _analyze

    return _analyze(spec, input_shape, count)


def compile(spec: Network, input_shape=None):  # noqa: A001 - the verb users expect
    """Build the torch.nn.Module of a spec (imports torch)."""
    from .compiler import compile as _compile

    return _compile(spec, input_shape)
