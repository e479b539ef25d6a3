"""The op registry: one definition per primitive graph op and per layer keyword.

    OPS        graph op name -> its class (attributes, shape rule, costs, receptive-field rule,
               torch module, text), one module per family: conv, norm, pool, dense, tensor,
               attention, resample
    KEYWORDS   layer keyword -> how it is written (takes, options, defaults, usage line)

Grammar keywords, expansion, lowering, analysis, compilation, reports and the hypothesis
writer read from here. No torch is imported until an op's `module()` is called. Composite
constructs (SK units, SE, residuals, branches, shared weights) keep their meaning in spec.py
and their lowering in graph.py; the ops they lower to are here.
"""

from __future__ import annotations

from .base import CONVENTIONS, ITEMS, KEYWORDS, OPS, Keyword, Op, Option, Take, attribute_names
# Imported in the order the keywords are listed (messages that list them keep it).
from . import conv, attention, pool, dense, norm, tensor, resample  # noqa: E402,F401

LAYER_KEYWORDS = tuple(KEYWORDS)  # in the order the families define them

# Each spec kind that lowers to one op by the generic rule -> that op.
GENERIC_KINDS: dict[str, type[Op]] = {kind: op for op in OPS.values() for kind in op.spec_kinds}

# Table 1 text of a spec kind (report.item_lines): the generic kinds' own, and these.
ROWS = {**{kind: op.rows for kind, op in GENERIC_KINDS.items()},
        "pool": pool.pool_rows, "act": norm.activation_rows, "add": tensor.merge_rows,
        "concat": tensor.merge_rows, "mul": tensor.merge_rows, "select": tensor.merge_rows}

__all__ = ["OPS", "ITEMS", "KEYWORDS", "LAYER_KEYWORDS", "GENERIC_KINDS", "ROWS", "CONVENTIONS", "Op",
           "Keyword", "Option", "Take", "attribute_names"]
