"""Feature extraction from a compiled network: `features` (the outputs of any named parts,
recorded by forward hooks that stop the pass once all are seen), `feature_info` (timm's record
of the stage outputs: channels and nominal stride, each op's `reduction` rule along the most
strided path) and `as_features` (timm's `features_only` network).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Iterable

from torch import Tensor, nn

from ..base.errors import did_you_mean
from .tree import Call, ModelArgumentError, UnknownPartError, _Container, _run, _runs_inplace


class FeatureExtraction:
    """The feature side of `CompiledNetwork` (a mixin: the module tree is the network's)."""

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


class _AllFound(Exception):
    """Raised by `features`' hooks to stop the forward pass once every output is recorded."""


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

    def __init__(self, network: FeatureExtraction, out_indices: Iterable[int] | None = None):
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
                         f"{network.graph.name}, {len(picked)} outputs")
        self.graph = network.graph
        self.pretrained_cfg = network.pretrained_cfg
        self.feature_info = picked
        self._adopt({call.child: network._modules[call.child] for call in calls})
        self._inplace_sites.keep(outputs)  # a later stage must not overwrite an output

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(_run(self._modules, self._plan, (x,)))


def _feature_info(graph, stage_calls: list[Call]) -> list[dict]:
    """timm's feature_info for the stages given: name, channels and stride of each output."""
    reductions = _reductions(graph)
    info = []
    for call in stage_calls:
        if len(call.writes) != 1:
            continue
        name, port = call.writes[0]
        shape = graph.nodes[name].out_shapes[port]
        if len(shape) == 3:
            info.append({"module": call.child, "num_chs": shape[0],
                         "reduction": reductions[name]})
    return info


def _reductions(graph) -> dict[str, int]:
    """Each node's nominal stride from the input, as timm reports it (32 for a 7×7 map of a
    224×224 image or of 299×299): each op's rule (ops.Op.reduction) applied along the most
    strided path to it. A gate that broadcasts (SE's and SK's 1×1 attention, a 1×H×W spatial
    map) is not on that path: the inputs of the output's own size are, where there are any."""
    reductions = {}
    for name, node in graph.nodes.items():
        size = node.out_shapes[0][1:]
        inputs = [(reductions[source], shape[1:] == size)
                  for (source, _), shape in zip(node.inputs, node.in_shapes)]
        full = [reduction for reduction, same_size in inputs if same_size]
        inherited = max(full or [reduction for reduction, _ in inputs], default=1)
        reductions[name] = node.attrs.reduction(inherited, node)
    return reductions
