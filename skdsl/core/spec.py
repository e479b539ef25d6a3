"""What a spec means: frozen pydantic models, the single source of truth for a validated network.

The models of single layers live in their op files (skdsl/ops/, registered as ops.ITEMS); this
module adds the composites (SK units, branches, residuals, blocks, stages, the network) and
unites them all in `Item`. A `Network` is fully expanded: templates are called, parameters
evaluated, repeats unrolled and every item named. Input channels are not stored; the graph
infers them. Defaults are the paper's.
Each model keeps where its values came from in a private `_at` map (field name -> `Span`, "" for
the whole item) so later stages can point at the user's text; spans are not part of the JSON.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from .. import ops
# The vocabulary and the op files' models, read by the rest of skdsl as spec's (S.Conv, S.LARGEST).
from ..ops.attention import SqueezeExcite
from ..ops.conv import Conv
from ..ops.dense import Linear, Dropout
from ..ops.fields import (ACTIVATIONS, GATES, LARGEST, ActivationName, Groups, Kernel, Layer,
                          NonNegativeInt, PositiveInt, SpecModel, check_name)
from ..ops.norm import BatchNorm, Activation
from ..ops.pool import Pool, GlobalPool, ChannelPool
from ..ops.resample import Upsample
from ..ops.tensor import Scale, ChannelShuffle, ChannelSplit, Merge

SCHEMA_VERSION = 1
Value = Union[int, float, str]  # a declared parameter's or a block argument's value

# The paper's SK defaults (section 3.1, Table 1): G=32 groups per branch, and L=32 in
# d = max(C/r, L).
SK_GROUPS = 32
MIN_ATTENTION_WIDTH = 32
class KernelBranch(SpecModel):
    """One branch of an SK convolution: a grouped conv-BN-ReLU (the paper's K3, K5, K7)."""

    kernel: Kernel = (3, 3)
    dilation: PositiveInt = Field(1, description="D; the paper's 5×5 branch is 3×3 with D=2.")
    groups: Groups = Field(SK_GROUPS, description="G, the number of groups of the branch convolution.")


class SelectiveKernel(Layer):
    """SK convolution (section 3.1): Split into M branches, Fuse, Select; `SK[M=2, G=32, r=16], 128`."""

    kind: Literal["sk"] = "sk"
    out_channels: PositiveInt = Field(description="C, the width of every branch and of the output.")
    stride: PositiveInt = 1
    branches: list[KernelBranch] = Field(min_length=1, description="M branches.")
    attention: bool = Field(
        True, description="Fuse and Select; False gives Table 7's plain sum U of the branches."
    )
    reduction_ratio: PositiveInt = Field(16, description="r in d = max(C/r, L).")
    min_attention_width: PositiveInt = Field(MIN_ATTENTION_WIDTH, description="L in d = max(C/r, L).")
    attention_width_override: PositiveInt | None = Field(
        None, description="d set explicitly, overriding max(C/r, L)."
    )
    norm: bool = Field(True, description="BN after each branch convolution (timm's SplitAttn "
                       "without a norm_layer has none).")
    split_input: bool = Field(
        False, description="timm's split_input: branch m reads only the m-th of M equal slices "
        "of the input channels (the paper's branches all read the whole input).")
    # The two attention fcs (Eq. 3's W and Eq. 5's A, B, ...) are 1×1 convs on s; the paper's
    # have no bias, one group, and BN + ReLU after W.
    attention_bias: bool = Field(False, description="Biases on both attention fcs.")
    attention_groups: PositiveInt = Field(1, description="Groups of both attention fcs.")
    attention_layout: Literal["branch", "group"] = Field(
        "branch", description="The order of the M·C logits: 'branch', all C of branch 1 first "
        "(the paper, timm's SK); 'group', every branch of channel group 1 first, as the d→M·C "
        "fc's groups write them in ResNeSt's split attention (timm's RadixSoftmax).")
    attention_norm: bool = Field(True, description="BN after the reduce fc W (Eq. 3's B).")
    attention_act: ActivationName = Field(
        "relu", description="The activation after the reduce fc W (Eq. 3's δ).")

    @property
    def attention_width(self) -> int:
        """d = max(C/r, L), Eq. 4 of the paper."""
        if self.attention_width_override is not None:
            return self.attention_width_override
        return max(self.out_channels // self.reduction_ratio, self.min_attention_width)


class Branch(Layer):
    """A named branch: `branch left:` runs its body on the current (or `from` a named) tensor."""

    kind: Literal["branch"] = "branch"
    source: str | None = Field(None, description="Tensor the branch reads; None = the current one.")
    body: list["Item"] = Field(min_length=1)
    shares: str | None = Field(
        None, description="An earlier branch of this scope whose layers (and weights) this one "
        "reuses: `branch b from x shares a`. Its parameters are counted once.")


class Residual(SpecModel):
    """body + shortcut, then the activation; the shortcut is a projection when shapes differ.

    The residual has no name of its own: its body items are named in the enclosing scope.
    """

    kind: Literal["residual"] = "residual"
    body: list["Item"] = Field(min_length=1)
    shortcut: list["Item"] | None = Field(
        None, description="Explicit shortcut; None = identity, or 1×1 conv + BN if shapes differ."
    )
    act: ActivationName = "relu"
    shortcut_name: str = "shortcut"
    add_name: str = "add"
    act_name: str = "act"

    _check_names = field_validator("shortcut_name", "add_name", "act_name")(
        classmethod(lambda cls, v: check_name(v)))


class Block(Layer):
    """One call of a block template, expanded."""

    kind: Literal["block"] = "block"
    template: str
    arguments: dict[str, Value] = Field(default_factory=dict)
    body: list["Item"] = Field(min_length=1)


# Every spec item: the models the op files register (ops.ITEMS, in the order of their keywords),
# then the composites defined here.
ITEM_MODELS = (*ops.ITEMS, SelectiveKernel, Branch, Residual, Block)
Item = Annotated[Union[ITEM_MODELS], Field(discriminator="kind")]


class Stage(SpecModel):
    """A row of the paper's Table 1: `stage conv3: sk_unit(256, 512, stride=2) x4`."""

    name: str
    body: list[Item] = Field(min_length=1)

    _check_name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))


class PaperFigures(SpecModel):
    """The paper's own figures for this network, shown beside ours in reports."""

    params_millions: float | None = Field(None, gt=0)
    gflops: float | None = Field(None, gt=0, description="The paper's GFLOPs (multiply-adds, ×10⁹).")
    source: str | None = None


class Network(SpecModel):
    """A validated, fully expanded network."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    input: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(description="C×H×W of one image.")
    classes: PositiveInt | None = None
    stages: list[Stage] = Field(min_length=1)
    parameters: dict[str, Value] = Field(
        default_factory=dict, description="The spec's declared parameters, as evaluated."
    )
    paper: PaperFigures | None = None

    @model_validator(mode="after")
    def _unique_stage_names(self):
        names = [stage.name for stage in self.stages]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stage names must be unique: {', '.join(duplicates)}")
        return self


for _model in (Branch, Residual, Block, Stage, Network):
    _model.model_rebuild()


def json_schema() -> dict:
    """The JSON schema of a spec, for editors and other tools."""
    return Network.model_json_schema()


__all__ = [
    "ACTIVATIONS", "GATES", "LARGEST", "ActivationName", "Groups", "Kernel", "NonNegativeInt",
    "PositiveInt", "SpecModel", "Layer", "check_name", "Value", "SK_GROUPS", "MIN_ATTENTION_WIDTH",
    "Conv", "SqueezeExcite", "Pool", "GlobalPool", "ChannelPool", "Linear", "Dropout",
    "BatchNorm", "Activation", "Scale", "ChannelShuffle", "ChannelSplit", "Merge", "Upsample",
    "KernelBranch", "SelectiveKernel", "Branch", "Residual", "Block", "ITEM_MODELS", "Item",
    "Stage", "PaperFigures", "Network", "json_schema",
]
