"""What a spec means: frozen pydantic models, the single source of truth for a validated network.

A `Network` is fully expanded: templates are called, parameters evaluated, repeats unrolled and
every item named. Input channels are not stored; the graph infers them. Defaults are the paper's.
Each model keeps where its values came from in a private `_at` map (field name -> `Span`, "" for
the whole item) so later stages can point at the user's text; spans are not part of the JSON.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, Strict, field_validator,
                      model_validator)

from .errors import Span

SCHEMA_VERSION = 1

# Every activation a spec may name, and the torch.nn class it compiles to (named: no torch here).
ACTIVATIONS = {
    "relu": "ReLU", "relu6": "ReLU6", "sigmoid": "Sigmoid", "hardsigmoid": "Hardsigmoid",
    "silu": "SiLU", "hardswish": "Hardswish", "gelu": "GELU", "tanh": "Tanh", "none": "Identity",
}
ActivationName = Literal[tuple(ACTIVATIONS)]
GATES = ("sigmoid", "hardsigmoid")  # SE's gate
# The paper's SK defaults (section 3.1, Table 1): G=32 groups per branch, and L=32 in
# d = max(C/r, L).
SK_GROUPS = 32
MIN_ATTENTION_WIDTH = 32
# Strict: a JSON spec's `true` or `3.0` is a mistake, not the integer 1 or 3. Bounded: torch's
# kernels take sizes, strides and channels as 32-bit integers.
LARGEST = 2**31 - 1
PositiveInt = Annotated[int, Strict(), Field(ge=1, le=LARGEST)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0, le=LARGEST)]
Kernel = tuple[PositiveInt, PositiveInt]
Groups = Union[PositiveInt, Literal["depthwise"]]
Value = Union[int, float, str]

# Attributes of torch.nn.Module: a submodule with one of these names could not be registered.
RESERVED_NAMES = frozenset(
    "T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda "
    "double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter "
    "get_submodule half ipu load_state_dict modules mtia named_buffers named_children "
    "named_modules named_parameters parameters register_backward_hook register_buffer "
    "register_forward_hook register_forward_pre_hook register_full_backward_hook "
    "register_full_backward_pre_hook register_load_state_dict_post_hook "
    "register_load_state_dict_pre_hook register_module register_parameter "
    "register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state "
    "set_submodule share_memory state_dict to to_empty train training type xpu zero_grad "
    # attributes of skdsl's compiled root module (timm's model API among them), and the
    # network input's name
    "graph features input as_features default_cfg feature_info forward_features forward_head "
    "get_classifier num_classes num_features pretrained_cfg reset_classifier".split()
)
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def check_name(name: str) -> str:
    """A layer, block or stage name must be usable as a PyTorch submodule name."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"'{name}' is not a name: use letters, digits and '_', starting with a letter")
    if name in RESERVED_NAMES:
        raise ValueError(f"'{name}' is reserved (an attribute of the compiled torch module, or the network input)")
    return name


class SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    # A plain default, not a factory: pydantic inspects factories on every construction.
    _at: dict[str, Span] | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # Equal content is equal spec, wherever it was written: source spans do not count.
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = BaseModel.__hash__

    def span(self, field: str = "") -> Span | None:
        """Where `field` (or, for "", the whole item) came from in the user's text."""
        # Read the private dict directly: `self._at` goes through BaseModel.__getattr__ (~2 µs).
        at = (self.__pydantic_private__ or {}).get("_at")
        return (at.get(field) or at.get("")) if at else None

    def own_span(self, field: str) -> Span | None:
        """Where `field` itself was written, if it was."""
        at = (self.__pydantic_private__ or {}).get("_at")
        return at.get(field) if at else None

    def located(self, spans: dict[str, Span]) -> "SpecModel":
        self._at = {**(self._at or {}), **spans}
        return self

    @property
    def spans(self) -> dict[str, Span]:
        return dict((self.__pydantic_private__ or {}).get("_at") or {})


class Layer(SpecModel):
    name: str = Field(description="Local name; the full name joins the enclosing names with '.'.")

    _check_name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))


class Conv(Layer):
    """conv k×k (+ BN + activation): `conv 3x3, 128, G=32, stride 2`."""

    kind: Literal["conv"] = "conv"
    kernel: Kernel = Field(description="Kernel height and width (k×k).")
    out_channels: PositiveInt | None = Field(
        None, description="Output channels; None keeps the input's (depthwise only)."
    )
    stride: PositiveInt = 1
    groups: Groups = Field(1, description="G, the number of groups; 'depthwise' = one per channel.")
    dilation: PositiveInt = Field(1, description="D, the dilation.")
    padding: tuple[NonNegativeInt, NonNegativeInt] | None = Field(
        None, description="Zero padding; None = dilation·(k−1)/2, which keeps the size at stride 1."
    )
    bias: bool = False
    norm: bool = Field(True, description="Batch normalisation after the convolution.")
    act: ActivationName = "relu"

    @model_validator(mode="after")
    def _width_needed(self):
        if self.out_channels is None and self.groups != "depthwise":
            raise ValueError("a convolution needs its output channels")
        return self


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
    split_input: bool = Field(
        False, description="timm's split_input: branch m reads only the m-th of M equal slices "
        "of the input channels (the paper's branches all read the whole input).")
    # The two attention fcs (Eq. 3's W and Eq. 5's A, B, ...) are 1×1 convs on s; the paper's
    # have no bias, one group, and BN + ReLU after W.
    attention_bias: bool = Field(False, description="Biases on both attention fcs.")
    attention_groups: PositiveInt = Field(1, description="Groups of both attention fcs.")
    attention_norm: bool = Field(True, description="BN after the reduce fc W (Eq. 3's B).")
    attention_act: ActivationName = Field(
        "relu", description="The activation after the reduce fc W (Eq. 3's δ).")

    @property
    def attention_width(self) -> int:
        """d = max(C/r, L), Eq. 4 of the paper."""
        if self.attention_width_override is not None:
            return self.attention_width_override
        return max(self.out_channels // self.reduction_ratio, self.min_attention_width)


class SqueezeExcite(Layer):
    """Squeeze-and-excitation (SENet): global pool, fc C→C/r, ReLU, fc C/r→C, sigmoid, scale."""

    kind: Literal["se"] = "se"
    reduction_ratio: PositiveInt = Field(16, description="r; the squeeze width is C/r.")
    min_width: PositiveInt = Field(1, description="The smallest squeeze width.")
    bias: bool = Field(True, description="Biases on both fcs, as in the SENet paper.")
    gate: Literal[GATES] = "sigmoid"


class Pool(Layer):
    """max or average pooling: `maxpool 3x3, stride 2`."""

    kind: Literal["pool"] = "pool"
    mode: Literal["max", "avg"]
    kernel: Kernel
    stride: PositiveInt = Field(description="Defaults to the kernel size when not written.")
    padding: tuple[NonNegativeInt, NonNegativeInt] | None = Field(None, description="None = (k−1)/2.")
    ceil_mode: bool = False
    count_include_pad: bool = Field(True, description="avg: divide by the whole window, padding "
                                    "included (PyTorch's default); False: by the real pixels "
                                    "only, as TensorFlow and timm's Inception-v4 pool.")


class _Reduction(Layer):
    """A pooling whose extent is fixed by its kind, so only the mode is written."""

    mode: Literal["max", "avg"] = "avg"


class GlobalPool(_Reduction):
    """Global pooling to 1×1: `avgpool global`."""

    kind: Literal["global_pool"] = "global_pool"


class Linear(Layer):
    """Fully connected layer on the flattened input: `fc 1000`."""

    kind: Literal["fc"] = "fc"
    out_features: PositiveInt
    bias: bool = True


class ChannelPool(_Reduction):
    """Pool across channels to a 1×H×W map (CBAM's spatial attention): `channelpool max`."""

    kind: Literal["channel_pool"] = "channel_pool"


class Dropout(Layer):
    kind: Literal["dropout"] = "dropout"
    p: float = Field(ge=0.0, lt=1.0, description="Probability of zeroing an element.")


class BatchNorm(Layer):
    kind: Literal["bn"] = "bn"


class Activation(Layer):
    kind: Literal["act"] = "act"
    function: ActivationName


class Scale(Layer):
    """Multiply by a constant: `scale 0.17` (Inception-ResNet's residual scaling)."""

    kind: Literal["scale"] = "scale"
    factor: float = Field(allow_inf_nan=False, description="The constant factor.")


class Upsample(Layer):
    """Enlarge H×W by an integer factor, `upsample 2` (nearest) or `upsample 2, mode bilinear`,
    or to a named tensor's size, `upsample to x` (Residual Attention Networks' mask branch)."""

    kind: Literal["upsample"] = "upsample"
    factor: PositiveInt | None = Field(None, description="The integer factor of both H and W.")
    to: str | None = Field(None, description="Or: the tensor whose H×W the output takes.")
    mode: Literal["nearest", "bilinear"] = Field("nearest", description="Interpolation.")

    @model_validator(mode="after")
    def _one_size(self):
        if (self.factor is None) == (self.to is None):
            raise ValueError("upsample takes a factor (upsample 2) or a tensor to match "
                             "(upsample to x), one of the two")
        return self


class ChannelShuffle(Layer):
    """ShuffleNet's channel shuffle with g groups: `shuffle 2`."""

    kind: Literal["shuffle"] = "shuffle"
    groups: PositiveInt


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


class Merge(Layer):
    """Combine named tensors: `add a, b`, `concat left, right`, `mul x, gate` (broadcasting),
    `select logits, a, b` (SK's Select, Eq. 5-6: the first tensor weighs the others)."""

    kind: Literal["add", "concat", "mul", "select"]
    inputs: list[str] = Field(min_length=1, description="Tensor names; 'input' is the scope's input.")


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


Item = Annotated[
    Union[
        Conv, SelectiveKernel, SqueezeExcite, Pool, GlobalPool, ChannelPool, Linear, Dropout,
        BatchNorm, Activation, Scale, Upsample, ChannelShuffle, ChannelSplit, Merge, Branch,
        Residual, Block,
    ],
    Field(discriminator="kind"),
]


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
