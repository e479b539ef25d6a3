"""timm's model API on a compiled network (docs/model-api.md): `num_classes`, `num_features`,
`pretrained_cfg`/`default_cfg`, `get_classifier`, `reset_classifier`, `forward_features` and
`forward_head`, read from the graph's classifier: the fc that gives the network's output,
written directly in its stage (`head.fc`).
"""

from __future__ import annotations

import itertools

from torch import Tensor, nn

from . import layers as L
from .tree import (ModelArgumentError, ModuleTreeError, NoClassifierError, Plan, _Container,
                   _plan, _run)


class TimmModelAPI:
    """The timm surface of `CompiledNetwork` (a mixin: the module tree is the network's)."""

    @property
    def num_classes(self) -> int:
        """The classifier's output count; 0 where there is none (or it was reset to 0)."""
        if self._classifier is None:
            return 0
        return getattr(self.get_classifier(), "out_features", 0)

    @property
    def num_features(self) -> int:
        """The width of the pre-logits features: the classifier's input (else the output's)."""
        node = self.graph.nodes[self._classifier or self.graph.output[0]]
        return node.attrs.in_features if self._classifier else node.out_shapes[0][0]

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
            layer = L.FlattenLinear(node.attrs.in_features, num_classes, bias=node.attrs.bias)
            L.initialise(layer)
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

    def _classifier_owner(self) -> tuple[nn.Module, str]:
        if self._classifier is None:
            output = self.graph.output[0]
            raise NoClassifierError(
                f"network '{self.graph.name}' has no classifier: its output "
                f"{output} is a {self.graph.nodes[output].op}, not a fully connected layer",
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


def _classifier(graph) -> str | None:
    """The classifier: the fully connected layer that gives the network's output, written
    directly in its stage (`head.fc`); None where the network ends otherwise."""
    name, _ = graph.output
    return name if graph.nodes[name].op == "linear" and name.count(".") == 1 else None
