"""Fully connected and dropout: the `linear` and `dropout` ops, the `fc` and `dropout` keywords."""

from __future__ import annotations

from dataclasses import dataclass

from .. import spec as S
from .base import Op, Take, keyword, op
from .conv import BIAS
from .shapes import elements


@op("linear", spec_kinds=("fc",), field_rule="global", torch_module="layers.FlattenLinear",
    label="linear {in_features}→{out_features}", row="fc, {out_features}")
class Linear(Op):
    """A fully connected layer on the flattened input: in · out weights and multiply-adds."""

    in_features: int
    out_features: int
    bias: bool

    def cost(self, node) -> tuple[int, int, int]:
        mult_adds = self.in_features * self.out_features
        return mult_adds + (self.out_features if self.bias else 0), mult_adds, self.out_features

    @classmethod
    def from_item(cls, item, shape, path) -> "Linear":
        return cls(elements(shape), item.out_features, item.bias)

    def output(self, shape):
        return (self.out_features,)


@op("dropout", spec_kinds=("dropout",), torch_module="nn.Dropout", label="dropout {p:g}",
    row="dropout, p={p:g}")
class Dropout(Op):
    p: float


FC = keyword("fc", "fc", usage="write it as: fc 1000", model=S.Linear, options=(BIAS,),
             takes=(Take("out_features", "its output features", "positive"),))
DROPOUT = keyword("dropout", "dropout", usage="write it as: dropout 0.2", model=S.Dropout,
                  takes=(Take("p", "a probability such as 0.2", "probability",
                              noun="dropout probability"),))
