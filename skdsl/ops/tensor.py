"""Tensor plumbing: the network `input`, `add`, `mul`, `concat`, `split`, `shuffle` and `scale`
ops, and the `add`, `concat`, `mul`, `shuffle` and `scale` keywords."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from ..base.errors import SpecError
from .base import Lowering, Op, Reading, Take, item_model, keyword, lowers, op, shared, writes_rows
from .fields import Layer, PositiveInt
from .shapes import broadcast, divisor_hint, elements, fmt


# -- what the user writes: the spec models of its keywords ------------------------------


@item_model
class Scale(Layer):
    """Multiply by a constant: `scale 0.17` (Inception-ResNet's residual scaling)."""

    kind: Literal["scale"] = "scale"
    factor: float = Field(allow_inf_nan=False, description="The constant factor.")


@item_model
class ChannelShuffle(Layer):
    """ShuffleNet's channel shuffle with g groups: `shuffle 2`."""

    kind: Literal["shuffle"] = "shuffle"
    groups: PositiveInt


@item_model
class ChannelSplit(Layer):
    """Split channels into named tensors: `split 2 -> left, right` or `split 16, 48 -> a, b`."""

    kind: Literal["split"] = "split"
    outputs: list[str] = Field(min_length=2)
    sizes: list[PositiveInt] | None = Field(None, description="None: equal parts.")

    @model_validator(mode="after")
    def _sizes_match_outputs(self):
        if self.sizes is not None and len(self.sizes) != len(self.outputs):
            raise ValueError(f"{len(self.sizes)} sizes for {len(self.outputs)} outputs")
        return self


@item_model
class Merge(Layer):
    """Combine named tensors: `add a, b`, `concat left, right`, `mul x, gate` (broadcasting),
    `select logits, a, b` (SK's Select, Eq. 5-6: the first tensor weighs the others)."""

    kind: Literal["add", "concat", "mul", "select"]
    inputs: list[str] = Field(min_length=1, description="Tensor names; 'input' is the scope's input.")


# -- the graph op --------------------------------------------------------------------------


@op("input")
class InputOp(Op):
    """The network's input image."""



@dataclass(slots=True)
class _ElementwiseOp(Op):
    """Tensors combined elementwise: (inputs − 1) operations per output element."""

    def extra(self, node) -> int:
        return (len(node.inputs) - 1) * elements(node.out_shapes[0])


@op("add", counted_by="add", fresh_output="several inputs", torch_module="layers.Add")
class AddOp(_ElementwiseOp):
    """Elementwise sum, broadcasting (residual adds, SK's fuse)."""

@op("mul", counted_by="mul", fresh_output="several inputs", torch_module="layers.Multiply")
class MulOp(_ElementwiseOp):
    """Elementwise product, broadcasting (SE's and attention's scaling)."""



@op("concat", fresh_output="several inputs", torch_module="layers.Concat")
class ConcatOp(Op):
    """Feature maps joined along the channels."""

@op("split", torch_module="layers.ChannelSplit")
class SplitOp(Op):
    """Channels split into parts of `sizes`; one output per part."""

    sizes: tuple[int, ...]

    def text(self) -> str:
        return f"split {'+'.join(map(str, self.sizes))}"


@op("shuffle", spec_kinds=("shuffle",), spatial="shuffle", torch_module="layers.ChannelShuffle",
    label="shuffle G{groups}", row="channel shuffle, G={groups}")
class ShuffleOp(Op):
    """ShuffleNet's channel shuffle with `groups` groups."""

    groups: int

    @classmethod
    def from_item(cls, item, shape, path) -> "ShuffleOp":
        if shape[0] % item.groups:
            raise SpecError(f"shuffle {item.groups} does not divide the {shape[0]} channels of "
                            f"{path}", item.span("groups"), code="SK301",
                            hint=divisor_hint(shape[0], item.groups))
        return cls(item.groups)


@op("scale", spec_kinds=("scale",), counted_by="mul", torch_module="layers.Scale",
    label="scale {factor:g}", row="scale, {factor:g}")
class ScaleOp(Op):
    """Multiply by a constant `factor` (Inception-ResNet's residual scaling): no parameters; one
    multiply per element under the `mul` convention, none under the default one."""

    factor: float


# -- its lowering: spec item -> graph nodes (core/graph.py calls it) --------------------


@lowers("split")
def lower_split(lowering: Lowering, item: ChannelSplit, x, scope, env):
    path = f"{scope.path}.{item.name}"
    channels, *size = lowering.feature_map(x, item, "split", path)
    parts = len(item.outputs)
    if item.sizes is None:
        if channels % parts:
            raise SpecError(f"{channels} channels do not split into {parts} equal parts at "
                            f"{path}", item.span(), code="SK307",
                            hint=divisor_hint(channels, parts))
        sizes = [channels // parts] * parts
    else:
        sizes = list(item.sizes)
        if sum(sizes) != channels:
            raise SpecError(f"split sizes {' + '.join(map(str, sizes))} = {sum(sizes)} but the "
                            f"input has {channels} channels at {path}", item.span("sizes"),
                            code="SK307", hint=f"make the sizes add up to {channels}")
    node, _ = lowering.emit(path, SplitOp(tuple(sizes)), [x], [(s, *size) for s in sizes],
                            item.span(), path, scope)
    for port, output in enumerate(item.outputs):
        env[output] = (node, port)
    return x


@lowers("add", "concat", "mul")
def lower_merge(lowering: Lowering, item: Merge, x, scope, env):
    path = f"{scope.path}.{item.name}"
    refs = [lowering.tensor(env, name, item, f"inputs.{i}") for i, name in enumerate(item.inputs)]
    shapes = [lowering.shape(ref) for ref in refs]
    if item.kind == "concat":
        if any(len(s) != 3 or s[1:] != shapes[0][1:] for s in shapes):
            raise SpecError(f"concat needs feature maps of one spatial size, got "
                            f"{', '.join(map(fmt, shapes))} at {path}", item.span("inputs"),
                            code="SK303", hint="a conv or a pool with a stride (or a "
                            "padding) can bring the inputs to one spatial size")
        out = (sum(s[0] for s in shapes), *shapes[0][1:])
    else:
        out = broadcast(shapes)
        if out is None:
            raise SpecError(f"{item.kind} needs tensors of one shape, got "
                            f"{', '.join(map(fmt, shapes))} at {path}", item.span("inputs"),
                            code="SK303",
                            hint="a projection (conv 1x1 with a stride) can match the shapes")
    return lowering.emit(path, shared(item.kind), refs, [out], item.span(), path, scope)


SHUFFLE = keyword("shuffle", "shuffle", usage="write it as: shuffle 2", model=ChannelShuffle,
                  example="shuffle 4",
                  takes=(Take("groups", "its number of groups", "positive"),))
_MERGE = dict(reading=Reading.TENSOR_NAMES)
ADD = keyword("add", "add", **_MERGE,
              example="branch body: conv 3x3, 16, act none\nadd input, body")
CONCAT = keyword("concat", "concat", **_MERGE,
                 example="branch more: conv 1x1, 8\nconcat input, more")
MUL = keyword("mul", "mul", **_MERGE,
              example="branch gate:\n    channelpool avg\n    act sigmoid\nmul input, gate")
SCALE = keyword("scale", "scale", usage="write it as: scale 0.17", model=Scale,
                example="scale 0.17",
                takes=(Take("factor", "a factor such as 0.17", "number", noun="scale factor"),))


@writes_rows("add", "concat", "mul", "select")
def merge_rows(item, in_block: bool) -> list[str]:
    return [f"{item.kind}({', '.join(item.inputs)})"]
