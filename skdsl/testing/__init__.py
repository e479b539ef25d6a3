"""Property-testing helpers for people who test their own architectures (and for skdsl's tests).

Strategies (need `hypothesis`, imported when a strategy is built):

    specs(...)            random *valid* .sk texts, valid by construction
    networks(...)         the same, parsed: specs().map(skdsl.parse)
    variants(spec, **p)   a spec's declared `param`s drawn from strategies, invalid draws rejected
    mutations(text)       (broken text or bytes, description): a valid spec broken in one place
    broken_specs(...)     specs().flatmap(mutations)
    meeting_inputs(...)   (text, expected error code or None): a multi-input op (SK branches,
                          add, mul, concat, a residual, a shared branch) on inputs that may
                          not agree
    rewrites(kinds)       Rewrite(kind, text, plain, same_names): a small network written with
                          one newer construct (if, for, x depth, in_channels, ...) and without

Assertions (need `torch`, imported when called):

    assert_compiles_exactly(spec)   module leaves == graph nodes, params, FLOPs/2 and output
                                    shape all equal skdsl.analyze's numbers
    assert_shapes(spec, input=...)  a real forward pass gives the inferred shapes
    assert_rejected(text)           a SpecError located at file:line:col that renders

and `run_check(path)`, what the `skdsl check` command does, through the library, as
(exit status, output), and `time_limit(seconds)`, which turns a hang into a TimeoutError.
See docs/testing.md for a worked example.

One module per concern: strategies (specs, networks, variants) over the random writer
(drawing -> layers -> blocks -> writer, spelt as skdsl.ops spells it: spelling, sizes),
broken (mutations, broken_specs), meetings (meeting_inputs), constructs (rewrites), assertions (the assert_*
functions) and harness (run_check, time_limit). Importing any of them imports neither
hypothesis nor torch.
"""

from __future__ import annotations

from .assertions import ExactReport, assert_compiles_exactly, assert_rejected, assert_shapes
from .broken import INSERT_TOKENS, INVALID_UTF8, MUTATION_KINDS, broken_specs, mutations
from .constructs import KINDS, Rewrite, rewrites
from .harness import run_check, time_limit
from .language import conditions, width_expressions
from .meetings import MEETING_KINDS, meeting_inputs
from .spelling import ACTIVATIONS
from .strategies import WIDTHS, networks, specs, variants

__all__ = [
    "specs", "networks", "variants", "mutations", "broken_specs", "assert_compiles_exactly",
    "assert_shapes", "assert_rejected", "run_check", "ExactReport", "WIDTHS", "MUTATION_KINDS",
    "INSERT_TOKENS", "INVALID_UTF8", "time_limit", "meeting_inputs", "MEETING_KINDS",
    "width_expressions", "conditions", "rewrites", "Rewrite", "KINDS",
]
