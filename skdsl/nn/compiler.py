"""Compilation: a lowered graph -> a tree of torch modules that runs it.

Every graph node `conv3.block2.sk.branch1.conv` becomes the leaf module at that dotted path, so
module names, graph nodes, report rows and checkpoint keys agree. Every prefix of a node's path is
a container that runs its own children: the network (`CompiledNetwork`) runs its stages (`Stage`),
a stage its blocks (`Block`), a block its layers (`Layer`: a conv-BN-ReLU, an SK convolution, an
SE gate: one spec item) and its branches and shortcuts (`Branch`). A container's inputs are the
tensors made outside it and read inside it, its outputs those made inside it and read outside it
(a tuple where there are several). Each container runs a schedule precomputed from the graph: its
children in the graph's order (which is topological), reading and writing numbered slots, and
dropping every tensor after its last use inside it. It looks each child up when it runs, so
`model.head.fc = nn.Linear(256, 5)` takes effect; an assignment the graph would never call (a new
name, a deletion, None) is refused at once (ModuleTreeError, SK391). A fully connected layer
receives its input flattened to N×F, as in timm, so a plain `nn.Linear` can replace it.

Two transforms keep those names and the multiply-adds (docs/performance.md measures both):

* in place: an activation or a residual sum whose input is read by nothing else, and that
  autograd saved nowhere (it comes fresh from a conv, BN, fc, sum, product, concat or Select),
  overwrites that input, as torchvision's `relu(inplace=True)` and `out += identity` do; a full
  backward hook on a container switches it off around that container (torch forbids it there);
* `fuse_bn(model)`: an inference copy whose convolutions absorb the batch norms after them.

The network also speaks timm's model API (docs/model-api.md): `num_classes`, `get_classifier`,
`reset_classifier`, `forward_features`, `forward_head`, `feature_info`, `features`, `as_features`.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from typing import Callable, Iterable, NamedTuple

import networkx as nx
import torch
from torch import Tensor, nn

from ..core import graph as G
from . import layers as L
from ..core import spec as S
from ..base.errors import SkdslError, SpecError, did_you_mean
from ..ops import OPS
from ..core.resources import guard_compile

Ref = G.Ref


# The module for each graph op, built from the node's typed attributes (skdsl.ops).
MODULES: dict[str, Callable[[dict], nn.Module]] = {name: op.build for name, op in OPS.items()
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
    shapes = ["×".join(map(str, graph.nodes[name]["out_shapes"][port])) for name, port in refs]
    return f"out={', '.join(shapes)}"


# -- building the tree from the graph -------------------------------------------------------------

class _Lowered:
    """What building the tree reads from the graph, computed once."""

    def __init__(self, graph: nx.DiGraph):
        self.graph = graph
        self.nodes = {name: node for name, node in graph.nodes.items() if node["op"] != "input"}
        self.order = {name: position for position, name in enumerate(self.nodes)}
        self.output: Ref = tuple(graph.graph["output"])
        self.readers: dict[Ref, list[str]] = {}
        for name, node in self.nodes.items():
            for ref in node["inputs"]:
                self.readers.setdefault(tuple(ref), []).append(name)
        self.leaves = {name: _build(name, node) for name, node in self.nodes.items()
                       if not node.get("tied_to")}
        self.layers = {node["layer"] for node in self.nodes.values()}
        self.blocks: dict[str, str] = graph.graph.get("blocks", {})
        # A branch that shares another's weights (`shares`) runs the other's container.
        self.shared: dict[str, str] = {}  # the sharing branch's path -> the shared one's
        for name, node in self.nodes.items():
            if node.get("tied_to"):
                own, shared = _tie(name, node["tied_to"])
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
            for ref in node["inputs"]:
                if ref[0] not in inside:
                    reads.setdefault(tuple(ref))
            for port in range(len(node["out_shapes"])):
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
            writes = tuple((child, port) for port in range(len(node["out_shapes"])))
            calls.append(Call(part, tuple(map(tuple, node["inputs"])), writes,
                              node["op"] == "linear"))
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
                              for source, port in lowered.nodes[name]["inputs"]])
                for name in members]

    if wiring(path, names, reads) != wiring(shared, lowered.names_under(shared), twin._reads):
        raise SpecError(f"{path} shares the weights of {shared} but not all of its layers",
                        lowered.nodes[names[0]]["span"], code="SK308",
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


def _build(name: str, node: dict) -> nn.Module:
    if node["op"] not in MODULES:
        raise ValueError(f"node {name}: no module for op '{node['op']}'")
    return MODULES[node["op"]](node)


# -- the network ----------------------------------------------------------------------------------

class _AllFound(Exception):
    """Raised by `features`' hooks to stop the forward pass once every output is recorded."""


class CompiledNetwork(_Container):
    """A network compiled from its graph; `forward` runs its stages (see the module docstring).

    With `inplace` (the default), activations and residual sums overwrite inputs that nothing
    else reads (see `_enable_inplace`); a forward hook that keeps such an input must clone it.
    `pretrained_cfg` (also `default_cfg`) is timm's record of how pretrained weights want their
    input (size, mean and std, crop, interpolation): None until a registry sets it.
    """

    def __init__(self, graph: nx.DiGraph, inplace: bool = True):
        lowered = _Lowered(graph)
        calls, stages = _children(lowered, "", list(lowered.nodes))
        output = (lowered.output,)
        super().__init__("", calls, (("input", 0),), output, lowered.sites,
                         f"{graph.graph.get('network', '')}, {_shapes_text(graph, output)}")
        self.graph = graph  # not a module, so not a submodule
        self.pretrained_cfg: dict | None = None
        self._shared = lowered.shared
        self._classifier = _classifier(graph)
        self._head = self._classifier.partition(".")[0] if self._classifier else None
        head_index = next((i for i, c in enumerate(calls) if c.child == self._head), len(calls))
        self.feature_info = _feature_info(graph, calls[:head_index])
        self._features_plan = (_plan(self._reads, calls[:head_index], calls[head_index].reads)
                               if self._head else None)
        self._adopt(stages)
        self._pre_logits_plan = self._plan_to_classifier() if self._head else None
        if inplace:
            lowered.sites.by_tensor.update(_enable_inplace(graph, _node_modules(self)))

    def forward(self, x: Tensor) -> Tensor:
        return _run(self._modules, self._plan, (x,))[0]

    # -- timm's model API --------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """The classifier's output count; 0 where there is none (or it was reset to 0)."""
        if self._classifier is None:
            return 0
        return getattr(self.get_classifier(), "out_features", 0)

    @property
    def num_features(self) -> int:
        """The width of the pre-logits features: the classifier's input (else the output's)."""
        node = self.graph.nodes[self._classifier or self.graph.graph["output"][0]]
        return node["in_features"] if self._classifier else node["out_shapes"][0][0]

    @property
    def default_cfg(self) -> dict | None:
        """timm's older name for `pretrained_cfg`."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, value: dict | None) -> None:
        self.pretrained_cfg = value

    def get_classifier(self) -> nn.Module:
        """The final fully connected layer (the module at `head.fc` in the shipped specs)."""
        head, name = self._classifier_owner()
        return head._modules[name]

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for `num_classes` classes, initialised as the paper does; 0 leaves
        none, so the network gives its pre-logits features (N × num_features)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ModelArgumentError(f"reset_classifier takes a class count, not {num_classes!r}",
                                     hint="give an integer: 0 or more (0: no classifier)")
        head, name = self._classifier_owner()
        old = head._modules[name]
        node = self.graph.nodes[self._classifier]
        if num_classes:
            layer = L.FlattenLinear(node["in_features"], num_classes, bias=node["bias"])
            initialise(layer)
            like = next(itertools.chain(old.parameters(), self.parameters()), None)
            if like is not None:
                layer.to(device=like.device, dtype=like.dtype)
        else:
            layer = nn.Identity()
        setattr(head, name, layer)

    def forward_features(self, x: Tensor) -> Tensor:
        """The stages before the head: the feature map the classifier's stage reads."""
        if self._features_plan is None:
            return self(x)
        outputs = _run(self._modules, self._features_plan, (x,))
        return outputs[0] if len(outputs) == 1 else outputs

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The head stage on `forward_features`' output; with `pre_logits`, stop before the
        classifier and give its input, flattened to N × num_features."""
        head, _ = self._classifier_owner()
        if not pre_logits:
            return head(x)
        return _run(head._modules, self._pre_logits_plan, (x,))[0].flatten(1)

    def features(self, x: Tensor, names: Iterable[str] | str | None = None, *,
                 stages: Iterable[str] | str | None = None) -> dict[str, Tensor | tuple]:
        """The outputs of the named parts for input `x`, in the order asked: graph nodes,
        containers (a tuple where a part gives several), stages, or "input". With neither
        `names` nor `stages`, the stages of `feature_info`."""
        wanted = self._wanted(names, stages)
        found: dict[str, Tensor | tuple] = {"input": x} if "input" in wanted else {}
        # A later step may compute into an output in place (or into a tensor an identity such
        # as a folded BN handed on): with any in-place step, keep copies.
        keep_copies = any(_runs_inplace(module) for module in self.modules())
        calls = self._part_calls()
        expected: dict[nn.Module, dict[int, list[str]]] = {}
        for name in wanted:
            if name not in found:
                path, occurrence = calls[name]
                by_call = expected.setdefault(self.get_submodule(path), {})
                by_call.setdefault(occurrence, []).append(name)
        total = len(set(wanted))
        handles = [module.register_forward_hook(_recorder(by_call, found, keep_copies, total))
                   for module, by_call in expected.items()]
        try:
            if len(found) < total:
                self(x)
        except _AllFound:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return {name: found[name] for name in wanted}

    def as_features(self, out_indices: Iterable[int] | None = None) -> "FeatureNetwork":
        """timm's `features_only`: a network of the stages up to the last of `out_indices`
        (indices into `feature_info`, default all) whose forward gives their outputs, as a
        list. It shares this network's modules (and weights); where a later stage would
        overwrite an asked output in place, that step runs out of place in both."""
        return FeatureNetwork(self, out_indices)

    # -- helpers -------------------------------------------------------------------------

    def _classifier_owner(self) -> tuple[nn.Module, str]:
        if self._classifier is None:
            output = self.graph.graph["output"][0]
            raise NoClassifierError(
                f"network '{self.graph.graph.get('network')}' has no classifier: its output "
                f"{output} is a {self.graph.nodes[output]['op']}, not a fully connected layer",
                hint="the classifier API needs the network to end in an fc written directly in "
                     "its last stage, such as `stage head: avgpool global; fc classes`")
        head, name = self._modules[self._head], self._classifier.partition(".")[2]
        if not isinstance(head, _Container) or name not in head._modules:
            raise ModuleTreeError(f"the head stage {self._head} was replaced by a "
                                  f"{type(head).__name__}, which has no classifier {name}",
                                  hint="replace the classifier itself: model.head.fc = ...")
        return head, name

    def _plan_to_classifier(self) -> Plan:
        head = self._modules[self._head]
        name = self._classifier.partition(".")[2]
        position = next(i for i, call in enumerate(head._calls) if call.child == name)
        return _plan(head._reads, head._calls[:position], head._calls[position].reads)

    def _wanted(self, names, stages) -> list[str]:
        names = [names] if isinstance(names, str) else list(names or ())
        stages = [stages] if isinstance(stages, str) else list(stages or ())
        if not names and not stages:
            stages = [info["module"] for info in self.feature_info]
        known_stages = [call.child for call in self._calls]
        for stage in stages:
            if stage not in known_stages:
                raise UnknownPartError(f"no stage named {stage!r}",
                                       hint=did_you_mean(stage, known_stages) or
                                       f"the stages are {', '.join(known_stages)}")
        calls = self._part_calls()
        for name in names:
            if name != "input" and name not in calls:
                raise UnknownPartError(f"no graph node or part named {name!r}",
                                       hint=did_you_mean(name, calls) or
                                       "name a graph node (as `skdsl build --report` lists "
                                       "them), a container such as a block, or a stage")
        return names + stages

    def _part_calls(self) -> dict[str, tuple[str, int]]:
        """For every node and container: the module that computes it and which of that
        module's calls in a forward pass it is (a shared branch calls its twin's twice)."""
        if "_calls_by_part" not in self.__dict__:
            parts: dict[str, tuple[str, int]] = {}
            counts: Counter = Counter()
            for name in self.graph.nodes:
                if name == "input":
                    continue
                prefixes = name.split(".")
                for depth in range(1, len(prefixes) + 1):
                    part = ".".join(prefixes[:depth])
                    if part not in parts:
                        path = self._computed_by(part)
                        parts[part] = (path, counts[path])
                        counts[path] += 1
            self.__dict__["_calls_by_part"] = parts
        return self.__dict__["_calls_by_part"]

    def _computed_by(self, part: str) -> str:
        for sharer, shared in self._shared.items():
            if part == sharer or part.startswith(sharer + "."):
                return shared + part[len(sharer):]
        return part


def _recorder(by_call: dict[int, list[str]], found: dict, keep_copies: bool, total: int):
    """A forward hook that records the module's output on the calls `by_call` names."""
    calls = itertools.count()

    def hook(module, inputs, output):
        for name in by_call.get(next(calls), ()):
            found[name] = _copied(output) if keep_copies else output
        if len(found) == total:
            raise _AllFound

    return hook


def _copied(output):
    return tuple(map(_copied, output)) if isinstance(output, tuple) else output.clone()


class FeatureNetwork(_Container):
    """timm's `features_only` network: the stages of a `CompiledNetwork` up to the last one
    asked for (sharing its modules), whose `forward` gives the asked stages' outputs as a
    list; `feature_info` describes them. Made by `CompiledNetwork.as_features`."""

    def __init__(self, network: CompiledNetwork, out_indices: Iterable[int] | None = None):
        info = network.feature_info
        indices = list(range(len(info))) if out_indices is None else list(out_indices)
        bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int)
               or not -len(info) <= i < len(info)]
        if bad or not indices:
            raise ModelArgumentError(
                f"out_indices {tuple(indices)} do not index the network's {len(info)} feature "
                f"stages", hint=f"give indices from 0 to {len(info) - 1} into feature_info: "
                                f"{', '.join(entry['module'] for entry in info)}")
        picked = [info[i] for i in indices]
        stages = {entry["module"] for entry in picked}
        by_stage = {call.child: call for call in network._calls}
        last = max(network._calls.index(by_stage[stage]) for stage in stages)
        calls = network._calls[:last + 1]
        outputs = tuple(by_stage[entry["module"]].writes[0] for entry in picked)
        super().__init__("", calls, network._reads, outputs, network._inplace_sites,
                         f"{network.graph.graph.get('network', '')}, {len(picked)} outputs")
        self.graph = network.graph
        self.pretrained_cfg = network.pretrained_cfg
        self.feature_info = picked
        self._adopt({call.child: network._modules[call.child] for call in calls})
        self._inplace_sites.keep(outputs)  # a later stage must not overwrite an output

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(_run(self._modules, self._plan, (x,)))


def _classifier(graph) -> str | None:
    """The classifier: the fully connected layer that gives the network's output, written
    directly in its stage (`head.fc`); None where the network ends otherwise."""
    name, _ = graph.graph["output"]
    return name if graph.nodes[name]["op"] == "linear" and name.count(".") == 1 else None


def _feature_info(graph, stage_calls: list[Call]) -> list[dict]:
    """timm's feature_info for the stages given: name, channels and stride of each output."""
    reductions = _reductions(graph)
    info = []
    for call in stage_calls:
        if len(call.writes) != 1:
            continue
        name, port = call.writes[0]
        shape = graph.nodes[name]["out_shapes"][port]
        if len(shape) == 3:
            info.append({"module": call.child, "num_chs": shape[0],
                         "reduction": reductions[name]})
    return info


def _reductions(graph) -> dict[str, int]:
    """Each node's nominal stride from the input: the product of the strides on the most
    strided path to it (as timm reports it: 32 for a 7×7 map of a 224×224 image or of 299×299),
    divided by the factor of each upsampling on that path (Attention-92's mask branches)."""
    reductions = {}
    for name, node in graph.nodes.items():
        inherited = max((reductions[source] for source, _ in node["inputs"]), default=1)
        if node["op"] == "upsample":
            reductions[name] = _upsampled(inherited, node["in_shapes"][0], node["out_shapes"][0])
            continue
        stride = node.get("stride", 1) if node["op"] in ("conv2d", "max_pool", "avg_pool") else 1
        reductions[name] = inherited * (stride if isinstance(stride, int) else stride[0])
    return reductions


def _upsampled(reduction: int, before: tuple[int, ...], after: tuple[int, ...]) -> int:
    """The nominal stride after an upsampling from `before` to `after` (C×H×W): divided by the
    factor, which an `upsample to` a tensor of odd size (7 -> 14, or 28 -> 57) makes inexact."""
    factor = after[1] / before[1]
    return max(1, round(reduction / factor))


def _node_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The module that runs each graph node (a node of a sharing branch: its twin's)."""
    modules = dict(model.named_modules())
    found = {}
    for name, node in model.graph.nodes.items():
        path = node.get("tied_to") or name
        if name != "input" and path in modules:
            found[name] = modules[path]
    return found


def compile(network_or_graph: S.Network | nx.DiGraph, input_shape: tuple[int, ...] | None = None,
            *, inplace: bool = True, features_only: bool = False,
            out_indices: Iterable[int] | None = None,
            memory_budget: int | None = None) -> CompiledNetwork | FeatureNetwork:
    """The initialised torch module of a network (lowered here) or of an already lowered graph;
    `inplace=False` keeps every node's output intact (for hooks that keep them);
    `features_only` gives the stage outputs of `out_indices` instead (see `as_features`).
    Weights that would not fit `memory_budget` bytes (default: available memory) are refused
    before any is allocated (resources.guard_compile)."""
    if isinstance(network_or_graph, nx.DiGraph):
        graph = network_or_graph
        if input_shape is not None and tuple(input_shape) != tuple(graph.graph["input"]):
            raise ValueError(f"the graph was lowered for input {graph.graph['input']}, not "
                             f"{tuple(input_shape)}: lower the network again for a new input")
    else:
        graph = G.lower(network_or_graph, input_shape)
    if out_indices is not None and not features_only:
        raise ModelArgumentError("out_indices picks the outputs of a features_only network",
                                 hint="pass features_only=True with out_indices")
    guard_compile(graph, budget=memory_budget)
    model = CompiledNetwork(graph, inplace=inplace)
    initialise(model)
    return model.as_features(out_indices) if features_only else model


def initialise(model: nn.Module) -> None:
    """The paper's initialisation: He for convolutions, N(0, 0.01) for linear, BN to identity."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)


# -- in place ---------------------------------------------------------------------------------

# Ops whose output is a new tensor that their own backward does not read, so a consumer may
# overwrite it: conv, BN, fc and Select save their inputs, never their output; a sum of two or
# more tensors saves nothing; a product saves its operands; a concat saves nothing. (A one-input
# sum or concat, a split, a dropout or an identity can hand on a tensor that lives elsewhere,
# and ReLU, sigmoid or amax read their own output in backward: none of those qualify.)
_FRESH_OUTPUT = {"conv2d", "batchnorm", "linear", "select"}
_FRESH_IF_SEVERAL_INPUTS = {"add", "mul", "concat"}


def _runs_inplace(module: nn.Module) -> bool:
    return getattr(module, "inplace", False) is True


def _enable_inplace(graph, modules: dict[str, nn.Module]) -> dict[Ref, list[nn.Module]]:
    """Switch `inplace` on for activations and sums whose first input may be overwritten, and
    return them by the tensor they overwrite.

    That input must be read by this node alone (once), not be the network's output, and come
    fresh from its producer (`_FRESH_OUTPUT`), so that neither another node nor autograd sees
    the change. Containers pass tensors on as they are, so this holds across their borders.
    A module shared by tied nodes is switched on only if all of them qualify.
    """
    reads = Counter(tuple(ref) for node in graph.nodes.values() for ref in node["inputs"])
    output = tuple(graph.graph["output"])
    verdicts: dict[int, list[bool]] = {}
    candidates: list[tuple[Ref, nn.Module]] = []
    for name, node in graph.nodes.items():
        module = modules.get(name)
        if node["op"] not in ("act", "add") or not hasattr(module, "inplace"):
            continue
        ref = tuple(node["inputs"][0])
        source = graph.nodes[ref[0]]
        fresh = source["op"] in _FRESH_OUTPUT or (
            source["op"] in _FRESH_IF_SEVERAL_INPUTS and len(source["inputs"]) > 1)
        ok = (fresh and reads[ref] == 1 and ref != output
              and node["in_shapes"][0] == node["out_shapes"][0])
        verdicts.setdefault(id(module), []).append(ok)
        candidates.append((ref, module))
    sites: dict[Ref, list[nn.Module]] = {}
    for ref, module in candidates:
        if all(verdicts[id(module)]):
            module.inplace = True
            sites.setdefault(ref, []).append(module)
    return sites


# -- batch-norm folding -------------------------------------------------------------------------


def fuse_bn(model: CompiledNetwork) -> CompiledNetwork:
    """An inference copy of `model` (in eval mode) whose convolutions absorb the BNs after them.

    A BN node whose input is a convolution read by nothing else becomes a `FoldedBatchNorm`
    (an identity keeping the node's name); its convolution's weight is scaled by γ/√(σ²+ε) per
    output channel and gains the bias β − μ·γ/√(σ²+ε), computed in float64. Module names still
    equal graph nodes, and a FLOP counter sees the same multiply-adds (it counts no biases);
    the parameter count drops by one per folded channel (2C of BN become C of bias). The
    outputs equal the eval-mode model's to float rounding. `model` itself is left unchanged.
    """
    fused = copy.deepcopy(model).eval()
    graph = fused.graph
    modules = _node_modules(fused)
    uses = Counter(id(module) for module in modules.values())
    reads = Counter(source for node in graph.nodes.values() for source, _ in node["inputs"])
    for name, node in graph.nodes.items():
        if node["op"] != "batchnorm" or name not in modules:
            continue
        source = node["inputs"][0][0]
        conv, bn = modules.get(source), modules[name]
        foldable = (graph.nodes[source]["op"] == "conv2d" and reads[source] == 1
                    and uses[id(conv)] == 1 and uses[id(bn)] == 1
                    and isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None)
        if foldable:
            _fold(conv, bn)
            parent, _, leaf = name.rpartition(".")
            setattr(fused.get_submodule(parent), leaf, L.FoldedBatchNorm(source))
    return fused


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Scale `conv`'s weight and set its bias so that conv then BN (eval) is conv alone."""
    inverse_std = torch.rsqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inverse_std)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inverse_std)
    scale = gamma * inverse_std  # C_out
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    conv.weight.copy_(conv.weight.double() * scale.reshape(-1, 1, 1, 1))
    folded_bias = (bias - bn.running_mean.double()) * scale + beta
    if conv.bias is None:
        conv.bias = nn.Parameter(folded_bias.to(conv.weight.dtype))
    else:
        conv.bias.copy_(folded_bias)


__all__ = ["compile", "initialise", "fuse_bn", "CompiledNetwork", "FeatureNetwork", "Stage",
           "Block", "Layer", "Branch", "Step", "Plan", "MODULES", "ModelError",
           "UnknownPartError", "ModuleTreeError", "NoClassifierError", "ModelArgumentError"]
