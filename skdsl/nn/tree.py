"""The executed module tree: containers that run their children over schedules precomputed
from the lowered graph, and the tree built from it.

Every graph node `conv3.block2.sk.branch1.conv` becomes the leaf module at that dotted path, so
module names, graph nodes, report rows and checkpoint keys agree. Every prefix of a node's path is
a container that runs its own children: the network runs its stages (`Stage`), a stage its blocks
(`Block`), a block its layers (`Layer`: a conv-BN-ReLU, an SK convolution, an SE gate: one spec
item) and its branches and shortcuts (`Branch`). A container's inputs are the tensors made
outside it and read inside it, its outputs those made inside it and read outside it (a tuple
where there are several). Each container runs a schedule precomputed from the graph: its
children in the graph's order (which is topological), reading and writing numbered slots, and
dropping every tensor after its last use inside it. It looks each child up when it runs, so
`model.head.fc = nn.Linear(256, 5)` takes effect; an assignment the graph would never call (a new
name, a deletion, None) is refused at once (ModuleTreeError, SK391). A fully connected layer
receives its input flattened to N×F, as in timm, so a plain `nn.Linear` can replace it.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable, NamedTuple

from torch import Tensor, nn

from ..base.errors import SkdslError, SpecError, did_you_mean
from ..core import graph as G
from ..ops import OPS

Ref = G.Ref


# The module for each graph op, built from the node's typed attributes (skdsl.ops).
MODULES: dict[str, Callable[[G.Node], nn.Module]] = {name: op.build for name, op in OPS.items()
                                                     if name != "input"}


class ModelError(SkdslError):
    """A compiled network asked for something its graph does not have (the Python model API)."""

    code = "SK390"


class UnknownPartError(ModelError, KeyError):
    """A name that is no node, container or stage of the network."""

    code = "SK390"


class ModuleTreeError(ModelError, AttributeError):
    """An assignment or deletion the graph could not honour: it would be silently ignored."""

    code = "SK391"


class NoClassifierError(ModelError):
    """The classifier API on a network whose output is not a fully connected layer."""

    code = "SK392"


class ModelArgumentError(ModelError, ValueError):
    """A value the model API cannot take (a class count, a stage index, a tensor count)."""

    code = "SK393"


# -- running a container -------------------------------------------------------------------------

class Step(NamedTuple):
    """One call of a container's schedule: run the child `child` on the `reads` slots, write
    its outputs to the `writes` slots, then empty the `frees` slots."""

    child: str  # the child's attribute name in the container, looked up when the step runs
    reads: tuple[int, ...]
    writes: tuple[int, ...]
    frees: tuple[int, ...]  # slots whose last use is this step, or written and never read
    flatten: bool  # a fully connected layer: its input is flattened to N×F first (as timm's)


class Plan(NamedTuple):
    """A container's schedule: the first `inputs` slots hold its inputs, `blank` the rest."""

    steps: tuple[Step, ...]
    inputs: int
    blank: tuple[None, ...]
    outputs: tuple[int, ...]


class Call(NamedTuple):
    """A child as its container's schedule sees it: its name and the graph tensors it reads
    and writes, as (node, port) pairs."""

    child: str
    reads: tuple[Ref, ...]
    writes: tuple[Ref, ...]
    flatten: bool = False


def _run(modules: dict[str, nn.Module], plan: Plan, inputs: tuple) -> tuple:
    """Run `plan` over `modules` (a container's children, looked up now) on `inputs`."""
    slots = [*inputs, *plan.blank]
    for child, reads, writes, frees, flatten in plan.steps:
        if flatten:
            result = modules[child](slots[reads[0]].flatten(1))  # N×C×1×1 -> N×C
        else:
            result = modules[child](*[slots[slot] for slot in reads])
        if len(writes) == 1:
            slots[writes[0]] = result
        else:
            for port, slot in enumerate(writes):
                slots[slot] = result[port]
        for slot in frees:
            slots[slot] = None
    return tuple([slots[slot] for slot in plan.outputs])


def _plan(inputs: tuple[Ref, ...], calls: Iterable[Call], outputs: tuple[Ref, ...]) -> Plan:
    """Number the tensors `calls` pass around (the inputs first) and find where each dies."""
    slots: dict[Ref, int] = {ref: slot for slot, ref in enumerate(inputs)}
    planned = []
    for call in calls:
        missing = [ref for ref in call.reads if ref not in slots]
        if missing:
            raise ValueError(f"{call.child} reads {missing} before they are computed: the "
                             f"graph's nodes are not in topological order")
        reads = tuple(slots[ref] for ref in call.reads)
        writes = tuple(range(len(slots), len(slots) + len(call.writes)))
        slots.update(zip(call.writes, writes))
        planned.append((call, reads, writes))
    output_slots = tuple(slots[ref] for ref in outputs)
    frees = _frees([(reads, writes) for _, reads, writes in planned], output_slots)
    steps = tuple(Step(call.child, reads, writes, frees[position], call.flatten)
                  for position, (call, reads, writes) in enumerate(planned))
    return Plan(steps, len(inputs), (None,) * (len(slots) - len(inputs)), output_slots)


def _frees(planned: list, outputs: tuple[int, ...]) -> list[tuple[int, ...]]:
    """For each step, the slots to empty after it: those it reads last, or writes but none read."""
    last_use: dict[int, int] = {}
    for position, (inputs, written) in enumerate(planned):
        for slot in (*written, *inputs):
            last_use[slot] = position
    for slot in outputs:
        last_use.pop(slot, None)
    frees: list[list[int]] = [[] for _ in planned]
    for slot, position in last_use.items():
        frees[position].append(slot)
    return [tuple(sorted(slots)) for slots in frees]


# -- the containers -------------------------------------------------------------------------------

class _InPlaceSites:
    """The modules that overwrite a tensor in place, by the graph tensor they overwrite; one
    record per network, shared by its containers."""

    def __init__(self) -> None:
        self.by_tensor: dict[Ref, list[nn.Module]] = {}

    def keep(self, refs: Iterable[Ref]) -> None:
        """Switch in place off wherever one of these tensors would be overwritten."""
        for ref in refs:
            for module in self.by_tensor.get(ref, ()):
                module.inplace = False


class _Container(nn.Module):
    """A part of the network that runs its children over its precomputed schedule."""

    def __init__(self, path: str, calls: Iterable[Call], reads: tuple[Ref, ...],
                 writes: tuple[Ref, ...], sites: _InPlaceSites, summary: str = ""):
        super().__init__()
        self._path = path
        self._calls = tuple(calls)
        self._reads, self._writes = reads, writes
        self._inplace_sites = sites
        self._borders = (*reads, *writes)  # and, in a shared branch, those of its other uses
        self._summary = summary
        self._plan = _plan(reads, self._calls, writes)

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        if len(inputs) != self._plan.inputs:
            raise ModelArgumentError(f"{self._path} takes {self._plan.inputs} tensor(s), not "
                                     f"{len(inputs)}", hint=_takes(self._reads))
        outputs = _run(self._modules, self._plan, inputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self) -> str:
        return self._summary

    # The shape of the tree is the graph's: a module assigned under a new name would never be
    # called, and a deleted one would leave a hole, so both are refused where torch would
    # accept them silently. Replacing a child takes effect, since children are looked up.

    def _adopt(self, children: dict[str, nn.Module]) -> None:
        """Register the children and fix the tree's shape from now on."""
        for name, module in children.items():
            if hasattr(type(self), name) or name in self.__dict__:
                raise ValueError(f"node {_join(self._path, name)}: '{name}' is an attribute of "
                                 f"{type(self).__name__}, so it cannot name a module; rename it")
            nn.Module.add_module(self, name, module)
        self._sealed = True

    def __setattr__(self, name: str, value) -> None:
        if self.__dict__.get("_sealed") and (isinstance(value, nn.Module)
                                             or name in self._modules):
            self._check_replacement(name, value)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if self.__dict__.get("_sealed") and name in self._modules:
            raise ModuleTreeError(
                f"cannot delete {_join(self._path, name)}: the network's graph calls it",
                hint="assign a module that takes and gives the same tensors instead, such as "
                     "nn.Identity() where one tensor goes in and the same shape comes out")
        super().__delattr__(name)

    def add_module(self, name: str, module: nn.Module | None) -> None:
        if self.__dict__.get("_sealed"):
            self._check_replacement(name, module)
        super().add_module(name, module)

    def _check_replacement(self, name: str, value) -> None:
        where = _join(self._path, name)
        if name not in self._modules:
            children = list(self._modules)
            raise ModuleTreeError(
                f"{where} is not a part of the network: its graph would never call a module "
                f"assigned there", hint=did_you_mean(name, children) or
                f"{self._path or 'the network'} has {', '.join(children)}; replace one of them")
        if not isinstance(value, nn.Module):
            raise ModuleTreeError(
                f"cannot set {where} to {type(value).__name__}: the network's graph calls it",
                hint="assign a module that takes and gives the same tensors, such as "
                     "nn.Identity() where one tensor goes in and the same shape comes out")

    # torch wraps the inputs and outputs of a module with full backward hooks in views that
    # must not be modified in place, so in place is switched off around that module.

    def register_full_backward_hook(self, hook, prepend: bool = False):
        self._inplace_sites.keep(self._borders)
        return super().register_full_backward_hook(hook, prepend=prepend)

    def register_full_backward_pre_hook(self, hook, prepend: bool = False):
        self._inplace_sites.keep(self._borders)
        return super().register_full_backward_pre_hook(hook, prepend=prepend)


class Stage(_Container):
    """A stage of the network (a row of the paper's Table 1)."""


class Block(_Container):
    """One instance of a spec block, such as an SK unit."""


class Layer(_Container):
    """A spec layer made of several ops: a conv with its BN and activation, an SK convolution
    with its branches, fuse and select, an SE gate."""


class Branch(_Container):
    """A branch or an explicit shortcut: a sequence of layers with its own input."""


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _takes(refs: tuple[Ref, ...]) -> str:
    return f"it reads {', '.join(name if port == 0 else f'{name}:{port}' for name, port in refs)}"


def _shapes_text(graph, refs: tuple[Ref, ...]) -> str:
    shapes = ["×".join(map(str, graph.nodes[name].out_shapes[port])) for name, port in refs]
    return f"out={', '.join(shapes)}"


def _runs_inplace(module: nn.Module) -> bool:
    return getattr(module, "inplace", False) is True



# -- building the tree from the graph -------------------------------------------------------------

class _Lowered:
    """What building the tree reads from the graph, computed once."""

    def __init__(self, graph: G.LoweredGraph):
        self.graph = graph
        self.nodes = {name: node for name, node in graph.nodes.items() if node.op != "input"}
        self.order = {name: position for position, name in enumerate(self.nodes)}
        self.output: Ref = graph.output
        self.readers: dict[Ref, list[str]] = {}
        for name, node in self.nodes.items():
            for ref in node.inputs:
                self.readers.setdefault(tuple(ref), []).append(name)
        self.leaves = {name: _build(name, node) for name, node in self.nodes.items()
                       if not node.tied_to}
        self.layers = {node.layer for node in self.nodes.values()}
        self.blocks: dict[str, str] = graph.blocks
        # A branch that shares another's weights (`shares`) runs the other's container.
        self.shared: dict[str, str] = {}  # the sharing branch's path -> the shared one's
        for name, node in self.nodes.items():
            if node.tied_to:
                own, shared = _tie(name, node.tied_to)
                self.shared[own] = shared
        self.sites = _InPlaceSites()

    def names_under(self, path: str) -> list[str]:
        return [name for name in self.nodes if name.startswith(path + ".")]

    def interface(self, path: str, names: list[str]) -> tuple[tuple[Ref, ...], tuple[Ref, ...]]:
        """The tensors made outside `names` and read inside, and those made inside and read
        outside (or the network's output), in the graph's order."""
        inside = set(names)
        reads: dict[Ref, None] = {}
        writes = []
        for name in names:
            node = self.nodes[name]
            for ref in node.inputs:
                if ref[0] not in inside:
                    reads.setdefault(tuple(ref))
            for port in range(len(node.out_shapes)):
                ref = (name, port)
                if ref == self.output or any(reader not in inside
                                             for reader in self.readers.get(ref, ())):
                    writes.append(ref)
        for sharer, shared in self.shared.items():  # a shared branch also writes what they read
            if shared == path:
                writes += [(path + name[len(sharer):], port)
                           for name, port in self.interface(sharer, self.names_under(sharer))[1]]
        writes = sorted(set(writes), key=lambda ref: (self.order[ref[0]], ref[1]))
        return tuple(reads), tuple(writes)


def _tie(name: str, tied_to: str) -> tuple[str, str]:
    """The paths of the sharing branch and of the shared one: the node names less the trailing
    part they have in common (both branches sit in one scope)."""
    own, shared = name.split("."), tied_to.split(".")
    while own[-1] == shared[-1]:
        own.pop(), shared.pop()
    return ".".join(own), ".".join(shared)


def _groups(path: str, names: list[str]) -> list[tuple[str, list[str]]]:
    """The children of the scope `path`: each child's name and the graph nodes under it."""
    depth = path.count(".") + 1 if path else 0
    groups: list[tuple[str, list[str]]] = []
    for name in names:
        part = name.split(".", depth + 1)[depth]
        if groups and groups[-1][0] == part:
            groups[-1][1].append(name)
        else:
            groups.append((part, [name]))
    counts = Counter(part for part, _ in groups)
    for part, members in groups:
        child = _join(path, part)
        if counts[part] > 1:
            raise ValueError(f"the nodes under {child} are not consecutive in the graph: "
                             f"rename the parts that interleave with them")
        if child in members and len(members) > 1:
            raise ValueError(f"node {child} is also the container of other nodes: rename one "
                             f"of them")
    return groups


def _children(lowered: _Lowered, path: str, names: list[str]):
    """The calls of the scope `path` and the modules to register under it."""
    calls: list[Call] = []
    modules: dict[str, nn.Module] = {}
    for part, members in _groups(path, names):
        child = _join(path, part)
        if members == [child]:  # a node
            node = lowered.nodes[child]
            writes = tuple((child, port) for port in range(len(node.out_shapes)))
            calls.append(Call(part, tuple(map(tuple, node.inputs)), writes,
                              node.op == "linear"))
            modules[part] = lowered.leaves[child]
        elif child in lowered.shared:
            calls.append(_sharing_call(lowered, child, members, modules))
        else:
            container = _container(lowered, child, members)
            calls.append(Call(part, container._reads, container._writes))
            modules[part] = container
    return calls, modules


def _container(lowered: _Lowered, path: str, names: list[str]) -> _Container:
    calls, modules = _children(lowered, path, names)
    reads, writes = lowered.interface(path, names)
    summary = _shapes_text(lowered.graph, writes)
    if "." not in path:
        kind = Stage
    elif path in lowered.blocks:
        kind, summary = Block, f"{lowered.blocks[path]}, {summary}"
    else:
        kind = Layer if path in lowered.layers else Branch
    container = kind(path, calls, reads, writes, lowered.sites, summary)
    container._adopt(modules)
    return container


def _sharing_call(lowered: _Lowered, path: str, names: list[str],
                  siblings: dict[str, nn.Module]) -> Call:
    """A branch that shares another's weights: a call of the other branch's container."""
    shared = lowered.shared[path]
    twin = siblings[shared.rpartition(".")[2]]
    reads, _ = lowered.interface(path, names)

    def wiring(scope: str, members: list[str], outer: tuple[Ref, ...]) -> list:
        cut = len(scope)
        return [(name[cut:], [(source[cut:], port) if source.startswith(scope + ".")
                              else outer.index((source, port))
                              for source, port in lowered.nodes[name].inputs])
                for name in members]

    if wiring(path, names, reads) != wiring(shared, lowered.names_under(shared), twin._reads):
        raise SpecError(f"{path} shares the weights of {shared} but not all of its layers",
                        lowered.nodes[names[0]].span, code="SK308",
                        hint="a shared branch must repeat the other's body, layer for layer")
    def moved(ref: Ref) -> Ref:  # where a tensor of the shared branch is in this one
        name, port = ref
        if name.startswith(shared + "."):
            return (path + name[len(shared):], port)
        return reads[twin._reads.index(ref)]

    for container in twin.modules():
        if isinstance(container, _Container):
            container._borders += tuple(map(moved, (*container._reads, *container._writes)))
    return Call(shared.rpartition(".")[2], reads, tuple(map(moved, twin._writes)))


def _build(name: str, node: G.Node) -> nn.Module:
    if node.op not in MODULES:
        raise ValueError(f"node {name}: no module for op '{node.op}'")
    return MODULES[node.op](node)
