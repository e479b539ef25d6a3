"""Fully connected and dropout: the `linear` and `dropout` ops, the `fc` and `dropout` keywords."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Op, Take, item_model, keyword, op
from .conv import BIAS
from .fields import Layer, PositiveInt
from .shapes import elements


# -- what the user writes: the spec models of its keywords ------------------------------


@item_model
class Linear(Layer):
    """Fully connected layer on the flattened input: `fc 1000`."""

    kind: Literal["fc"] = "fc"
    out_features: PositiveInt
    bias: bool = True


@item_model
class Dropout(Layer):
    kind: Literal["dropout"] = "dropout"
    p: float = Field(ge=0.0, lt=1.0, description="Probability of zeroing an element.")


# -- the graph op --------------------------------------------------------------------------


@op("linear", spec_kinds=("fc",), field_rule="global", fresh_output="always",
    torch_module="layers.FlattenLinear", label="linear {in_features}→{out_features}",
    row="fc, {out_features}")
class LinearOp(Op):
    """A fully connected layer on the flattened input: in · out weights and multiply-adds."""

    in_features: int
    out_features: int
    bias: bool

    def cost(self, node) -> tuple[int, int, int]:
        mult_adds = self.in_features * self.out_features
        return mult_adds + (self.out_features if self.bias else 0), mult_adds, self.out_features

    @classmethod
    def from_item(cls, item, shape, path) -> "LinearOp":
        return cls(elements(shape), item.out_features, item.bias)

    def output(self, shape):
        return (self.out_features,)


@op("dropout", spec_kinds=("dropout",), torch_module="nn.Dropout", label="dropout {p:g}",
    row="dropout, p={p:g}")
class DropoutOp(Op):
    p: float


FC = keyword("fc", "fc", usage="write it as: fc 1000", model=Linear, options=(BIAS,),
             example="fc 32",
             takes=(Take("out_features", "its output features", "positive"),))
DROPOUT = keyword("dropout", "dropout", usage="write it as: dropout 0.2", model=Dropout,
                  example="dropout 0.2",
                  takes=(Take("p", "a probability such as 0.2", "probability",
                              noun="dropout probability"),))
