"""Compilation: a lowered graph -> a torch module with one leaf module per graph node.

Every node `conv3.block2.sk.branch1.conv` becomes the leaf module at that dotted path, under
plain `nn.Module` containers, so module names, graph nodes, report rows and checkpoint keys
agree. The root `CompiledNetwork` runs a schedule precomputed from the graph: the nodes in
insertion order (which is topological), reading and writing numbered slots, and dropping every
tensor after its last use so the forward pass holds only live activations.

Two transforms keep those names and the multiply-adds (docs/performance.md measures both):

* in place: an activation or a residual sum whose input is read by nothing else, and that
  autograd saved nowhere (it comes fresh from a conv, BN, fc, sum, product, concat or Select),
  overwrites that input, as torchvision's `relu(inplace=True)` and `out += identity` do;
* `fuse_bn(model)`: an inference copy whose convolutions absorb the batch norms after them.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Callable, Iterable, NamedTuple

import networkx as nx
import torch
from torch import Tensor, nn

from . import graph as G
from . import layers as L
from . import spec as S


def _conv2d(node: dict) -> nn.Module:
    # A dilated convolution may run as an ordinary one on polyphase sub-grids (layers.POLYPHASE).
    conv_class = L.DilatedConv2d if node["dilation"] > 1 else nn.Conv2d
    return conv_class(node["in_channels"], node["out_channels"], node["kernel"],
                      stride=node["stride"], padding=node["padding"], dilation=node["dilation"],
                      groups=node["groups"], bias=node["bias"])


def _pool(pool_class: type[nn.Module]) -> Callable[[dict], nn.Module]:
    return lambda node: pool_class(node["kernel"], stride=node["stride"],
                                   padding=node["padding"], ceil_mode=node["ceil_mode"])


# The module for each graph op, built from the node's attributes.
MODULES: dict[str, Callable[[dict], nn.Module]] = {
    "conv2d": _conv2d,
    "batchnorm": lambda node: nn.BatchNorm2d(node["channels"]),
    "act": lambda node: L.make_activation(node["function"]),
    "max_pool": _pool(nn.MaxPool2d),
    "avg_pool": _pool(nn.AvgPool2d),
    "global_pool": lambda node: L.GlobalPool(node["mode"]),
    "channel_pool": lambda node: L.ChannelPool(node["mode"]),
    "linear": lambda node: L.FlattenLinear(node["in_features"], node["out_features"],
                                           bias=node["bias"]),
    "dropout": lambda node: nn.Dropout(node["p"]),
    "add": lambda node: L.Add(),
    "mul": lambda node: L.Multiply(),
    "concat": lambda node: L.Concat(),
    "split": lambda node: L.ChannelSplit(node["sizes"]),
    "shuffle": lambda node: L.ChannelShuffle(node["groups"]),
    "select": lambda node: L.Select(node["branches"], node["channels"]),
}

class Step(NamedTuple):
    """One node of the schedule: run `module` on the `inputs` slots, write the `outputs` slots."""

    name: str
    module: nn.Module
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    frees: tuple[int, ...]  # slots whose last use is this step, emptied after it


class CompiledNetwork(nn.Module):
    """A network compiled from its graph; `forward` runs the precomputed schedule.

    With `inplace` (the default), activations and residual sums overwrite inputs that nothing
    else reads (see `_enable_inplace`); a forward hook that keeps such an input must clone it.
    """

    def __init__(self, graph: nx.DiGraph, inplace: bool = True):
        super().__init__()
        self.graph = graph  # not a module, so not a submodule
        modules = {name: _build(name, node) for name, node in graph.nodes.items()
                   if node["op"] != "input" and not node.get("tied_to")}
        for name, module in modules.items():
            _register(self, name, module)
        # A branch that shares another's weights runs the other's modules (registered once).
        modules.update({name: modules[node["tied_to"]] for name, node in graph.nodes.items()
                        if node.get("tied_to")})
        self._steps, self._slot_count, self._output_slot = _schedule(graph, modules)
        if inplace:
            _enable_inplace(graph, self._steps, self._output_slot)

    def forward(self, x: Tensor) -> Tensor:
        slots: list[Tensor | None] = [None] * self._slot_count
        slots[0] = x
        for step in self._steps:
            self._run(step, slots)
            for slot in step.frees:
                slots[slot] = None
        return slots[self._output_slot]

    def features(self, x: Tensor, names: Iterable[str]) -> dict[str, Tensor | tuple[Tensor, ...]]:
        """The outputs of the named nodes for input `x` (a tuple for a split), in `names` order."""
        names = list(names)
        unknown = [name for name in names if name not in self.graph]
        if unknown:
            raise KeyError(f"no graph node named {', '.join(map(repr, unknown))}")
        found: dict[str, Tensor | tuple[Tensor, ...]] = {"input": x}
        slots: list[Tensor | None] = [None] * self._slot_count
        slots[0] = x
        # A later step may compute into an output in place (or into a tensor an identity such
        # as a folded BN handed on): with any in-place step, keep copies.
        copy_outputs = any(_runs_inplace(step.module) for step in self._steps)
        for step in self._steps:
            if all(name in found for name in names):
                break
            self._run(step, slots)
            if step.name in names:
                outputs = tuple(slots[slot].clone() if copy_outputs else slots[slot]
                                for slot in step.outputs)
                found[step.name] = outputs if len(outputs) > 1 else outputs[0]
            for slot in step.frees:
                slots[slot] = None
        return {name: found[name] for name in names}

    @staticmethod
    def _run(step: Step, slots: list[Tensor | None]) -> None:
        result = step.module(*[slots[slot] for slot in step.inputs])
        if len(step.outputs) == 1:
            slots[step.outputs[0]] = result
        else:
            for slot, tensor in zip(step.outputs, result):
                slots[slot] = tensor


def compile(network_or_graph: S.Network | nx.DiGraph,
            input_shape: tuple[int, ...] | None = None, *, inplace: bool = True) -> CompiledNetwork:
    """The initialised torch module of a network (lowered here) or of an already lowered graph;
    `inplace=False` keeps every node's output intact (for hooks that keep them)."""
    if isinstance(network_or_graph, nx.DiGraph):
        graph = network_or_graph
        if input_shape is not None and tuple(input_shape) != tuple(graph.graph["input"]):
            raise ValueError(f"the graph was lowered for input {graph.graph['input']}, not "
                             f"{tuple(input_shape)}: lower the network again for a new input")
    else:
        graph = G.lower(network_or_graph, input_shape)
    model = CompiledNetwork(graph, inplace=inplace)
    initialise(model)
    return model


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


def _build(name: str, node: dict) -> nn.Module:
    if node["op"] not in MODULES:
        raise ValueError(f"node {name}: no module for op '{node['op']}'")
    return MODULES[node["op"]](node)


def _register(root: nn.Module, name: str, module: nn.Module) -> None:
    """Register `module` at the dotted path `name`, creating plain containers on the way."""
    *parents, leaf = name.split(".")
    owner = root
    for depth, part in enumerate(parents):
        child = owner._modules.get(part)
        if child is None:
            child = nn.Module()
            _add_module(owner, part, child, name)
        elif not _is_container(child):
            raise ValueError(f"node {name} is inside node {'.'.join(parents[:depth + 1])}: "
                             f"rename one of them")
        owner = child
    if leaf in owner._modules:
        raise ValueError(f"node {name} is also the container of other nodes: rename one of them")
    _add_module(owner, leaf, module, name)


def _add_module(owner: nn.Module, part: str, module: nn.Module, name: str) -> None:
    # nn.Module would refuse with a bare KeyError; say which node and why.
    if hasattr(owner, part):
        what = "the compiled network" if isinstance(owner, CompiledNetwork) else "torch.nn.Module"
        raise ValueError(f"node {name}: '{part}' is an attribute of {what}, so it cannot name "
                         f"a module; rename it")
    owner.add_module(part, module)


def _is_container(module: nn.Module) -> bool:
    return type(module) is nn.Module


def _schedule(graph: nx.DiGraph, modules: dict[str, nn.Module]):
    """The steps, the number of slots and the output's slot; slot 0 holds the input."""
    slots: dict[G.Ref, int] = {("input", 0): 0}
    planned = []
    for name, node in graph.nodes.items():
        if node["op"] == "input":
            continue
        missing = [ref for ref in node["inputs"] if tuple(ref) not in slots]
        if missing:
            raise ValueError(f"node {name} reads {missing} before they are computed: "
                             f"the graph's nodes are not in topological order")
        inputs = tuple(slots[tuple(ref)] for ref in node["inputs"])
        outputs = tuple(range(len(slots), len(slots) + len(node["out_shapes"])))
        slots.update({(name, port): slot for port, slot in enumerate(outputs)})
        planned.append((name, inputs, outputs))
    output_slot = slots[tuple(graph.graph["output"])]
    frees = _frees(planned, output_slot)
    steps = [Step(name, modules[name], inputs, outputs, frees[position])
             for position, (name, inputs, outputs) in enumerate(planned)]
    return steps, len(slots), output_slot


def _frees(planned: list, output_slot: int) -> list[tuple[int, ...]]:
    """For each step, the slots to empty after it: those it reads last, or writes but none read."""
    last_use: dict[int, int] = {}
    for position, (_, inputs, outputs) in enumerate(planned):
        for slot in (*outputs, *inputs):
            last_use[slot] = position
    last_use.pop(output_slot, None)
    frees: list[list[int]] = [[] for _ in planned]
    for slot, position in last_use.items():
        frees[position].append(slot)
    return [tuple(sorted(slots)) for slots in frees]


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


def _enable_inplace(graph, steps: list[Step], output_slot: int) -> None:
    """Switch `inplace` on for activations and sums whose first input may be overwritten.

    That input must be read by this step alone (once), not be the network's output, and come
    fresh from its producer (`_FRESH_OUTPUT`), so that neither another node nor autograd sees
    the change. A module shared by tied nodes is switched on only if all of them qualify.
    """
    reads = Counter(slot for step in steps for slot in step.inputs)
    producer = {slot: step.name for step in steps for slot in step.outputs}
    verdicts: dict[int, list[bool]] = {}
    for step in steps:
        node = graph.nodes[step.name]
        if node["op"] not in ("act", "add") or not hasattr(step.module, "inplace"):
            continue
        slot = step.inputs[0]
        source = graph.nodes[producer[slot]] if slot in producer else None  # slot 0: the input
        fresh = source is not None and (
            source["op"] in _FRESH_OUTPUT
            or (source["op"] in _FRESH_IF_SEVERAL_INPUTS and len(source["inputs"]) > 1))
        ok = (fresh and reads[slot] == 1 and slot != output_slot
              and node["in_shapes"][0] == node["out_shapes"][0])
        verdicts.setdefault(id(step.module), []).append(ok)
    for step in steps:
        if all(verdicts.get(id(step.module), [False])):
            step.module.inplace = True


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
    modules = {step.name: step.module for step in fused._steps}
    uses = Counter(id(module) for module in modules.values())
    reads = Counter(source for node in fused.graph.nodes.values() for source, _ in node["inputs"])
    replaced: dict[str, nn.Module] = {}
    for name, node in fused.graph.nodes.items():
        if node["op"] != "batchnorm" or name not in modules:
            continue
        source = node["inputs"][0][0]
        conv, bn = modules.get(source), modules[name]
        foldable = (fused.graph.nodes[source]["op"] == "conv2d" and reads[source] == 1
                    and uses[id(conv)] == 1 and uses[id(bn)] == 1
                    and isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None)
        if foldable:
            _fold(conv, bn)
            replaced[name] = L.FoldedBatchNorm(source)
    for name, module in replaced.items():
        parent, _, leaf = name.rpartition(".")
        setattr(fused.get_submodule(parent), leaf, module)  # "" is the root itself
    fused._steps = [step._replace(module=replaced.get(step.name, step.module))
                    for step in fused._steps]
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


__all__ = ["compile", "initialise", "fuse_bn", "CompiledNetwork", "Step", "MODULES"]
