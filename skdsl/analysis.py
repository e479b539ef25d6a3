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

No torch here: analysis runs in well under a millisecond per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import spec as S
from .graph import LoweredGraph, Shape, lower_table, output_shape


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


def _elements(shape) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _window(node: dict) -> int:
    return _elements(node["out_shapes"][0]) * node["kernel"][0] * node["kernel"][1]


def _select(node: dict) -> int:
    weights = node["branches"] * node["channels"]
    return weights + weights * _elements(node["out_shapes"][0][1:])


def _elementwise(node: dict) -> int:
    return (len(node["inputs"]) - 1) * _elements(node["out_shapes"][0])


# The op classes another counting convention may add, and what each costs.
EXTRA_COUNTS = {
    "bn": {"batchnorm": lambda n: _elements(n["out_shapes"][0])},
    "act": {"act": lambda n: _elements(n["out_shapes"][0])},
    "pool": {"max_pool": _window, "avg_pool": _window,
             "global_pool": lambda n: _elements(n["in_shapes"][0]),
             "channel_pool": lambda n: _elements(n["in_shapes"][0])},
    "add": {"add": _elementwise},
    "mul": {"mul": _elementwise},
    "softmax": {"select": _select},
}


@dataclass(frozen=True)
class Analysis:
    network: str
    input: Shape
    output: Shape
    total: Cost
    stages: tuple[Part, ...]
    blocks: tuple[Part, ...]
    layers: tuple[Part, ...]
    nodes: dict[str, Cost] = field(repr=False)
    counted: tuple[str, ...] = ()  # op classes counted beyond conv and fc (EXTRA_COUNTS)

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


def node_cost(node: dict, count: tuple[str, ...] = ()) -> Cost:
    """The cost of one primitive op, from its resolved numbers and shapes.

    A node tied to another (`branch b from x shares a`) runs its own multiply-adds on the
    other's weights: its parameters are the other's, counted there.
    """
    cost = _own_cost(node)
    extra = sum(EXTRA_COUNTS[name][node["op"]](node) for name in count
                if node["op"] in EXTRA_COUNTS[name])
    params = 0 if node.get("tied_to") else cost.params
    return Cost(params, cost.mult_adds + extra, cost.activations)


def _own_cost(node: dict) -> Cost:
    op = node["op"]
    if op == "conv2d":
        weights = node["out_channels"] * (node["in_channels"] // node["groups"])
        weights *= node["kernel"][0] * node["kernel"][1]
        out_channels, height, width = node["out_shapes"][0]
        params = weights + (node["out_channels"] if node["bias"] else 0)
        return Cost(params, weights * height * width, out_channels * height * width)
    if op == "linear":
        weights = node["in_features"] * node["out_features"]
        params = weights + (node["out_features"] if node["bias"] else 0)
        return Cost(params, weights, node["out_features"])
    if op == "batchnorm":
        return Cost(2 * node["channels"])
    return Cost()


def analyze(spec_or_graph, input_shape: Shape | None = None, count=()) -> Analysis:
    """Analyse a spec (lowering it first), a `LoweredGraph` or the networkx graph of `lower`.

    `count` names op classes of EXTRA_COUNTS to add to the multiply-adds (default: none, the
    conv + fc convention that FlopCounterMode agrees with).
    """
    count = tuple(dict.fromkeys(count))
    unknown = [name for name in count if name not in EXTRA_COUNTS]
    if unknown:
        raise ValueError(f"unknown op class {', '.join(unknown)}; known: {', '.join(EXTRA_COUNTS)}")
    graph = spec_or_graph
    if isinstance(spec_or_graph, S.Network):
        graph = lower_table(spec_or_graph, input_shape)
    costs = {name: node_cost(data, count) for name, data in graph.nodes.items()}
    fields = receptive_fields(graph)
    return Analysis(
        network=graph.graph["network"],
        input=graph.graph["input"],
        output=output_shape(graph),
        total=Cost(sum(c.params for c in costs.values()), sum(c.mult_adds for c in costs.values()),
                   sum(c.activations for c in costs.values())),
        stages=_roll_up(graph, costs, fields, "stage"),
        blocks=_roll_up(graph, costs, fields, "block"),
        layers=_roll_up(graph, costs, fields, "layer"),
        nodes=costs,
        counted=count,
    )


def _roll_up(graph: LoweredGraph, costs: dict[str, Cost], fields: dict, key: str) -> tuple:
    """Sum node costs by a node attribute, in the order the groups first appear."""
    totals: dict[str, list[int]] = {}
    last: dict[str, str] = {}
    for name, data in graph.nodes.items():
        group = data[key]
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
        Part(group, graph.nodes[last[group]]["out_shapes"][0], Cost(*total), fields[last[group]],
             templates.get(group))
        for group, total in totals.items()
    )


def receptive_fields(graph: LoweredGraph) -> dict[str, tuple[int, int] | None]:
    """The theoretical receptive field (height, width) of every node's output; None = global."""
    state: dict[str, tuple[int, int, int, int] | None] = {"input": (1, 1, 1, 1)}
    for name, data in graph.nodes.items():
        if name == "input":
            continue
        op = data["op"]
        local = [state[src] for src, _ in data["inputs"] if state[src] is not None]
        if op in ("global_pool", "linear") or not local:
            state[name] = None
            continue
        # Branches meet: take the largest field (and the coarsest grid) among them.
        rf_h, rf_w = max(s[0] for s in local), max(s[1] for s in local)
        jump_h, jump_w = max(s[2] for s in local), max(s[3] for s in local)
        if op in ("conv2d", "max_pool", "avg_pool"):
            dilation = data.get("dilation", 1)
            kernel_h, kernel_w = data["kernel"]
            rf_h += dilation * (kernel_h - 1) * jump_h
            rf_w += dilation * (kernel_w - 1) * jump_w
            jump_h, jump_w = jump_h * data["stride"], jump_w * data["stride"]
        state[name] = (rf_h, rf_w, jump_h, jump_w)
    return {name: (s[0], s[1]) if s else None for name, s in state.items()}
