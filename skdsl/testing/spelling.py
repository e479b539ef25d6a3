"""How the language spells what the random-spec writer draws, read from the op registry
(skdsl.ops.KEYWORDS) and the spec models its keywords fill: each layer option's spellings, the
words an option accepts, and the defaults a text may leave out. A spelling or an activation
added to the registry is drawn too; a changed default changes what the writer may omit.
"""

from __future__ import annotations

from typing import Any

from skdsl.core import spec as S
from skdsl.lang.expand import RESIDUAL_OPTIONS
from skdsl.ops import KEYWORDS, Option
from skdsl.ops.attention import BRANCH_OPTIONS

# Lines with options that are not layer keywords: an SK branch (`3x3, G=32, D=2`), a residual.
CONSTRUCTS = {"branch": BRANCH_OPTIONS, "residual": RESIDUAL_OPTIONS}


def layer(word: str) -> str:
    """A layer keyword as given (keywords ignore case), checked against the registry."""
    if word.lower() not in KEYWORDS:
        raise KeyError(f"'{word}' is not a layer keyword of skdsl.ops.KEYWORDS")
    return word


def option(word: str, field: str) -> Option:
    """The option of layer keyword `word` (or of a construct of CONSTRUCTS) that fills spec
    field `field`."""
    options = CONSTRUCTS[word] if word in CONSTRUCTS else KEYWORDS[word].options
    for entry in options:
        if entry.field == field:
            return entry
    raise KeyError(f"'{word}' has no option for the field {field} in skdsl.ops")


def spellings(word: str, field: str) -> tuple[str, ...]:
    """How `word` lets option `field` be written, the paper's spelling first: ('G', 'groups', 'g')."""
    return option(word, field).names


def default(model: type[S.SpecModel], field: str) -> Any:
    """The value a spec model's field takes when the text leaves it out."""
    return model.model_fields[field].default


# The activations `act` accepts, relu and none first: hypothesis shrinks towards them.
_ACCEPTED = option("conv", "act").choices
ACTIVATIONS = ("relu", "none", *(a for a in _ACCEPTED if a not in ("relu", "none")))
GATES = option("se", "gate").choices  # SE's gate functions

# What a conv, an SK convolution and one of its branches get when the text says nothing.
CONV_STRIDE, CONV_GROUPS, CONV_DILATION = (default(KEYWORDS["conv"].model, field)
                                           for field in ("stride", "groups", "dilation"))
SK_STRIDE = default(S.SelectiveKernel, "stride")
BRANCH_GROUPS, BRANCH_DILATION = (default(S.KernelBranch, field)
                                  for field in ("groups", "dilation"))
# SK[...] with neither M nor a branch list has two branches (skdsl/lang/expand.py's shorthand).
SHORTHAND_BRANCHES = 2
