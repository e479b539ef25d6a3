"""The field vocabulary every spec model is made of: the base models (`SpecModel`, `Layer`),
names a torch module can take, bounded integer types, activations. Each op file builds the
spec model of its keyword from these; core/spec.py adds the composites (SK units, branches,
residuals, blocks) and the network. Pydantic only: no torch.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, Strict, field_validator

from ..base.errors import Span

# Every activation a spec may name, and the torch.nn class it compiles to (named: no torch here).
ACTIVATIONS = {
    "relu": "ReLU", "relu6": "ReLU6", "sigmoid": "Sigmoid", "hardsigmoid": "Hardsigmoid",
    "silu": "SiLU", "hardswish": "Hardswish", "gelu": "GELU", "tanh": "Tanh", "none": "Identity",
}
ActivationName = Literal[tuple(ACTIVATIONS)]
GATES = ("sigmoid", "hardsigmoid")  # SE's gate
# Strict: a JSON spec's `true` or `3.0` is a mistake, not the integer 1 or 3. Bounded: torch's
# kernels take sizes, strides and channels as 32-bit integers.
LARGEST = 2**31 - 1
PositiveInt = Annotated[int, Strict(), Field(ge=1, le=LARGEST)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0, le=LARGEST)]
Kernel = tuple[PositiveInt, PositiveInt]
Groups = Union[PositiveInt, Literal["depthwise"]]

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
