"""Attention: SK's `select` op, and the `sk`, `sum` and `se` keywords. The SK unit and SE are
composites (spec.py holds their meaning, Eq. 4 among it; graph.py lowers them to ops)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import spec as S
from .base import Op, Option, keyword, op
from .conv import BIAS, DILATION, GROUPS, STRIDE
from .shapes import elements


@op("select", counted_by="softmax", torch_module="layers.Select", label="select M={branches}")
class Select(Op):
    """SK's Select (Eq. 5-6): a softmax over M branches per channel, then their weighted sum;
    M·C for the softmax and M·C·H·W for the sum under the `softmax` convention."""

    branches: int
    channels: int

    def extra(self, node) -> int:
        weights = self.branches * self.channels
        return weights + weights * elements(node.out_shapes[0][1:])



BRANCH_COUNT = Option("branch_count", ("M",), "positive", "M (branches)")
REDUCTION = Option("reduction_ratio", ("r",), "positive", "r (reduction ratio)")
SK_OPTIONS = (
    BRANCH_COUNT, GROUPS, REDUCTION,
    Option("min_attention_width", ("L",), "positive", "L (the least attention width)"),
    Option("attention_width_override", ("d",), "positive", "d (attention width)"), STRIDE,
)
SUM_OPTIONS = (BRANCH_COUNT, GROUPS, STRIDE)
BRANCH_OPTIONS = (GROUPS, DILATION)
SE_OPTIONS = (REDUCTION, BIAS, Option("min_width", ("min",), "positive",
                                      "min (the least squeeze width)"),
              Option("gate", ("gate",), "word", "gate", S.GATES))

SK = keyword("sk", "sk", usage="write it as: SK[M=2, G=32, r=16], 128, stride 2",
             options=SK_OPTIONS, brackets=("M", "G", "r", "L"), builder="selective",
             branches=True)
SUM = keyword("sum", "sk", usage="write it as: SUM[M=2, G=32], 128", options=SUM_OPTIONS,
              brackets=("M", "G"), builder="selective", branches=True)
SE = keyword("se", "se", options=SE_OPTIONS, brackets=("r",), model=S.SqueezeExcite)
