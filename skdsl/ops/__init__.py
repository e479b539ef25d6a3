"""The op registry: everything about each op, one file per family (conv, attention, pool, dense,
norm, tensor, resample, eca, context), gathered here as tables that the rest of skdsl derives from.

    KEYWORDS     layer keyword -> how it is written (takes, options, defaults, usage line)
    ITEMS        the spec models of the keywords (pydantic): core/spec.py's Item union is
                 these plus the composites (SK units, branches, residuals, blocks)
    LOWERERS     spec kind -> its lowering to graph nodes, for kinds the generic rule
                 (GENERIC_KINDS: one item -> one op) does not cover
    OPS          graph op name -> its record class: attributes, shape rule, cost under every
                 counting convention, receptive-field and reduction rules, in-place and
                 buffer facts, torch module, text
    ROWS         spec kind -> its lines in a Table 1 cell

Grammar keywords, expansion, the spec union, lowering, analysis, compilation, memory
estimates, reports and the hypothesis writer read from here; adding an op is one file (or a
stanza in a family's file) and nothing else in skdsl (docs/architecture.md). No torch is
imported until an op's `module()` is called.
"""

from __future__ import annotations

from .base import (CONVENTIONS, ITEMS, KEYWORDS, LOWERERS, OPS, ROW_WRITERS, Keyword, Lowering,
                   Op, Option, Reading, Take, attribute_names)
# Imported in the order the keywords are listed (messages that list them keep it).
from . import conv, attention, pool, dense, norm, tensor, resample, eca, context  # noqa: E402,F401

LAYER_KEYWORDS = tuple(KEYWORDS)  # in the order the families define them

# Each spec kind that lowers to one op by the generic rule -> that op.
GENERIC_KINDS: dict[str, type[Op]] = {kind: op for op in OPS.values() for kind in op.spec_kinds}

# Table 1 text of a spec kind (report.item_lines): the generic kinds' own, and the op files'
# writers for the others.
ROWS = {**{kind: op.rows for kind, op in GENERIC_KINDS.items()}, **ROW_WRITERS}

__all__ = ["OPS", "ITEMS", "KEYWORDS", "LOWERERS", "LAYER_KEYWORDS", "GENERIC_KINDS", "ROWS",
           "CONVENTIONS", "Op", "Keyword", "Lowering", "Option", "Reading", "Take",
           "attribute_names"]
