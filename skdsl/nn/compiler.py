"""Compilation: a lowered graph -> the torch module that runs it, exactly as counted.

`CompiledNetwork` is three parts, each in its own module: the executed module tree (tree.py:
containers running precomputed schedules, named as the graph's nodes), timm's model API
(model_api.py) and feature extraction (features.py). This module builds the network, initialises
it as the paper does, and holds the two transforms that keep its names and multiply-adds
(docs/performance.md measures both):

* in place: an activation or a residual sum whose input is read by nothing else, and that
  autograd saved nowhere (its producer's `fresh_output`, skdsl.ops), overwrites that input, as
  torchvision's `relu(inplace=True)` and `out += identity` do; a full backward hook on a
  container switches it off around that container (torch forbids it there);
* `fuse_bn(model)`: an inference copy whose convolutions absorb the batch norms after them.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Iterable

import torch
from torch import Tensor, nn

from ..core import graph as G
from ..core import spec as S
from ..core.resources import guard_compile
from . import layers as L
from .features import FeatureExtraction, FeatureNetwork, _feature_info
from .model_api import TimmModelAPI, _classifier
# The tree's parts, as the compiler's public surface (tests and users read them here).
from .tree import (MODULES, Block, Branch, Layer, ModelArgumentError, ModelError,
                   ModuleTreeError, NoClassifierError, Plan, Ref, Stage, Step, UnknownPartError,
                   _children, _Container, _Lowered, _plan, _run, _shapes_text)


# -- the network ----------------------------------------------------------------------------------

class CompiledNetwork(FeatureExtraction, TimmModelAPI, _Container):
    """A network compiled from its graph; `forward` runs its stages (see the module docstring).

    With `inplace` (the default), activations and residual sums overwrite inputs that nothing
    else reads (see `_enable_inplace`); a forward hook that keeps such an input must clone it.
    `pretrained_cfg` (also `default_cfg`) is timm's record of how pretrained weights want their
    input (size, mean and std, crop, interpolation): None until a registry sets it.
    """

    def __init__(self, graph: G.LoweredGraph, inplace: bool = True):
        lowered = _Lowered(graph)
        calls, stages = _children(lowered, "", list(lowered.nodes))
        output = (lowered.output,)
        super().__init__("", calls, (("input", 0),), output, lowered.sites,
                         f"{graph.name}, {_shapes_text(graph, output)}")
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

def _node_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The module that runs each graph node (a node of a sharing branch: its twin's)."""
    modules = dict(model.named_modules())
    found = {}
    for name, node in model.graph.nodes.items():
        path = node.tied_to or name
        if name != "input" and path in modules:
            found[name] = modules[path]
    return found


def compile(network_or_graph: S.Network | G.LoweredGraph, input_shape: tuple[int, ...] | None = None,
            *, inplace: bool = True, features_only: bool = False,
            out_indices: Iterable[int] | None = None,
            memory_budget: int | None = None) -> CompiledNetwork | FeatureNetwork:
    """The initialised torch module of a network (lowered here) or of an already lowered graph
    (a `LoweredGraph`, or the networkx export of `skdsl.lower`, read back into one);
    `inplace=False` keeps every node's output intact (for hooks that keep them);
    `features_only` gives the stage outputs of `out_indices` instead (see `as_features`).
    Weights that would not fit `memory_budget` bytes (default: available memory) are refused
    before any is allocated (resources.guard_compile)."""
    if isinstance(network_or_graph, S.Network):
        graph = G.lower_table(network_or_graph, input_shape)
    else:
        graph = G.as_table(network_or_graph)
        if input_shape is not None and tuple(input_shape) != tuple(graph.input_shape):
            raise ValueError(f"the graph was lowered for input {graph.input_shape}, not "
                             f"{tuple(input_shape)}: lower the network again for a new input")
    if out_indices is not None and not features_only:
        raise ModelArgumentError("out_indices picks the outputs of a features_only network",
                                 hint="pass features_only=True with out_indices")
    guard_compile(graph, budget=memory_budget)
    model = CompiledNetwork(graph, inplace=inplace)
    L.initialise(model)
    return model.as_features(out_indices) if features_only else model


# -- in place ---------------------------------------------------------------------------------

def _enable_inplace(graph, modules: dict[str, nn.Module]) -> dict[Ref, list[nn.Module]]:
    """Switch `inplace` on for activations and sums whose first input may be overwritten, and
    return them by the tensor they overwrite.

    That input must be read by this node alone (once), not be the network's output, and come
    fresh from its producer (ops.Op.fresh_output), so that neither another node nor autograd sees
    the change. Containers pass tensors on as they are, so this holds across their borders.
    A module shared by tied nodes is switched on only if all of them qualify.
    """
    reads = Counter(tuple(ref) for node in graph.nodes.values() for ref in node.inputs)
    output = graph.output
    verdicts: dict[int, list[bool]] = {}
    candidates: list[tuple[Ref, nn.Module]] = []
    for name, node in graph.nodes.items():
        module = modules.get(name)
        if node.op not in ("act", "add") or not hasattr(module, "inplace"):
            continue
        ref = tuple(node.inputs[0])
        source = graph.nodes[ref[0]]
        fresh = source.attrs.output_is_fresh(len(source.inputs))
        ok = (fresh and reads[ref] == 1 and ref != output
              and node.in_shapes[0] == node.out_shapes[0])
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
    reads = Counter(source for node in graph.nodes.values() for source, _ in node.inputs)
    for name, node in graph.nodes.items():
        if node.op != "batchnorm" or name not in modules:
            continue
        source = node.inputs[0][0]
        conv, bn = modules.get(source), modules[name]
        foldable = (graph.nodes[source].op == "conv2d" and reads[source] == 1
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


__all__ = ["compile", "fuse_bn", "CompiledNetwork", "FeatureNetwork", "Stage",
           "Block", "Layer", "Branch", "Step", "Plan", "MODULES", "ModelError",
           "UnknownPartError", "ModuleTreeError", "NoClassifierError", "ModelArgumentError"]
