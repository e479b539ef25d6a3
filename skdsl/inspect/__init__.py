"""`skdsl inspect`: look inside a trained network. `skdsl inspect attention` runs the paper's
section 4.4 scale experiment on the select weights of every SK unit.

    skdsl/inspect/units.py      the SK units of a graph, named SK_<stage>_<unit>; branch fields
    skdsl/inspect/record.py     AttentionRecorder: forward hooks on the Select modules, opt-in
    skdsl/inspect/attention.py  the scale experiment (zoom and render protocols), its statistics
    skdsl/inspect/output.py     the units × scales table, attention.json, Fig. 3/4-style PNGs

Importing this package imports no torch; the recorder and the experiment do.
"""

from .units import (PAPER_UNITS, InspectError, NoSelectiveKernelError, SKUnit, UnknownUnitError,
                    figure_units, find_units, sk_units)

__all__ = ["PAPER_UNITS", "InspectError", "NoSelectiveKernelError", "SKUnit",
           "UnknownUnitError", "figure_units", "find_units", "sk_units"]
