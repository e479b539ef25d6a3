"""Tensor plumbing: the network `input`, `add`, `mul`, `concat`, `split`, `shuffle` and `scale`
ops, and the `add`, `concat`, `mul`, `shuffle` and `scale` keywords."""

from __future__ import annotations

from dataclasses import dataclass

from .. import spec as S
from ..errors import SpecError
from .base import Op, Take, keyword, op
from .shapes import divisor_hint, elements


@op("input")
class Input(Op):
    """The network's input image."""



@dataclass(slots=True)
class _Elementwise(Op):
    """Tensors combined elementwise: (inputs − 1) operations per output element."""

    def extra(self, node) -> int:
        return (len(node.inputs) - 1) * elements(node.out_shapes[0])


@op("add", counted_by="add", torch_module="layers.Add")
class Add(_Elementwise):
    """Elementwise sum, broadcasting (residual adds, SK's fuse)."""

@op("mul", counted_by="mul", torch_module="layers.Multiply")
class Mul(_Elementwise):
    """Elementwise product, broadcasting (SE's and attention's scaling)."""



@op("concat", torch_module="layers.Concat")
class Concat(Op):
    """Feature maps joined along the channels."""

@op("split", torch_module="layers.ChannelSplit")
class Split(Op):
    """Channels split into parts of `sizes`; one output per part."""

    sizes: tuple[int, ...]

    def text(self) -> str:
        return f"split {'+'.join(map(str, self.sizes))}"


@op("shuffle", spec_kinds=("shuffle",), spatial="shuffle", torch_module="layers.ChannelShuffle",
    label="shuffle G{groups}", row="channel shuffle, G={groups}")
class Shuffle(Op):
    """ShuffleNet's channel shuffle with `groups` groups."""

    groups: int

    @classmethod
    def from_item(cls, item, shape, path) -> "Shuffle":
        if shape[0] % item.groups:
            raise SpecError(f"shuffle {item.groups} does not divide the {shape[0]} channels of "
                            f"{path}", item.span("groups"), code="SK301",
                            hint=divisor_hint(shape[0], item.groups))
        return cls(item.groups)


@op("scale", spec_kinds=("scale",), counted_by="mul", torch_module="layers.Scale",
    label="scale {factor:g}", row="scale, {factor:g}")
class Scale(Op):
    """Multiply by a constant `factor` (Inception-ResNet's residual scaling): no parameters; one
    multiply per element under the `mul` convention, none under the default one."""

    factor: float


SHUFFLE = keyword("shuffle", "shuffle", usage="write it as: shuffle 2", model=S.ChannelShuffle,
                  takes=(Take("groups", "its number of groups", "positive"),))
_MERGE = dict(builder="merge")
ADD = keyword("add", "add", **_MERGE)
CONCAT = keyword("concat", "concat", **_MERGE)
MUL = keyword("mul", "mul", **_MERGE)
SCALE = keyword("scale", "scale", usage="write it as: scale 0.17", model=S.Scale,
                takes=(Take("factor", "a factor such as 0.17", "number", noun="scale factor"),))


def merge_rows(item, in_block: bool) -> list[str]:
    return [f"{item.kind}({', '.join(item.inputs)})"]
