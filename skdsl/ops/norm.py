"""Normalisation and activation: the `batchnorm` and `act` ops, the `bn` and `act` keywords."""

from __future__ import annotations

from typing import Literal

from .base import Lowering, Op, Take, item_model, keyword, lowers, op, shared, writes_rows
from .fields import ACTIVATIONS, ActivationName, Layer


# -- what the user writes: the spec models of its keywords ------------------------------


@item_model
class BatchNorm(Layer):
    kind: Literal["bn"] = "bn"


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
ACT = keyword("act", "act", usage="write it as: act relu", model=Activation,
              example="act relu6",
              takes=(Take("function", "an activation such as relu", "word", noun="activation",
                          choices=tuple(ACTIVATIONS)),))


@writes_rows("act")
def activation_rows(item, in_block: bool) -> list[str]:
    return [] if item.function == "none" else [item.function]
