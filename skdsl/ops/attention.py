"""Attention: SK's `select` op, the SE unit (its spec model and its lowering to a pool, two 1×1
convs and a gate), and the `sk`, `sum`, `select` and `se` keywords. The SK unit is a composite
(core/spec.py holds its meaning, Eq. 4 among it; core/graph.py lowers it to ops); `select`
writes the SK unit's last op by hand, so an SK built from listed branches, a pool and two fcs
lowers to the same Select op as `SK[...]` does."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Lowering, Op, Option, Reading, item_model, keyword, lowers, op, shared
from .conv import BIAS, DILATION, GROUPS, NORM, STRIDE, pointwise
from .fields import ACTIVATIONS, GATES, Layer, PositiveInt
from .shapes import elements


# -- what the user writes: the spec model of its keyword --------------------------------


@item_model
class SqueezeExcite(Layer):
    """Squeeze-and-excitation (SENet): global pool, fc C→C/r, ReLU, fc C/r→C, sigmoid, scale."""

    kind: Literal["se"] = "se"
    reduction_ratio: PositiveInt = Field(16, description="r; the squeeze width is C/r.")
    min_width: PositiveInt = Field(1, description="The smallest squeeze width.")
    width: PositiveInt | None = Field(None, description="The squeeze width set directly "
                                      "(timm's rd_channels), overriding max(C/r, min).")
    bias: bool = Field(True, description="Biases on both fcs, as in the SENet paper.")
    gate: Literal[GATES] = "sigmoid"


# -- the graph op --------------------------------------------------------------------------


@op("select", counted_by="softmax", fresh_output="always", torch_module="layers.Select",
    label="select M={branches}")
class SelectOp(Op):
    """SK's Select (Eq. 5-6): a softmax over M branches per channel, then their weighted sum;
    M·C for the softmax and M·C·H·W for the sum under the `softmax` convention."""

    branches: int
    channels: int
    groups: int = 1  # > 1: the logits group-major (ResNeSt's `fc_layout group`)

    def extra(self, node) -> int:
        weights = self.branches * self.channels
        return weights + weights * elements(node.out_shapes[0][1:])


BRANCH_COUNT = Option("branch_count", ("M",), "positive", "M (branches)")
REDUCTION = Option("reduction_ratio", ("r",), "positive", "r (reduction ratio)")
SPLIT = Option("split_input", ("split",), "flag", "split")
# The attention fcs: Eq. 3's reduce W (with BN and its activation) and Eq. 5's logits A, B, ...
ATTENTION_FC_OPTIONS = (
    Option("attention_bias", ("fc_bias",), "flag", "fc_bias"),
    Option("attention_groups", ("fc_groups",), "positive", "fc_groups (groups of the fcs)"),
    Option("attention_layout", ("fc_layout",), "word", "fc_layout (the logits' order)",
           ("branch", "group")),
    Option("attention_norm", ("fc_bn",), "flag", "fc_bn"),
    Option("attention_act", ("fc_act",), "word", "fc_act", tuple(ACTIVATIONS)),
)
# How the shorthand `SK[M=…]` makes its M branches: kernels of `kernel`, with dilation 1 … M
# (the paper's K3, K5, K7) or, with `dilate no`, all alike (ResNeSt's radix). Read by the
# expansion, not fields of the spec: the branches it makes are.
SHORTHAND_OPTIONS = (
    Option("branch_kernel", ("kernel",), "kernel", "kernel (of every branch)"),
    Option("branch_dilate", ("dilate",), "flag", "dilate"),
)
SK_OPTIONS = (
    BRANCH_COUNT, GROUPS, REDUCTION, *SHORTHAND_OPTIONS,
    Option("min_attention_width", ("L",), "positive", "L (the least attention width)"),
    Option("attention_width_override", ("d",), "positive", "d (attention width)"), STRIDE, SPLIT,
    NORM,
    *ATTENTION_FC_OPTIONS,
)
SUM_OPTIONS = (BRANCH_COUNT, GROUPS, *SHORTHAND_OPTIONS, STRIDE, SPLIT, NORM)
BRANCH_OPTIONS = (GROUPS, DILATION)
SE_OPTIONS = (REDUCTION, BIAS, Option("min_width", ("min",), "positive",
                                      "min (the least squeeze width)"),
              Option("width", ("d",), "positive", "d (the squeeze width)"),
              Option("gate", ("gate",), "word", "gate", GATES))


# -- its lowering: spec item -> graph nodes (core/graph.py calls it) --------------------


@lowers("se")
def lower_squeeze_excite(lowering: Lowering, item: SqueezeExcite, x, scope, env):
    span = item.span()
    path = f"{scope.path}.{item.name}"
    channels, height, width = lowering.feature_map(x, item, "SE", path)
    squeeze = item.width or max(channels // item.reduction_ratio, item.min_width)
    steps = [("pool", shared("global_pool", "avg"), (channels, 1, 1)),
             ("reduce", pointwise(channels, squeeze, item.bias), (squeeze, 1, 1)),
             ("act", shared("act", "relu"), (squeeze, 1, 1)),
             ("expand", pointwise(squeeze, channels, item.bias), (channels, 1, 1)),
             ("gate", shared("act", item.gate), (channels, 1, 1))]
    y = x
    for name, attrs, shape in steps:
        y = lowering.emit(f"{path}.{name}", attrs, [y], [shape], span, path, scope)
    return lowering.emit(f"{path}.scale", shared("mul"), [x, y], [(channels, height, width)], span,
                         path, scope)


SK = keyword("sk", "sk", usage="write it as: SK[M=2, G=32, r=16], 128, stride 2",
             example="SK[M=2, G=4, r=4, L=8], 32",
             options=SK_OPTIONS, brackets=("M", "G", "r", "L"),
             reading=Reading.KERNEL_BRANCHES,
             branches=True)
SUM = keyword("sum", "sk", usage="write it as: SUM[M=2, G=32], 128", options=SUM_OPTIONS,
              example="SUM[M=3, G=4], 16",
              brackets=("M", "G"), reading=Reading.KERNEL_BRANCHES, branches=True)
SELECT = keyword("select", "select", usage="write it as: select logits, branch1, branch2",
                 example="branch k3: conv 3x3, 16, G=4\n"
                         "branch k5: conv 3x3, 16, G=4, D=2\n"
                         "u = add k3, k5\n"
                         "branch logits from u:\n"
                         "    gap\n"
                         "    conv 1x1, 8\n"
                         "    conv 1x1, 32, bn no, act none\n"
                         "select logits, k3, k5",
                 reading=Reading.TENSOR_NAMES)
SE = keyword("se", "se", options=SE_OPTIONS, brackets=("r",), model=SqueezeExcite,
             example="SE[r=4]")
