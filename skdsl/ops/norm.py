"""Normalisation and activation: the `batchnorm`, `layernorm` and `act` ops, the `bn`, `ln` and
`act` keywords."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import (Lowering, Op, Option, Take, item_model, keyword, lowers, op, shared,
                   writes_rows)
from .fields import ACTIVATIONS, ActivationName, Layer


# -- what the user writes: the spec models of its keywords ------------------------------


@item_model
class BatchNorm(Layer):
    kind: Literal["bn"] = "bn"


@item_model
class LayerNorm(Layer):
    """LayerNorm over the channels of each pixel (timm's LayerNorm2d): `ln`."""

    kind: Literal["ln"] = "ln"
    eps: float = Field(1e-6, gt=0, le=1, description="Added to the variance; timm's 1e-6.")


@item_model
class Activation(Layer):
    kind: Literal["act"] = "act"
    function: ActivationName


# -- the graph op --------------------------------------------------------------------------


@op("batchnorm", spec_kinds=("bn",), spatial="bn", counted_by="bn", fresh_output="always",
    torch_module="nn.BatchNorm2d", row="BN")
class BatchNormOp(Op):
    """Batch normalisation: γ and β per channel are parameters; the running statistics are
    buffers. At inference it is y = γ'·x + β', one multiply-add per element."""

    channels: int


    def cost(self, node) -> tuple[int, int, int]:
        return 2 * self.channels, 0, 0

    def buffers(self) -> tuple[int, int]:
        return 2 * self.channels, 1  # running mean and variance, num_batches_tracked

    @classmethod
    def from_item(cls, item, shape, path) -> "BatchNormOp":
        return cls(shape[0])


@op("layernorm", spec_kinds=("ln",), counted_by="bn", fresh_output="always",
    torch_module="layers.ChannelLayerNorm", row="LN")
class LayerNormOp(Op):
    """Layer normalisation across the channels of each pixel (GCNet's context MLP): γ and β per
    channel, no buffers; counted with the norms under the `bn` convention, one operation per
    element (it cannot fold into a conv as BN does)."""

    channels: int
    eps: float

    def cost(self, node) -> tuple[int, int, int]:
        return 2 * self.channels, 0, 0

    @classmethod
    def from_item(cls, item, shape, path) -> "LayerNormOp":
        return cls(shape[0], item.eps)

    def module(self):
        from ..nn import layers

        return layers.ChannelLayerNorm(self.channels, eps=self.eps)


@op("act", counted_by="act", torch_module="layers.make_activation", label="act {function}")
class ActivationOp(Op):
    """An activation function (one of spec.ACTIVATIONS), elementwise."""

    function: str


# -- its lowering: spec item -> graph nodes (core/graph.py calls it) --------------------


@lowers("act")
def lower_activation(lowering: Lowering, item: Activation, x, scope, env):
    path = f"{scope.path}.{item.name}"
    if item.function == "none":
        return x
    return lowering.emit(path, shared("act", item.function), [x], [lowering.shape(x)], item.span(),
                         path, scope)


BN = keyword("bn", "bn", model=BatchNorm, example="bn")
LN = keyword("ln", "ln", model=LayerNorm, example="ln[eps=1e-5]",
             options=(Option("eps", ("eps",), "number", "eps"),))
ACT = keyword("act", "act", usage="write it as: act relu", model=Activation,
              example="act relu6",
              takes=(Take("function", "an activation such as relu", "word", noun="activation",
                          choices=tuple(ACTIVATIONS)),))


@writes_rows("act")
def activation_rows(item, in_block: bool) -> list[str]:
    return [] if item.function == "none" else [item.function]
