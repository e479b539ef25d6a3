"""The SK units of a lowered graph, named as the paper names them (section 4.4): SK_<stage>_<unit>.

SK_3_4 is the Select of the 4th unit of stage conv3. Read from the graph alone (no torch):

* **stage number**: when the stages that hold SK units all end in a number (`conv2`, `stage3`)
  and those numbers differ, that number (Table 1: conv2 -> 2); otherwise the stage's position in
  the network, the first stage being 1 (which gives Table 1's numbers to a network laid out as
  Table 1: a stem stage, then the stages of units).
* **unit number**: the unit's position among the stage's blocks, counted from 1; an SK layer
  written directly in a stage, outside any block, counts as a unit of its own. Layers that are
  neither (SKNet-50's max pool in conv2) are not units.
* a unit that holds several SK convolutions (ShuffleNetV2 + SK's left and right branches)
  names them SK_<stage>_<unit>_1, _2, ... in graph order.

Each branch's receptive field is computed from the graph, over the branch's own nodes, as the
analysis computes every field (skdsl.core.analysis.walk_fields): a 3×3 with dilation 2 is 5×5. The
recorder lists branches from the smallest field to the largest, whatever order the spec wrote.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..base.errors import SkdslError, did_you_mean
from ..core.analysis import walk_fields
from ..core.graph import as_table

PAPER_UNITS = ("SK_2_3", "SK_3_4", "SK_5_3")  # the units of the paper's Fig. 3 and Fig. 4


class InspectError(SkdslError):
    """A request `skdsl inspect` cannot honour (codes SK640-SK649)."""

    code = "SK640"


class NoSelectiveKernelError(InspectError):
    """The network has no SK convolution with attention: nothing selects between kernels."""

    code = "SK640"


class UnknownUnitError(InspectError, KeyError):
    """A unit name that is neither a paper name (SK_3_4) nor a graph name of the network."""

    code = "SK641"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


@dataclass(frozen=True)
class SKUnit:
    """One SK convolution with attention: its names, size and branches."""

    name: str                     # SK_3_4: the paper's name
    layer: str                    # conv3.block4.sk: the graph's (and the module tree's) name
    node: str                     # conv3.block4.sk.select: the Select the recorder hooks
    stage: str                    # conv3
    channels: int                 # C
    order: tuple[int, ...]        # the Select's branch indices, smallest field first
    fields: tuple[tuple[int, int] | None, ...]  # each branch's field (h, w), in `order`

    @property
    def branches(self) -> int:
        return len(self.order)

    @property
    def kernels(self) -> str:
        """'3×3/5×5': the branches' receptive fields, smallest first."""
        return "/".join("global" if f is None else f"{f[0]}×{f[1]}" for f in self.fields)

    def to_json(self) -> dict:
        return {"name": self.name, "layer": self.layer, "node": self.node, "stage": self.stage,
                "channels": self.channels, "branches": self.branches,
                "fields": [list(f) if f else None for f in self.fields]}


def sk_units(graph) -> tuple[SKUnit, ...]:
    """Every SK unit with attention in `graph` (a lowered graph), in graph order."""
    nodes = dict(as_table(graph).nodes.items())
    selects = [(name, node) for name, node in nodes.items() if node.op == "select"]
    if not selects:
        raise NoSelectiveKernelError(
            "the network has no SK convolution with attention, so no unit selects a kernel",
            hint="inspect a network with SK[...] layers, such as specs/sknet_tiny.sk "
                 "(SUM[...] adds its branches without selecting)")
    units_of_stage = _units_of_stages(nodes, {node.layer for _, node in selects})
    stage_number = _stage_numbers(list(units_of_stage),
                                  {node.stage for _, node in selects})
    keys = [(node.stage, _unit_key(node, {node.layer})) for _, node in selects]
    named = []
    for (name, node), key in zip(selects, keys):
        stage, unit = key
        paper = f"SK_{stage_number[stage]}_{units_of_stage[stage].index(unit) + 1}"
        if keys.count(key) > 1:
            paper += f"_{keys[:len(named) + 1].count(key)}"
        named.append(_unit(nodes, name, node, paper))
    return tuple(named)


def _unit_key(node: dict, sk_layers: set) -> str | None:
    """The unit a node belongs to: its block, or an SK layer written outside any block."""
    if node.block:
        return node.block
    return node.layer if node.layer in sk_layers else None


def _units_of_stages(nodes: dict, sk_layers: set) -> dict[str, list[str]]:
    """Each stage (in graph order) and its units in order."""
    units: dict[str, list[str]] = {}
    for node in nodes.values():
        if node.op == "input":  # the input node is no stage of the spec
            continue
        of_stage = units.setdefault(node.stage, [])  # every stage counts for the positions
        key = _unit_key(node, sk_layers)
        if key is not None and key not in of_stage:
            of_stage.append(key)
    return units


def _stage_numbers(stages: list[str], with_units: set[str]) -> dict[str, int]:
    """conv2 -> 2 when the stages with SK units end in distinct numbers; else the position."""
    ending = {stage: re.search(r"(\d+)$", stage) for stage in stages}
    numbers = [int(ending[s].group(1)) for s in with_units if ending[s]]
    if len(numbers) == len(with_units) == len(set(numbers)):
        return {stage: int(match.group(1)) for stage, match in ending.items() if match}
    return {stage: position for position, stage in enumerate(stages, start=1)}


def _unit(nodes: dict, name: str, node: dict, paper: str) -> SKUnit:
    layer = node.layer
    fields = [_branch_field(nodes, layer, source) for source, _ in node.inputs[1:]]
    order = sorted(range(len(fields)), key=lambda i: _area(fields[i]))  # stable: ties keep order
    return SKUnit(paper, layer, name, node.stage, node.attrs.channels, tuple(order),
                  tuple(fields[i] for i in order))


def _area(field: tuple[int, int] | None) -> float:
    return math.inf if field is None else field[0] * field[1]


def _branch_field(nodes: dict, layer: str, output: str) -> tuple[int, int] | None:
    """The receptive field of one branch of `layer` on the SK layer's input: the field of
    `output` walked over the layer's nodes it depends on, everything outside counting as 1×1."""
    inside, pending = set(), [output]
    while pending:
        name = pending.pop()
        if name in inside or not name.startswith(layer + "."):
            continue
        inside.add(name)
        pending.extend(source for source, _ in nodes[name].inputs)
    state = {source: (1, 1, 1, 1) for name in inside for source, _ in nodes[name].inputs
             if source not in inside}
    walk_fields(((name, nodes[name]) for name in nodes if name in inside), state)
    field = state[output]
    return None if field is None else (field[0], field[1])


def find_units(units: tuple[SKUnit, ...], wanted: list[str] | None) -> tuple[SKUnit, ...]:
    """The units named in `wanted` (paper names, or graph names of the layer or its Select), in
    the order asked; all of them for None."""
    if wanted is None:
        return units
    by_name = {name: unit for unit in units for name in (unit.name, unit.layer, unit.node)}
    chosen = []
    for name in wanted:
        if name not in by_name:
            known = [unit.name for unit in units]
            raise UnknownUnitError(
                f"the network has no SK unit '{name}'; its units are {_listed(known)}",
                hint=did_you_mean(name, list(by_name)) or
                "name units as SK_<stage>_<unit> (SK_3_4) or by their graph name "
                f"({units[0].layer})")
        if by_name[name] not in chosen:
            chosen.append(by_name[name])
    return tuple(chosen)


def _listed(names: list[str], shown: int = 8) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def figure_units(names: list[str], chosen: int = 3) -> list[str]:
    """The units the figures single out: the paper's where the network has them, else the
    first, a middle and the last unit (low, middle and high, as the paper picks them)."""
    paper = [name for name in names if name in PAPER_UNITS]
    if paper:
        return paper
    if len(names) <= chosen:
        return list(names)
    picks = sorted({round(i * (len(names) - 1) / (chosen - 1)) for i in range(chosen)})
    return [names[i] for i in picks]


__all__ = ["PAPER_UNITS", "InspectError", "NoSelectiveKernelError", "UnknownUnitError", "SKUnit",
           "sk_units", "find_units", "figure_units"]
