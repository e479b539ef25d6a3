"""`skdsl tables`: the paper's Tables 1–7 (and Table 2's rivals) regenerated from the specs.

    skdsl tables              # rewrite docs/paper-tables.md from specs/paper_tables.toml
    skdsl tables --check      # exit 1 when docs/paper-tables.md is stale (or a check fails)

The manifest (`specs/paper_tables.toml`, its format is described at its top; manifest.py holds
its models) maps every row of the paper's tables to a spec and its `param` overrides, the
paper's own figures (with source and confidence), tables.md's hand counts, and the reason ours
differs where it does. For every row results.py computes our exact counts and checks:

* **tables.md**: an exact hand count must equal ours to the unit; a rounded one ("28.36M",
  "4.756G") must equal ours rounded the same way;
* **the paper**: #P matches when ours, rounded to the paper's printed precision, equals it;
  GFLOPs (multiply-adds) match within COMPUTE_TOLERANCE, since the paper also counts a few
  small ops (tables.md: conv + fc is 0.16–0.4% below every Table 1 figure);
* every row whose figures do not match, and every row without a spec, carries a `reason`.

page.py writes the page. What it says about the counts is computed: how each row compares
with the paper (and would with BN's running statistics), which `--count` op classes
(docs/analysis.md) bring ours closest to each GFLOPs figure, which conventions fit; the
manifest's prose quotes our counts through `{ROW.QUANTITY}` fields (prose.py), never as typed
numbers. No torch: everything comes from `skdsl.analyze` and the lowered graph.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names to the submodule that defines them, imported when first read: the command line
# imports skdsl.report.tables.command for its defaults, which must not load the pydantic models.
_HOMES = {
    "SPECS_DIR": "...lang.zoo", "DEFAULT_MANIFEST": ".command", "DEFAULT_OUTPUT": ".command",
    "Figure": ".manifest", "Manifest": ".manifest", "Row": ".manifest", "Table": ".manifest",
    "figure": ".manifest", "load_manifest": ".manifest", "render": ".page",
    "COMPUTE_TOLERANCE": ".results", "Result": ".results",
    "consistency_problems": ".results", "evaluate": ".results",
}
__all__ = sorted(_HOMES)

if TYPE_CHECKING:
    from ...lang.zoo import SPECS_DIR
    from .command import DEFAULT_MANIFEST, DEFAULT_OUTPUT
    from .manifest import Figure, Manifest, Row, Table, figure, load_manifest
    from .page import render
    from .results import COMPUTE_TOLERANCE, Result, consistency_problems, evaluate


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
