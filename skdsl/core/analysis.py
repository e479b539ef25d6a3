"""Exact complexity from the graph alone: parameters, multiply-adds, activations, receptive fields.

Counting convention (the one torch agrees with to the unit):

* parameters = convolution and fc weights and biases + BN's weight and bias (γ, β); BN running
  statistics are buffers, not parameters; weights a branch shares with another count once.
  This equals `sum(p.numel())` of the compiled module.
* mult_adds = multiply-adds of convolutions and fc layers only, per image:
  conv: C_out · (C_in / G) · k_h · k_w · H_out · W_out; fc: in · out. Biases, BN, activations,
  pooling, additions and the SK softmax and weighting are not counted. This equals
  `torch.utils.flop_counter.FlopCounterMode` total / 2 at batch size 1. FLOPs = 2 · mult_adds.
* activations = elements produced by convolutions and fc layers (pycls' and fvcore's "acts").
* receptive field = the theoretical one, per axis, with dilation: r ← r + (d·(k−1)) · j, j ← j · s.
  A multi-branch unit takes its largest branch; attention paths (global pooling) are not part
  of it, and after a global pool or an fc the field is the whole image (None).

Other conventions count more op classes (`analyze(..., count=("bn", "add"))`, `--count`), each
in multiply-add equivalents per image, one per output element unless said otherwise:

* bn: y = γ'·x + β' at inference; act: one per element; add: (inputs − 1) per element
  (residual adds and SK's fuse); mul: (inputs − 1) per element (SE and attention scaling);
* pool: a k×k window per output element; a global or channel pool reads every input element;
* softmax: SK's select, M·C for the softmax and M·C·H·W for the weighted sum.

Each op's share of these rules is written once, on its class in the registry (skdsl.ops:
`cost`, `extra` under its `counted_by` convention, `field_rule`). No torch here, and no node
visited twice: a block that repeats with the same body on the same input shape is counted once
(`LoweredGraph.unit_summary`) and added per repeat.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .. import ops
from ..base.errors import SettingError, declare_settings, did_you_mean
from . import spec as S
from .graph import LoweredGraph, Node, Placement, Shape, Unit, as_table, lower_table, output_shape
from ..ops.shapes import elements as _elements  # noqa: F401  (resources.py reads it here)

declare_settings("count")


@dataclass(frozen=True)
class Cost:
    params: int = 0
    mult_adds: int = 0
    activations: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.mult_adds + other.mult_adds,
                    self.activations + other.activations)

    @property
    def flops(self) -> int:
        return 2 * self.mult_adds


@dataclass(frozen=True)
class Part:
    """The cost of one named part of the network: a layer, a block or a stage."""

    name: str
    output: Shape
    cost: Cost
    receptive_field: tuple[int, int] | None = None
    template: str | None = None  # for blocks: the template they expand


# The op classes another counting convention may add, and what each costs (ops' `extra`).
EXTRA_COUNTS = {convention: {name: op.extra for name, op in ops.OPS.items()
                             if op.counted_by == convention}
                for convention in ops.CONVENTIONS}


@dataclass(frozen=True)
class Analysis:
    """What `analyze` counts: the totals when it is made; the tables by stage, block, layer and
    node when first read (the stages from one block per distinct body, the finer ones from the
    node table spelled out in full)."""

    network: str
    input: Shape
    output: Shape
    total: Cost
    counted: tuple[str, ...] = ()  # op classes counted beyond conv and fc (EXTRA_COUNTS)
    graph: Any = field(default=None, repr=False, compare=False)  # what it was computed from

    @cached_property
    def stages(self) -> tuple[Part, ...]:
        return _stages(self.graph, self.counted)

    @cached_property
    def nodes(self) -> dict[str, Cost]:
        return {name: node_cost(data, self.counted) for name, data in self.graph.nodes.items()}

    @cached_property
    def fields(self) -> dict[str, tuple[int, int] | None]:
        """Each node's receptive field (see `receptive_fields`)."""
        return receptive_fields(self.graph)

    @cached_property
    def blocks(self) -> tuple[Part, ...]:
        return _roll_up(self.graph, self.nodes, self.fields, "block")

    @cached_property
    def layers(self) -> tuple[Part, ...]:
        return _roll_up(self.graph, self.nodes, self.fields, "layer")

    @property
    def params(self) -> int:
        return self.total.params

    @property
    def mult_adds(self) -> int:
        return self.total.mult_adds

    def to_json(self) -> dict:
        """`skdsl build --json`: a public contract, documented in docs/cli.md."""
        return {
            "network": self.network,
            "input": list(self.input),
            "output": list(self.output),
            "params": self.total.params,
            "macs": self.total.mult_adds,
            "flops": self.total.flops,
            "activations": self.total.activations,
            "count": ["conv", "fc", *self.counted],
            "stages": [
                {"name": s.name, "output": list(s.output), "params": s.cost.params,
                 "macs": s.cost.mult_adds, "activations": s.cost.activations,
                 "receptive_field": list(s.receptive_field) if s.receptive_field else None}
                for s in self.stages
            ],
        }


def node_cost(node: Node, count: tuple[str, ...] = ()) -> Cost:
    """The cost of one primitive op, from its resolved numbers and shapes.

    A node tied to another (`branch b from x shares a`) runs its own multiply-adds on the
    other's weights: its parameters are the other's, counted there. `node` may be a networkx
    graph's dict of one.
    """
    if not isinstance(node, Node):
        node = Node.from_dict(node)
    return Cost(*_numbers(node, count))


def _numbers(node: Node, count: tuple[str, ...]) -> tuple[int, int, int]:
    """`node_cost` as plain (params, mult_adds, activations)."""
    return _summed((node,), count)


class CountError(SettingError, ValueError):
    """`count` names an op class that EXTRA_COUNTS does not hold."""

    code = "SK506"


def analyze(spec_or_graph, input_shape: Shape | None = None, count=()) -> Analysis:
    """Analyse a spec (lowering it first), a `LoweredGraph` or the networkx graph of `lower`.

    `count` names op classes of EXTRA_COUNTS to add to the multiply-adds (default: none, the
    conv + fc convention that FlopCounterMode agrees with).
    """
    count = tuple(dict.fromkeys(count))
    unknown = [name for name in count if name not in EXTRA_COUNTS]
    if unknown:
        raise CountError(f"{{count}} names no op class {', '.join(map(repr, unknown))}",
                         hint=did_you_mean(unknown[0], EXTRA_COUNTS)
                         or f"choose from {', '.join(EXTRA_COUNTS)}")
    if isinstance(spec_or_graph, S.Network):
        graph = lower_table(spec_or_graph, input_shape)
    else:
        graph = as_table(spec_or_graph)
    return Analysis(
        network=graph.graph["network"],
        input=graph.graph["input"],
        output=output_shape(graph),
        total=_total(graph, count),
        counted=count,
        graph=graph,
    )


def _total(graph: LoweredGraph, count: tuple[str, ...]) -> Cost:
    parts = (_unit_cost(graph, segment.unit, count) if isinstance(segment, Placement)
             else _summed(segment.values(), count) for segment in graph.segments)
    return Cost(*map(sum, zip(*parts)))


def _summed(nodes, count: tuple[str, ...]) -> tuple[int, int, int]:
    """(params, mult_adds, activations) of some nodes together."""
    params = mult_adds = activations = 0
    for node in nodes:  # `_numbers`, inlined: this loop runs over every distinct node
        attrs = node.attrs
        own_params, own_mult_adds, own_activations = attrs.cost(node)
        if count and attrs.counted_by in count:
            own_mult_adds += attrs.extra(node)
        if own_params and node.tied_to:
            own_params = 0
        params += own_params
        mult_adds += own_mult_adds
        activations += own_activations
    return params, mult_adds, activations


def _stages(graph: LoweredGraph, count: tuple[str, ...]) -> tuple[Part, ...]:
    """Each stage's cost, output and receptive field, walking the graph's segments: a block
    lowered once for all its repeats is counted once (`_unit_cost`, `_unit_steps`) and added
    per repeat."""
    state: dict = {"input": (1, 1, 1, 1)}  # receptive field and jump of each output so far
    totals: dict[str, list] = {}  # stage -> [params, mult_adds, activations, output, state]
    for segment in graph.segments:
        if isinstance(segment, Placement):
            output, last, out = graph.unit_summary(segment.unit, "steps", _unit_steps)
            start = state[segment.source[0]]
            after = state[segment.output[0]] = _moved(start, out)
            if output is not None:
                _add(totals, segment.stage, _unit_cost(graph, segment.unit, count), output,
                     after if last is out else _moved(start, last))
            continue
        nodes = [(name, node) for name, node in segment.items() if node.op != "input"]
        walk_fields(nodes, state)
        for name, node in nodes:
            _add(totals, node.stage, _numbers(node, count), node.out_shapes[0], state[name])
    templates = graph.graph["blocks"]
    return tuple(Part(stage, output, Cost(params, mult_adds, activations), _field(last),
                      templates.get(stage))
                 for stage, (params, mult_adds, activations, output, last) in totals.items())


def _add(totals: dict, stage: str, cost: tuple[int, int, int], output: Shape, last) -> None:
    total = totals.get(stage)
    if total is None:
        totals[stage] = [*cost, output, last]
        return
    total[0] += cost[0]
    total[1] += cost[1]
    total[2] += cost[2]
    total[3], total[4] = output, last


def _unit_cost(graph: LoweredGraph, unit: Unit, count: tuple[str, ...]) -> tuple[int, int, int]:
    """A block body's (params, mult_adds, activations), once per distinct body."""
    return graph.unit_summary(unit, count, _unit_total)


def _unit_total(unit: Unit, count: tuple[str, ...]) -> tuple[int, int, int]:
    return _summed(unit.nodes.values(), count)


def _unit_steps(unit: Unit, key: str = "steps"):
    """A block body's last output, and the receptive-field steps to its last node and to its
    output, as seen from a field of 0 and a jump of 1 at its input (see `_moved`)."""
    state: dict = {unit.source[0]: (0, 0, 1, 1)}
    walk_fields(unit.nodes.items(), state)
    last = next(reversed(unit.nodes), unit.source[0])
    output = unit.nodes[last].out_shapes[0] if unit.nodes else None
    return output, state[last], state[unit.output[0]]


def _moved(start, step):
    """The field after a block, from the field at its input and the block's own step: every
    rule of `field_step` is linear in the incoming jump, so a block's effect is one step."""
    if start is None or step is None:
        return None
    return (start[0] + start[2] * step[0], start[1] + start[3] * step[1], start[2] * step[2],
            start[3] * step[3])


def _field(state) -> tuple[int, int] | None:
    # After an upsample the jump is a fraction of an input pixel, and so may a field be: a
    # field covers whole pixels, so it rounds up.
    return (math.ceil(state[0]), math.ceil(state[1])) if state else None


def _roll_up(graph: LoweredGraph, costs: dict[str, Cost], fields: dict, key: str) -> tuple:
    """Sum node costs by a node attribute, in the order the groups first appear."""
    totals: dict[str, list[int]] = {}
    last: dict[str, str] = {}
    for name, data in graph.nodes.items():
        group = getattr(data, key)
        if group is None or name == "input":
            continue
        cost, total = costs[name], totals.get(group)
        if total is None:
            total = totals[group] = [0, 0, 0]
        total[0] += cost.params
        total[1] += cost.mult_adds
        total[2] += cost.activations
        last[group] = name  # nodes are in execution order: the last one is the group's output
    templates = graph.graph["blocks"]
    return tuple(
        Part(group, graph.nodes[last[group]].out_shapes[0], Cost(*total), fields[last[group]],
             templates.get(group))
        for group, total in totals.items()
    )


def receptive_fields(graph) -> dict[str, tuple[int, int] | None]:
    """The theoretical receptive field (height, width) of every node's output; None = global."""
    state: dict = {"input": (1, 1, 1, 1)}
    walk_fields(((name, node) for name, node in graph.nodes.items() if name != "input"), state)
    return {name: _field(s) for name, s in state.items()}


def walk_fields(nodes, state: dict) -> None:
    """Add each (name, node)'s `field_step` to `state`, in order."""
    for name, node in nodes:
        inputs = node.inputs
        if len(inputs) == 1 and node.op not in _CHANGES_FIELD:
            state[name] = state[inputs[0][0]]  # most nodes keep their input's field: no call
        else:
            state[name] = field_step(node, state)


def field_step(node: Node, state: dict):
    """(field h, field w, jump h, jump w) of a node's output from those of its inputs in
    `state`; None once a global pool or an fc has seen the whole image."""
    op = node.op
    if op in _GLOBAL:
        return None
    inputs = node.inputs
    if len(inputs) == 1:  # most nodes: one input, and most of those keep its field
        incoming = state[inputs[0][0]]
        if incoming is not None and op in _OWN_RULE:
            return node.attrs.field(node, incoming)
        if incoming is None or op not in _WINDOWED:
            return incoming
        rf_h, rf_w, jump_h, jump_w = incoming
    else:
        local = [state[source] for source, _ in inputs if state[source] is not None]
        if not local:
            return None
        # Branches meet: take the largest field (and the coarsest grid) among them.
        rf_h, rf_w, jump_h, jump_w = incoming = tuple(map(max, zip(*local)))
        if op not in _WINDOWED:
            return incoming
    window = node.attrs
    (kernel_h, kernel_w), stride = window.kernel, window.stride
    if kernel_h == kernel_w == stride == 1:
        return incoming
    dilation = window.dilation
    return (rf_h + dilation * (kernel_h - 1) * jump_h, rf_w + dilation * (kernel_w - 1) * jump_w,
            jump_h * stride, jump_w * stride)


# Ops whose output has seen the whole image, and ops with a k×k window (kernel, stride,
# dilation), by their `field_rule`; the others keep their input's field.
_GLOBAL = frozenset(name for name, op in ops.OPS.items() if op.field_rule == "global")
_WINDOWED = frozenset(name for name, op in ops.OPS.items() if op.field_rule == "window")
_OWN_RULE = frozenset(name for name, op in ops.OPS.items() if op.field_rule == "own")
_CHANGES_FIELD = _GLOBAL | _WINDOWED | _OWN_RULE
