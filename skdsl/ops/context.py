"""GCNet's context modelling: the `attention_pool` op and the `attnpool` keyword.

Global Context blocks (Cao et al. 2019; timm's GlobalContext, the gc and gca attention) pool a
feature map with learnt weights instead of averaging it: a 1×1 conv C→1 gives one logit per
position, a softmax over the H·W positions turns them into weights, and each channel's context is
its pixels' weighted sum. `attnpool LOGITS, X` is that pooling, C×H×W -> C×1×1; the conv and what
follows the context (an MLP with LayerNorm, a gate or an add) are ordinary layers
(std/attention.sk's global_context).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..base.errors import SpecError
from .base import Lowering, Op, Reading, item_model, keyword, lowers, op, writes_rows
from .fields import Layer
from .shapes import fmt


@item_model
class AttentionPool(Layer):
    """Pool X with a softmax over the positions of LOGITS: `attnpool logits, x`."""

    kind: Literal["attnpool"] = "attnpool"
    inputs: list[str] = Field(min_length=2, max_length=2,
                              description="The 1×H×W logits, then the C×H×W map they pool.")


@op("attention_pool", counted_by="softmax", field_rule="global", fresh_output="always",
    torch_module="layers.AttentionPool", label="attention pool")
class AttentionPoolOp(Op):
    """One multiply-add per input element (the weighted sum, a matmul that torch's counter
    counts); the softmax over the H·W logits counts under the `softmax` convention."""

    channels: int
    positions: int  # H·W

    def cost(self, node) -> tuple[int, int, int]:
        return 0, self.channels * self.positions, self.channels

    def extra(self, node) -> int:
        return self.positions

    def reduction(self, incoming: int, node) -> int:
        """One value per channel for the whole map, as a global pool gives."""
        return incoming * node.in_shapes[1][1]

    def module(self):
        from ..nn import layers

        return layers.AttentionPool()


@lowers("attnpool")
def lower_attention_pool(lowering: Lowering, item: AttentionPool, x, scope, env):
    path = f"{scope.path}.{item.name}"
    logits, pooled = (lowering.tensor(env, name, item, f"inputs.{i}")
                      for i, name in enumerate(item.inputs))
    channels, height, width = lowering.feature_map(pooled, item, "attnpool", path)
    shape = lowering.shape(logits)
    if shape != (1, height, width):
        raise SpecError(f"attnpool weighs the {height}×{width} positions of "
                        f"{item.inputs[1]} ({fmt((channels, height, width))}) by one map of "
                        f"logits of 1×{height}×{width}, got {fmt(shape)} at {path}",
                        item.span("inputs.0"), code="SK303",
                        hint=f"make the logits with a conv 1x1, 1 on {item.inputs[1]} (bn no, "
                        "act none)")
    return lowering.emit(path, AttentionPoolOp(channels, height * width), [logits, pooled],
                         [(channels, 1, 1)], item.span(), path, scope)


ATTNPOOL = keyword("attnpool", "attnpool", usage="write it as: attnpool logits, x",
                   model=AttentionPool, reading=Reading.TENSOR_NAMES,
                   example="branch logits: conv 1x1, 1, bias yes, bn no, act none\n"
                           "attnpool logits, input")


@writes_rows("attnpool")
def attention_pool_rows(item, in_block: bool) -> list[str]:
    return [f"attention pool({', '.join(item.inputs)})"]
