"""Normalisation and activation: the `batchnorm` and `act` ops, the `bn` and `act` keywords."""

from __future__ import annotations

from typing import Literal

from .fields import ActivationName, ACTIVATIONS, Layer
from .base import item_model, keyword, Op, op, Take


# -- what the user writes: the spec models of its keywords ------------------------------


@item_model
class BatchNorm(Layer):
    kind: Literal["bn"] = "bn"


@item_model
class Activation(Layer):
    kind: Literal["act"] = "act"
    function: ActivationName


# -- the graph op --------------------------------------------------------------------------


@op("batchnorm", spec_kinds=("bn",), spatial="bn", counted_by="bn", torch_module="nn.BatchNorm2d",
    row="BN")
class BatchNormOp(Op):
    """Batch normalisation: γ and β per channel are parameters; the running statistics are
    buffers. At inference it is y = γ'·x + β', one multiply-add per element."""

    channels: int


    def cost(self, node) -> tuple[int, int, int]:
        return 2 * self.channels, 0, 0

    @classmethod
    def from_item(cls, item, shape, path) -> "BatchNormOp":
        return cls(shape[0])


@op("act", counted_by="act", torch_module="layers.make_activation", label="act {function}")
class ActivationOp(Op):
    """An activation function (one of spec.ACTIVATIONS), elementwise."""

    function: str


BN = keyword("bn", "bn", model=BatchNorm)
ACT = keyword("act", "act", usage="write it as: act relu", model=Activation,
              takes=(Take("function", "an activation such as relu", "word", noun="activation",
                          choices=tuple(ACTIVATIONS)),))


def activation_rows(item, in_block: bool) -> list[str]:
    return [] if item.function == "none" else [item.function]
