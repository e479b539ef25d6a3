"""Lowering: spec -> the IR, a `LoweredGraph` of one node per primitive op, shapes inferred on
every edge. The IR is what analysis, resources and the compiler read, by typed fields; networkx
is an export of it (`lower`, for `skdsl graph` and users), read back at the edge (`as_table`).

The lowering here is the node-table builder and the composites' rules (SK units, select,
branches, residuals, blocks, the generic one-item-one-op rule); every other spec kind is lowered
by its op file's `@lowers` function (ops.LOWERERS), through the `ops.Lowering` protocol that
`_Lowering` implements.

Node names are the hierarchical names of the compiled module's leaves
(`conv3.block2.sk.branch1.conv`), so a report row, a graph node and a checkpoint key agree.
Every node is a `Node`:

    op          one of OPS (the registry's, skdsl.ops)
    inputs      the (node, port) pairs it reads, in order (several may come from one node)
    in_shapes   their shapes; out_shapes: the shapes of its outputs (several only for split)
    layer       the full name of the spec item it belongs to; stage: the stage's name
    span        where that item was written (None for specs loaded from JSON)
    attrs       the op's typed record of resolved numbers (channels, kernel, stride ...)
    tied_to     the node whose weights it reuses (`branch b from x shares a`), else None

A networkx graph (`lower`) holds each node as `Node.as_dict()`: those keys, and the op's.

Edges carry `shape`, the shape of the tensor flowing along them. Shapes are per image:
(C, H, W) for feature maps, (F,) after a fully connected layer.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from functools import cached_property

from .. import ops
from ..base.errors import SettingError, Span, SpecError, declare_settings, did_you_mean
from ..ops import conv as C
from ..ops.base import shared
from ..ops.shapes import (Shape, conv_output_size, fmt as _fmt,
                         largest_divisor as _largest_divisor, same_padding)
from . import spec as S

declare_settings("input_shape")

OPS = tuple(ops.OPS)  # the graph ops, one class each in skdsl.ops

Ref = tuple[str, int]  # (node name, output port)


@dataclass(slots=True)
class _Scope:
    path: str  # full name of the scope ("conv3.block2")
    stage: str
    block: str | None = None  # full name of the outermost block around it, if any
    tie: tuple | None = None  # (this branch, the branch whose weights it reuses, where it says so)

    def inner(self, path: str, block: str | None = None) -> "_Scope":
        return _Scope(path, self.stage, block or self.block, self.tie)


@dataclass(slots=True)
class Node:
    """One primitive op of the lowered network.

    `attrs` is the op's typed record (an `ops.Op`: its numbers, and what they cost); the other
    fields place it in the network. `node["key"]` reads a field or an attribute, as the dicts
    of the networkx graph do.
    """

    op: str
    inputs: tuple[Ref, ...]  # the (node, port) pairs it reads, in order
    in_shapes: tuple[Shape, ...]
    out_shapes: tuple[Shape, ...]  # several only for split
    layer: str  # the full name of the spec item it belongs to
    stage: str
    block: str | None  # the outermost block around it, if any
    span: Span | None  # where its item was written (None for specs loaded from JSON)
    attrs: ops.Op
    tied_to: str | None = None  # the node whose module (and weights) it reuses

    def __getitem__(self, key: str):
        if key in _PLACE:
            value = getattr(self, key)
            if key != "tied_to" or value is not None:
                return value
        elif key in self.attrs.__dataclass_fields__:
            return getattr(self.attrs, key)
        raise KeyError(key)

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: str) -> bool:
        return self.get(key, self) is not self

    def keys(self) -> list[str]:
        """The keys of `as_dict`: the place, "attrs", then the op's attributes."""
        place = _PLACE if self.tied_to is not None else _PLACE[:-1]
        return [*place, *self.attrs.__dataclass_fields__]

    def as_dict(self) -> dict:
        """The node as the networkx graph holds it."""
        return {key: self[key] for key in self.keys()}

    @classmethod
    def from_dict(cls, data: dict) -> "Node":
        return cls(*(data.get(key) for key in _PLACE))


_PLACE = ("op", "inputs", "in_shapes", "out_shapes", "layer", "stage", "block", "span", "attrs",
          "tied_to")


class LoweredGraph:
    """The lowered network as plain data: the node table in execution order, and its edges.

    It is what `lower` turns into a networkx DiGraph; analysis reads it directly, which keeps
    `skdsl build` from importing networkx at all. `nodes[name]` and `graph[...]` read as on
    a DiGraph.

    Underneath, the table is a list of `segments` in execution order: dicts of nodes, and
    `Placement`s, stage-level blocks whose body (a `Unit`) was lowered once for all the blocks
    that repeat it (SKNet-101's 33 units are 8 distinct ones). Analysis sums a unit once
    (`unit_summary` keeps what it computed); `nodes` spells every placement out, the first time
    it is read.
    """

    def __init__(self, **attributes):
        self.graph: dict = attributes
        self.output_shape: Shape | None = None
        self.segments: list[dict[str, Node] | Placement] = []
        self._nodes: dict[str, Node] | None = None
        self._summaries: dict[Unit, dict] = {}  # unit -> key -> summary

    @property
    def nodes(self) -> dict[str, Node]:
        if self._nodes is None:
            nodes: dict[str, Node] = {}
            for segment in self.segments:
                if isinstance(segment, Placement):
                    segment.stamp(nodes)
                else:
                    nodes.update(segment)
            self._nodes = nodes
        return self._nodes

    def unit_summary(self, unit: "Unit", key, compute):
        """What `compute(unit, key)` gives, computed once per unit and `key` (analysis's costs
        under one counting convention, its receptive-field steps)."""
        kept = self._summaries.get(unit)  # two lookups: a (unit, key) tuple is hashed anew
        if kept is None:
            kept = self._summaries[unit] = {}
        summary = kept.get(key)
        if summary is None:
            summary = kept[key] = compute(unit, key)
        return summary

    @property
    def input_shape(self) -> Shape:
        return self.graph["input"]

    @property
    def output(self) -> Ref:
        """The network's output tensor."""
        return tuple(self.graph["output"])

    @property
    def name(self) -> str:
        return self.graph.get("network", "")

    @property
    def blocks(self) -> dict[str, str]:
        """Each stage-level block's path -> the template it calls."""
        return self.graph.get("blocks", {})

    @classmethod
    def from_networkx(cls, graph) -> "LoweredGraph":
        """The table of a networkx graph that `lower` made (its node dicts hold `attrs`)."""
        table = cls(**graph.graph)
        table.segments.append({name: Node.from_dict(data) for name, data in graph.nodes.items()})
        return table

    @property
    def edges(self) -> list[tuple[str, str, dict]]:
        return [(source, name, {"shape": shape, "port": port})
                for name, node in self.nodes.items()
                for (source, port), shape in zip(node.inputs, node.in_shapes)]

    def __contains__(self, name: str) -> bool:
        return name in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes)

    def to_networkx(self):
        """A networkx DiGraph whose node dicts hold `Node.as_dict()`."""
        import networkx as nx

        graph = nx.DiGraph(**self.graph)
        graph.add_nodes_from((name, node.as_dict()) for name, node in self.nodes.items())
        graph.add_edges_from(self.edges)
        return graph


@dataclass(eq=False)
class Unit:
    """A stage-level block body lowered once: the nodes of its first placement, at `path`,
    reading `source`. Other placements are the same nodes under their own path."""

    nodes: dict[str, Node]
    path: str
    source: Ref
    output: Ref

    @cached_property
    def suffixes(self) -> frozenset[str]:
        cut = len(self.path)
        return frozenset(name[cut:] for name in self.nodes)

    def clashes(self, suffix: str) -> bool:
        """Whether a name `suffix` (".x.y", relative to the block) is taken inside it: by a
        node, by a node around it, or by one inside it."""
        if any(suffix[:i] in self.suffixes for i, char in enumerate(suffix) if char == "."):
            return True
        return suffix in self.suffixes or any(name.startswith(suffix + ".")
                                              for name in self.suffixes)


@dataclass(eq=False)
class Placement:
    """One stage-level block: a `Unit` placed at `path`, reading `source`."""

    unit: Unit
    path: str
    stage: str
    source: Ref
    output: Ref = field(init=False)  # where the unit's output lands in this placement

    def __post_init__(self):
        self.output = self.moved(self.unit.output)

    def moved(self, ref: Ref) -> Ref:
        """Where a node the unit reads or writes is, in this placement."""
        unit = self.unit
        if ref == unit.source:
            return self.source
        return (self.path + ref[0][len(unit.path):], ref[1])

    def stamp(self, nodes: dict[str, Node]) -> None:
        unit, path, cut = self.unit, self.path, len(self.unit.path)
        if path == unit.path and self.source == unit.source:
            nodes.update(unit.nodes)
            return
        for name, node in unit.nodes.items():
            tied = node.tied_to
            nodes[path + name[cut:]] = Node(
                node.op, tuple(map(self.moved, node.inputs)), node.in_shapes, node.out_shapes,
                path + node.layer[cut:], self.stage, path, node.span, node.attrs,
                None if tied is None else path + tied[cut:])


_Instance = Placement  # the former private name (benchmarks/analysis_speed.py reads it)


def as_table(graph) -> LoweredGraph:
    """The typed IR of a lowered graph: itself, or the table of the networkx export that
    `lower` made (networkx is an export format; skdsl reads only the table)."""
    return graph if isinstance(graph, LoweredGraph) else LoweredGraph.from_networkx(graph)


def lower_table(network: S.Network, input_shape: Shape | None = None, *,
                reuse: bool = True, shared: "SharedUnits | None" = None) -> LoweredGraph:
    """Lower a network to its node table, inferring every shape; SpecError on a shape mistake.

    `reuse=False` lowers every repeated block anew instead of once (the tests compare the two).
    `shared`: units (and their costs) kept for the next network of the same family.
    """
    return _Lowering(network, checked_input_shape(input_shape) or network.input, reuse,
                     shared).graph


class SharedUnits:
    """Stage-level block bodies lowered once for a family of networks, the variants of one spec
    (`skdsl explore`): a body whose items are the same objects (the expansion cache shares
    them) on an input of the same shape lowers to the same nodes in every variant, so it is
    lowered, and its costs summed, once. Holds each body, so that its items' ids, the key,
    stay theirs."""

    def __init__(self, limit: int = 8192):
        self.limit = limit
        self.units: dict[tuple, Unit] = {}
        self.summaries: dict[Unit, dict] = {}
        self._bodies: list = []

    def keep(self, body: list) -> None:
        if len(self.units) > self.limit:  # a long study of many distinct bodies
            self.units.clear()
            self.summaries.clear()
            self._bodies.clear()
        self._bodies.append(body)


def _shown(value, limit: int = 40) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int of over 4,300 digits has no repr
        return "(a number of over 4,300 digits)"
    return text if len(text) <= limit else text[:limit - 1] + "…"


class InputShapeError(SettingError, ValueError):
    """An `input_shape` that is not three whole numbers from 1 to 2³¹ − 1 (channels, height,
    width): refused where it enters, not as a shape mistake deep in the network."""

    code = "SK501"


def checked_input_shape(shape) -> Shape | None:
    """`shape` as a tuple of three ints from 1 to S.LARGEST, None as None, else InputShapeError."""
    if shape is None:
        return None
    try:
        sizes = tuple(operator.index(size) for size in shape)
    except TypeError:  # not iterable, or a size that is no whole number (3.5, '3', None)
        sizes = ()
    if isinstance(shape, (str, bytes)) or len(sizes) != 3 or any(
            isinstance(size, bool) for size in shape):
        raise InputShapeError(f"{{input_shape}} {_shown(shape)}: expected three whole numbers, "
                              f"channels × height × width, such as (3, 224, 224)")
    if not all(1 <= size <= S.LARGEST for size in sizes):
        raise InputShapeError(f"{{input_shape}} {_shown(shape)}: every size must be from 1 to "
                              f"{S.LARGEST:,}")
    return sizes


def lower(network: S.Network, input_shape: Shape | None = None):
    """Lower a network to its networkx DiGraph, inferring every shape."""
    return lower_table(network, input_shape).to_networkx()


def output_shape(graph) -> Shape:
    known = getattr(graph, "output_shape", None)  # a LoweredGraph's, without spelling it out
    if known is not None:
        return known
    node, port = graph.graph["output"]
    return graph.nodes[node]["out_shapes"][port]  # a Node, or a networkx graph's dict


class _Lowering:
    def __init__(self, network: S.Network, input_shape: Shape, reuse: bool = True,
                 shared: SharedUnits | None = None):
        self.graph = LoweredGraph(network=network.name, input=input_shape, blocks={})
        self.shared = shared
        self.nodes: dict[str, Node] = {}  # every node lowered here, for lookups
        self.table: dict[str, Node] = {}  # the segment being written
        self.graph.segments.append(self.table)
        self.containers: set[str] = set()
        self.units: dict[tuple, Unit] | None = {} if reuse else None
        if reuse and shared is not None:
            self.units = shared.units
            self.graph._summaries = shared.summaries
        self.instances: dict[str, Placement] = {}  # stage-level blocks, by path
        self.table["input"] = self.nodes["input"] = Node(
            "input", (), (), (input_shape,), "input", "input", None, network.span("input"),
            ops.tensor.InputOp())
        x: Ref = ("input", 0)
        for stage in network.stages:
            scope = _Scope(stage.name, stage.name)
            x = self.sequence(stage.body, x, scope, {"input": x})
        self.graph.graph["output"] = x
        self.graph.output_shape = self.shape(x)

    # -- plumbing ---------------------------------------------------------------------------

    def claim(self, name: str, span: Span | None) -> None:
        """A node name must be new and must not sit inside, or around, another node's name."""
        parent = name.rpartition(".")[0]
        if (parent in self.containers and parent not in self.instances and name not in self.nodes
                and name not in self.containers):
            return  # most nodes: new, inside a container checked when it became one
        clash = name if (name in self.nodes or name in self.containers) else None
        prefix = name
        while clash is None and "." in prefix:
            prefix = prefix.rpartition(".")[0]
            if prefix in self.containers:
                # Checked when it first became a container, with all its own prefixes; a block
                # placed again (see `block`) holds names that were never claimed one by one.
                instance = self.instances.get(prefix)
                if instance is not None and instance.unit.clashes(name[len(prefix):]):
                    clash = name
                break
            if prefix in self.nodes:
                clash = prefix
            self.containers.add(prefix)
        if clash is not None:
            raise SpecError(f"two parts of the network are both named '{clash}'", span,
                            code="SK205", hint="give one of them another name")

    def tied_node(self, name: str, attrs: ops.Op, tie: tuple) -> str:
        """The node of the shared branch whose module (and weights) this node reuses."""
        own, shared, where = tie
        twin = shared + name[len(own):]
        twin_node = self.nodes.get(twin)
        if twin_node is None or twin_node.attrs != attrs:  # another op, or other numbers
            raise SpecError(f"{own} cannot share the weights of {shared}: {twin} has another "
                            f"shape of weights here", where, code="SK308",
                            hint="a shared branch must see inputs with the same channels")
        return twin_node.tied_to or twin

    def shape(self, ref: Ref) -> Shape:
        return self.nodes[ref[0]].out_shapes[ref[1]]

    def emit(self, name: str, attrs: ops.Op, inputs: list[Ref], out_shapes: list[Shape],
             span: Span | None, layer: str, scope: _Scope) -> Ref:
        """Add a node of op `attrs` written at `span` (given, not looked up: this runs for
        every node)."""
        self.claim(name, span)
        nodes = self.nodes
        tied = None if scope.tie is None else self.tied_node(name, attrs, scope.tie)
        if len(inputs) == 1:  # most nodes; a comprehension would cost a frame
            source, port = inputs[0]
            in_shapes = (nodes[source].out_shapes[port],)
        else:
            in_shapes = tuple([nodes[source].out_shapes[port] for source, port in inputs])
        self.table[name] = nodes[name] = Node(attrs.name, tuple(inputs), in_shapes,
                                              tuple(out_shapes), layer, scope.stage, scope.block,
                                              span, attrs, tied)
        return (name, 0)

    def feature_map(self, ref: Ref, item: S.SpecModel, kind: str, path: str) -> Shape:
        shape = self.shape(ref)
        if len(shape) != 3:
            raise SpecError(
                f"{kind} {path} needs a C×H×W feature map, but its input is a vector of "
                f"{shape[0]} features", item.span(), code="SK304",
                hint="spatial layers cannot follow a fully connected layer; move the fc to the end",
            )
        return shape

    def sequence(self, items, x: Ref, scope: _Scope, env: dict[str, Ref]) -> Ref:
        for item in items:
            try:
                x = self.LOWER[item.kind](self, item, x, scope, env)
            except SpecError as error:
                raise _in_context(error, item, scope) from None
            if item.kind not in self.BINDS_ITSELF:
                env[item.name] = x  # a layer's output can be named: `add conv1, sk`
        return x

    # -- layers -----------------------------------------------------------------------------

    def spatial_output(self, item, path, size, kernel, stride, padding, dilation=1,
                       ceil_mode=False) -> tuple[int, int]:
        out = (conv_output_size(size[0], kernel[0], stride, padding[0], dilation, ceil_mode),
               conv_output_size(size[1], kernel[1], stride, padding[1], dilation, ceil_mode))
        if max(out) > S.LARGEST:
            raise SpecError(f"the feature map grows past {S.LARGEST} pixels a side at {path}",
                            item.span("padding"), code="SK302", hint="use a smaller padding")
        if min(out) < 1:
            field = "kernel" if max(kernel) > max(size) else "stride"
            raise SpecError(
                f"the spatial size shrinks to zero at {path}: a {_fmt(kernel)} window "
                f"(stride {stride}, dilation {dilation}, padding {_fmt(padding)}) on a "
                f"{_fmt(size)} input gives {_fmt(out)}",
                item.span(field), code="SK302",
                hint="use a larger input ({input_shape}), fewer stride-2 layers, or a smaller "
                     "kernel",
            )
        return out

    def selective_kernel(self, item: S.SelectiveKernel, x: Ref, scope: _Scope, env) -> Ref:
        span = item.span()
        path = f"{scope.path}.{item.name}"
        branch_outputs = []
        sources = self.branch_inputs(item, x, scope, path)
        for index, (branch, source) in enumerate(zip(item.branches, sources), start=1):
            branch_conv = _Conv(f"branch{index}", branch.kernel, item.out_channels,
                                stride=item.stride, groups=branch.groups,
                                dilation=branch.dilation, norm=item.norm,
                                written=(branch, item))
            branch_outputs.append(C.lower_conv(self, branch_conv, source, scope, env,
                                            f"{path}.branch{index}"))
        shape = self.shape(branch_outputs[0])
        for ref in branch_outputs:
            if self.shape(ref) != shape:
                self.reject_unequal_branches(item, path, self.shape(x), branch_outputs)
        # Fuse: U = sum of the branches (Eq. 1); without attention U is the output (Table 7).
        fused = self.emit(f"{path}.fuse", shared("add"), branch_outputs, [shape], span, path, scope)
        if not item.attention:
            return fused
        return self.attend(item, fused, branch_outputs, scope, env, path)

    def attend(self, item: S.SelectiveKernel, fused: Ref, branch_outputs: list[Ref],
               scope: _Scope, env, path: str) -> Ref:
        """The rest of Fuse (Eq. 2-3) and Select (Eq. 5-6): U -> s -> z -> logits, and the
        branches weighted by a softmax over them."""
        span = item.span()
        channels, d = item.out_channels, item.attention_width
        groups, bias = item.attention_groups, item.attention_bias
        self.check_attention_groups(item, path)
        summary = self.emit(f"{path}.pool", shared("global_pool", "avg"), [fused],
                            [(channels, 1, 1)], span, path, scope)  # s = F_gp(U), Eq. 2
        reduce = _Conv("reduce", (1, 1), d, groups=groups, bias=bias, norm=item.attention_norm,
                       act=item.attention_act, written=(item,))  # z = δ(B(W s)), Eq. 3
        compact = C.lower_conv(self, reduce, summary, scope, env, f"{path}.reduce")
        branches = len(item.branches)
        # One 1×1 conv d -> M·C holds the paper's A, B, ... stacked (Eq. 5).
        logits = self.emit(f"{path}.logits", C.Conv2dOp(d, branches * channels, (1, 1), 1, (0, 0),
                                                      1, groups, bias),
                           [compact], [(branches * channels, 1, 1)], span, path, scope)
        layout = groups if item.attention_layout == "group" else 1
        return self.emit(f"{path}.select", ops.attention.SelectOp(branches, channels, layout),
                         [logits, *branch_outputs], [self.shape(fused)], span, path, scope)

    @staticmethod
    def check_attention_groups(item: S.SelectiveKernel, path: str) -> None:
        """Raise SK311 unless fc_groups divides both C and d (and so M·C)."""
        channels, d, groups = item.out_channels, item.attention_width, item.attention_groups
        if channels % groups == 0 and d % groups == 0:  # the rule; the message only on failure
            return
        for width, what in ((channels, f"the {channels} channels"),
                            (d, f"the attention width d={d}")):
            if width % groups:
                raise SpecError(f"fc_groups={groups} does not divide {what} of {path}",
                                item.span("attention_groups"), code="SK311",
                                hint=f"the attention fcs map C={channels} → d={d} → M·C "
                                f"channels, so their groups must divide C and d: try fc_groups="
                                f"{_largest_divisor(math.gcd(channels, d), groups)}")

    def branch_inputs(self, item: S.SelectiveKernel, x: Ref, scope: _Scope,
                      path: str) -> list[Ref]:
        """What each SK branch reads: x, or with `split` (timm's split_input) its own slice of
        x's channels, branch m the m-th of M equal parts."""
        count = len(item.branches)
        if not item.split_input or count == 1:
            return [x] * count
        channels, *size = self.feature_map(x, item, "SK", path)
        if channels % count:
            lower = channels - channels % count
            widths = " or ".join(str(w) for w in (lower, lower + count) if w > 0)
            raise SpecError(f"the {channels} input channels of {path} do not split into "
                            f"{count} equal parts, one per branch", item.span("split_input"),
                            code="SK310", hint=f"`split` gives each of the {count} branches "
                            f"1/{count} of the input: give it a multiple of {count} channels "
                            f"({widths}), or drop `split`")
        part = channels // count
        node, _ = self.emit(f"{path}.split", ops.tensor.SplitOp((part,) * count), [x],
                            [(part, *size)] * count, item.span(), path, scope)
        return [(node, port) for port in range(count)]

    def select(self, item: S.Merge, x: Ref, scope: _Scope, env) -> Ref:
        """`select logits, a, b, ...`: SK's Select (Eq. 5-6) written by hand, the op an SK
        convolution ends in. The logits hold M·C values, branch by branch (path-major)."""
        path = f"{scope.path}.{item.name}"
        refs = [self.tensor(env, name, item, f"inputs.{i}") for i, name in enumerate(item.inputs)]
        logits, *shapes = [self.shape(ref) for ref in refs]
        if any(len(s) != 3 or s != shapes[0] for s in shapes):
            raise SpecError(f"select weighs feature maps of one C×H×W shape, got "
                            f"{', '.join(map(_fmt, shapes))} at {path}", item.span("inputs"),
                            code="SK303", hint="the tensors after the logits are the branches "
                            "of one SK: give them one width, stride and padding")
        count, channels = len(shapes), shapes[0][0]
        if logits not in ((count * channels,), (count * channels, 1, 1)):
            raise SpecError(f"the logits {item.inputs[0]} of {path} are {_fmt(logits)}, but "
                            f"{count} branches of {channels} channels need {count * channels}"
                            f"×1×1", item.span("inputs.0"), code="SK312",
                            hint=f"the first tensor holds one logit per branch and channel: end "
                            f"it with conv 1x1, {count * channels}, bn no, act none")
        return self.emit(path, ops.attention.SelectOp(count, channels), refs, [shapes[0]],
                         item.span(), path, scope)

    def reject_unequal_branches(self, item: S.SelectiveKernel, path: str, source: Shape,
                                outputs: list[Ref]) -> None:
        """Raise SK309: the fuse adds the branches and the select weighs them, so all must give
        one shape. A branch is padded by D·(k−1)//2, which keeps the size (⌈H/s⌉) only where
        D·(k−1) is even: a 2×2 branch loses a pixel where a 3×3 keeps it."""
        shapes = [self.shape(ref) for ref in outputs]
        kept = (item.out_channels, *(conv_output_size(size, 1, item.stride, 0)
                                     for size in source[1:]))
        reference = kept if kept in shapes else max(shapes, key=shapes.count)
        index = next(i for i, shape in enumerate(shapes) if shape != reference)
        branch = item.branches[index]
        listed = ", ".join(f"branch{i} ({_branch_text(b.kernel, b.dilation)}) {_fmt(shape)}"
                           for i, (b, shape) in enumerate(zip(item.branches, shapes), start=1))
        raise SpecError(f"the branches of {path} give different shapes: {listed}",
                        branch.span("kernel") or item.span(), code="SK309",
                        hint=_branch_fix(branch, index + 1, source[1:], item.stride,
                                         reference[1:]))

    def primitive(self, item: S.Layer, x: Ref, scope: _Scope, env) -> Ref:
        """A spec item that lowers to one op of the registry (ops.GENERIC_KINDS)."""
        path = f"{scope.path}.{item.name}"
        op = ops.GENERIC_KINDS[item.kind]
        shape = self.shape(x)
        if op.spatial is not None:
            self.feature_map(x, item, op.spatial, path)
        attrs = op.from_item(item, shape, path)
        return self.emit(path, attrs, [x], [attrs.output(shape)], item.span(), path, scope)

    def tensor(self, env: dict[str, Ref], name: str, item: S.SpecModel, field="inputs") -> Ref:
        if name not in env:
            known = sorted(env)
            raise SpecError(f"no tensor named '{name}' here", item.span(field), code="SK306",
                            hint=did_you_mean(name, known) or
                            f"the tensors bound here are: {', '.join(known)}")
        return env[name]

    def branch(self, item: S.Branch, x: Ref, scope: _Scope, env) -> Ref:
        source = x if item.source is None else self.tensor(env, item.source, item)
        inner = scope.inner(f"{scope.path}.{item.name}")
        if item.shares is not None:
            inner = _Scope(inner.path, scope.stage, scope.block,
                           (inner.path, f"{scope.path}.{item.shares}", item.span("shares")))
        env[item.name] = self.sequence(item.body, source, inner, {"input": source})
        return x

    def residual(self, item: S.Residual, x: Ref, scope: _Scope, env) -> Ref:
        span = item.span()
        body = self.sequence(item.body, x, scope, env)
        if item.shortcut is not None:
            inner = scope.inner(f"{scope.path}.{item.shortcut_name}")
            shortcut = self.sequence(item.shortcut, x, inner, {"input": x})
        elif self.shape(body) == self.shape(x):
            shortcut = x
        else:
            shortcut = self.projection(item, x, body, scope, env)
        path = f"{scope.path}.{item.add_name}"
        shapes = [self.shape(body), self.shape(shortcut)]
        if shapes[0] != shapes[1]:
            raise SpecError(f"the residual body gives {_fmt(shapes[0])} but its shortcut gives "
                            f"{_fmt(shapes[1])} at {path}", item.span(), code="SK305")
        y = self.emit(path, shared("add"), [body, shortcut], [shapes[0]], span, path, scope)
        if item.act != "none":
            path = f"{scope.path}.{item.act_name}"
            y = self.emit(path, shared("act", item.act), [y], [shapes[0]], span, path, scope)
        return y

    def projection(self, item: S.Residual, x: Ref, body: Ref, scope: _Scope, env) -> Ref:
        """ResNeXt's projection shortcut: 1×1 conv with the body's stride, then BN."""
        source, target = self.shape(x), self.shape(body)
        if len(source) != 3 or len(target) != 3:
            raise SpecError("a residual body must keep a C×H×W feature map", item.span(),
                            code="SK305")
        stride = _projection_stride(source[1:], target[1:])
        if stride is None:
            raise SpecError(
                f"no 1×1 projection maps the residual input {_fmt(source)} to its body's output "
                f"{_fmt(target)} at {scope.path}", item.span(), code="SK305",
                hint="write the shortcut yourself with a `shortcut:` block inside the residual")
        projection = _Conv(item.shortcut_name, (1, 1), target[0], stride=stride, act="none",
                           written=(item,))
        return C.lower_conv(self, projection, x, scope, env)

    def block(self, item: S.Block, x: Ref, scope: _Scope, env) -> Ref:
        path = f"{scope.path}.{item.name}"
        if scope.block is None:
            self.graph.graph["blocks"][path] = item.template
        if self.units is None or scope.path != scope.stage:
            return self.sequence(item.body, x, scope.inner(path, scope.block or path), {"input": x})
        # A stage-level block: the same body on the same input shape lowers to the same nodes
        # (repeats share their body items), so it is lowered once and placed again.
        key = (tuple(map(id, item.body)), self.shape(x))
        unit = self.units.get(key)
        if unit is None:
            outer, self.table = self.table, {}
            y = self.sequence(item.body, x, scope.inner(path, path), {"input": x})
            unit = self.units[key] = Unit(self.table, path, x, y)
            self.table = outer
            if self.shared is not None:
                self.shared.keep(item.body)
        else:
            self.claim(path, item.span())
            self.containers.add(path)
        instance = self.instances[path] = Placement(unit, path, scope.stage, x)
        output = instance.output
        if output[0] not in self.nodes:  # for the layers after it to read its shape
            self.nodes[output[0]] = unit.nodes[unit.output[0]]
        segments = self.graph.segments
        if not segments[-1]:
            segments.pop()  # no node between this block and the one before
        segments.append(instance)
        self.table = {}
        segments.append(self.table)
        return output

    BINDS_ITSELF = ("branch", "split", "residual")
    LOWER = {
        **dict.fromkeys(ops.GENERIC_KINDS, primitive),
        **ops.LOWERERS,  # the op files' own: conv, se, pool, act, split, add, concat, mul, upsample
        "sk": selective_kernel, "select": select, "branch": branch, "residual": residual,
        "block": block,
    }




@dataclass(slots=True)
class _Conv:
    """A conv the lowering makes itself (SK branches and reduce, projections), read as an
    `S.Conv` is: its numbers are valid already, and a pydantic model would cost time."""

    name: str
    kernel: tuple[int, int]
    out_channels: int
    stride: int = 1
    groups: int | str = 1
    dilation: int = 1
    padding: tuple[int, int] | None = None
    bias: bool = False
    norm: bool = True
    act: str = "relu"
    written: tuple = ()  # the spec items it comes from, the most specific first

    def span(self, field_name: str = "") -> Span | None:
        for name in (field_name, ""):
            for item in self.written:
                span = item.own_span(name)
                if span is not None:
                    return span
        return None


def _in_context(error: SpecError, item: S.SpecModel, scope: _Scope) -> SpecError:
    """Name the innermost part an error happened in, and where that part was written."""
    if isinstance(item, S.Block):
        return error.with_note(f"in block {item.template}, called at {item.span()}")
    if any(note.startswith("in: ") for note in error.notes):
        return error
    path = f"{scope.path}.{item.name}" if isinstance(item, S.Layer) else scope.path
    written = item.span()
    if written is not None and error.span is not None and (written.file, written.line) != (
            error.span.file, error.span.line):
        return error.with_note(f"in: {path}, written at {written}")
    return error.with_note(f"in: {path}")


def _projection_stride(source: tuple[int, int], target: tuple[int, int]) -> int | None:
    """The smallest stride s at which a 1×1 conv (no padding) maps `source` to `target`
    (H, W), or None. Its output is (H−1)//s + 1, so s must satisfy (H−1)//s = T−1 on each
    axis: (H−1)//T < s ≤ (H−1)//(T−1). Solved, not searched: H may be 2³¹−1."""
    low, high = 1, None
    for size, wanted in zip(source, target):
        if not 1 <= wanted <= size:
            return None
        low = max(low, (size - 1) // wanted + 1)
        if wanted > 1:
            bound = (size - 1) // (wanted - 1)
            high = bound if high is None else min(high, bound)
    if high is not None and low > high:
        return None
    return low if low <= S.LARGEST else None


def _branch_text(kernel: tuple[int, int], dilation: int) -> str:
    """An SK branch as a branch list writes it: `3x3`, `2x2, D=2`."""
    text = "x".join(map(str, kernel))
    return text if dilation == 1 else f"{text}, D={dilation}"


def _branch_fix(branch: S.KernelBranch, number: int, size, stride: int, wanted) -> str:
    """SK309's hint: the rewrites of branch `number` that give the `wanted` size (H, W)."""
    rule = ("an SK branch is padded by D·(k−1)/2 on each side, which keeps the size only where "
            "D·(k−1) is even")
    odd = tuple(k + 1 if branch.dilation * (k - 1) % 2 else k for k in branch.kernel)
    fixes = [_branch_text(kernel, dilation)
             for kernel, dilation in ((odd, branch.dilation), (branch.kernel, 2 * branch.dilation))
             if tuple(conv_output_size(s, k, stride, p, dilation) for s, k, p in
                      zip(size, kernel, same_padding(kernel, dilation))) == tuple(wanted)]
    if not fixes:
        return f"{rule}: give every branch an odd kernel, or an even dilation"
    also = f" (or {fixes[1]})" if len(fixes) > 1 else ""
    return f"{rule}: write branch{number} as {fixes[0]}{also}"


__all__ = ["lower", "lower_table", "LoweredGraph", "Node", "Unit", "Placement", "output_shape",
           "conv_output_size", "same_padding", "OPS", "Span"]
