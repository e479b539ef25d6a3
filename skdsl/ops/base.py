"""The registry's vocabulary: `Op`, one class per primitive graph op; `Keyword`, one definition
per layer keyword of the language; and the decorators an op file registers the rest with
(`item_model`, `lowers`, `writes_rows`), with the `Lowering` protocol its lowerers are given.

An op class is everything about one op (pycls keeps a layer beside its cost function; here the
op's class is both): its attributes are the dataclass fields, and its methods give the shape
rule, the cost under every counting convention, the receptive-field and reduction rules, the
in-place and buffer facts, the torch module it compiles to (torch imported when called, never
here) and its text in reports. docs/architecture.md adds an op, file and all.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, fields
from typing import Callable, ClassVar, Protocol

from .shapes import Shape, elements

ZERO = (0, 0, 0)

# The conventions `analyze(..., count=...)` may add beyond conv + fc, in the order they list.
CONVENTIONS = ("bn", "act", "pool", "add", "mul", "softmax")

OPS: dict[str, type["Op"]] = {}  # graph op name -> its class
KEYWORDS: dict[str, "Keyword"] = {}  # layer keyword -> its definition
ITEMS: list[type] = []  # the spec models of the op files, which core/spec.py's Item unites
LOWERERS: dict[str, Callable] = {}  # spec kind -> the op file's lowering of it
ROW_WRITERS: dict[str, Callable] = {}  # spec kind -> its Table 1 lines, where not the op's own


class Op:
    """One primitive op of the lowered graph; its subclasses are slotted dataclasses of its
    resolved numbers (channels, kernel, stride ...), which a graph node carries as `attrs`."""

    __slots__ = ()
    name: ClassVar[str] = ""  # the graph op: "conv2d"
    spec_kinds: ClassVar[tuple[str, ...]] = ()  # spec kinds that lower to this op alone
    spatial: ClassVar[str | None] = None  # for those: the noun of SK304 if it needs C×H×W
    field_rule: ClassVar[str] = "keep"  # receptive field: "keep", "window", "global" or
    # "own": the op's `field(incoming)` gives it (upsample)
    counted_by: ClassVar[str | None] = None  # the --count convention that counts it

    def cost(self, node) -> tuple[int, int, int]:
        """(parameters, multiply-adds, activations) under the default conv + fc convention."""
        return ZERO

    def extra(self, node) -> int:
        """Multiply-adds under `counted_by`: one per output element unless the op says."""
        return elements(node.out_shapes[0])

    # -- facts the compiler and the memory estimate read ---------------------------------------

    def reduction(self, incoming: int, node) -> int:
        """The nominal stride of the output from the network input (timm's feature_info
        `reduction`), given the largest at the op's inputs: unchanged unless the op strides
        (conv2d, pools) or resamples (upsample)."""
        return incoming

    # Whether the output is a new tensor that the op's own backward does not read, so that a
    # consumer may overwrite it in place (compiler._enable_inplace): "always" (conv, BN, fc and
    # Select save their inputs, never their output), "several inputs" (a sum or concat of two
    # or more saves nothing; a product saves its operands), or "never" (a one-input sum, a
    # split or a dropout can hand on a tensor that lives elsewhere; ReLU, sigmoid or amax read
    # their own output in backward).
    fresh_output: ClassVar[str] = "never"

    def output_is_fresh(self, inputs: int) -> bool:
        return self.fresh_output == "always" or (self.fresh_output == "several inputs"
                                                 and inputs > 1)

    def buffers(self) -> tuple[int, int]:
        """The torch module's buffers: (floating-point elements, integer counters); BN keeps
        its running mean and variance and a batch counter."""
        return 0, 0

    # The torch module that runs it: "layers.Add" (skdsl.nn.layers) or "nn.BatchNorm2d", made
    # from the op's attributes in order, unless `module` says otherwise.
    torch_module: ClassVar[str | None] = None
    label: ClassVar[str | None] = None  # `text`'s format over the attributes: "shuffle G{groups}"
    row: ClassVar[str | None] = None  # `rows`' format over the spec item: "fc, {out_features}"

    def module(self):
        """The torch module that runs it (imports torch)."""
        if self.torch_module is None:
            raise NotImplementedError(f"no torch module for op '{self.name}'")
        home, _, name = self.torch_module.partition(".")
        if home == "nn":
            from torch import nn as home_module
        else:
            from ..nn import layers as home_module
        return getattr(home_module, name)(*(getattr(self, f) for f in attribute_names(self)))

    def text(self) -> str:
        """The op in a few characters, for diagrams: 'conv2d 3×3/2 G32'."""
        if self.label is None:
            return self.name
        return self.label.format(**{f: getattr(self, f) for f in attribute_names(self)})

    # -- the generic lowering of `spec_kinds` (one spec item -> one node) --------------------

    @classmethod
    def from_item(cls, item, shape: Shape, path: str) -> "Op":
        """The op's numbers for spec `item` reading a tensor of `shape`; a SpecError if the
        item cannot apply there. By default the item's fields of the attributes' names."""
        return cls(*(getattr(item, f) for f in attribute_names(cls)))

    def output(self, shape: Shape) -> Shape:
        """The output shape of the generic lowering: the input's unless the op says."""
        return shape

    @classmethod
    def rows(cls, item, in_block: bool) -> list[str]:
        """The lines a spec item of `spec_kinds` takes in a Table 1 cell."""
        return [item.kind if cls.row is None else cls.row.format(**item.__dict__)]

    # -- reading a node -----------------------------------------------------------------------

    @classmethod
    def build(cls, node):
        """compiler.MODULES' entry: the module of a graph node."""
        return node.attrs.module()


def op(name: str, **definition):
    """Define a graph op and add it to the registry: `@op("scale", counted_by="mul", ...)` above
    a class of its attributes, which becomes a slotted dataclass; `definition` sets the class
    variables of `Op` (spec_kinds, spatial, field_rule, counted_by, fresh_output,
    torch_module, label, row)."""

    def define(cls: type[Op]) -> type[Op]:
        assert name not in OPS, name
        for key, value in {"name": name, **definition}.items():
            assert hasattr(Op, key), key  # a misspelt definition would be silently ignored
            setattr(cls, key, value)
        OPS[name] = dataclass(slots=True)(cls)
        return OPS[name]

    return define


def attribute_names(op: type[Op] | Op) -> tuple[str, ...]:
    return tuple(f.name for f in fields(op))


@dataclass(frozen=True)
class Option:
    """A keyword option of a layer: `stride 2`, `G=32`."""

    field: str  # the spec field it fills
    names: tuple[str, ...]  # how it may be written: the first is the paper's
    kind: str  # how its value is read: a name of expand.CONVERTERS
    what: str  # words for messages
    choices: tuple[str, ...] = ()  # for kind "word"


@dataclass(frozen=True)
class Take:
    """A positional argument of a layer, in order: `conv 3x3, 128`."""

    field: str
    what: str  # how a message names it when missing: "a kernel such as 3x3"
    kind: str  # a name of expand.CONVERTERS
    noun: str | None = None  # how a message names a bad value ("kernel"), if not `what`
    required: bool = True
    choices: tuple[str, ...] = ()


class Reading(enum.Enum):
    """How the language reads a keyword's arguments. GENERIC: its `takes` in order, then its
    `options`, into its `model`. The others are shapes of text that rule cannot read, each read
    by one reader of lang/expand.py (which checks at import that it has one for every Reading)."""

    GENERIC = "generic"
    KERNEL_BRANCHES = "kernel branches"  # SK[M=2, G=32], 64 and an indented list of branches
    WINDOW_OR_GLOBAL = "window or global"  # maxpool 3x3, avgpool global, gap
    TENSOR_NAMES = "tensor names"  # add a, b: names as written, never parameters' values


@dataclass(frozen=True)
class Keyword:
    """A layer keyword of the language: how it is written and what it expands to (`reading`)."""

    word: str  # as written: "conv"
    base_name: str  # the item's local name when unlabelled: "pool" for maxpool
    usage: str | None = None  # the hint of a mistake: "write it as: conv 3x3, 128 ..."
    takes: tuple[Take, ...] = ()
    options: tuple[Option, ...] = ()
    brackets: tuple[str, ...] = ()  # the names of unnamed values in SK[2, 32, 16]
    model: type | None = None
    fixed: dict = None  # fields the keyword itself sets: dwconv's groups="depthwise"
    reading: Reading = Reading.GENERIC
    branches: bool = False  # takes an indented list of kernel branches (SK, SUM)
    # Layer line(s), "\n"-joined, valid in a stage reading 16×16×16 (the conformance suite).
    example: str | None = None


def keyword(word: str, base_name: str, **definition) -> Keyword:
    """Define a layer keyword and add it to the registry."""
    assert word not in KEYWORDS, word
    entry = KEYWORDS[word] = Keyword(word, base_name, **definition)
    return entry


def item_model(cls: type) -> type:
    """Register the spec model of an op file's keyword (a pydantic model with a `kind`), so
    that core/spec.py's `Item` union, and with it every spec, takes it."""
    assert cls not in ITEMS, cls
    ITEMS.append(cls)
    return cls


class Lowering(Protocol):
    """What an op file's lowerer is given: the graph under construction (core/graph.py's
    _Lowering). A lowerer reads shapes and adds nodes through it, never the node table, so an op
    file needs nothing of the graph module. `Ref` is (node name, output port); `scope` and `env`
    (the tensors bound by name) are passed on as they came."""

    def shape(self, ref) -> Shape:
        """The shape of tensor `ref`."""

    def feature_map(self, ref, item, kind: str, path: str) -> Shape:
        """`ref`'s C×H×W shape; SK304 at `item` when it is a vector."""

    def spatial_output(self, item, path: str, size, kernel, stride, padding, dilation=1,
                       ceil_mode=False) -> tuple[int, int]:
        """A window's output H×W; SK302 at `item` when it shrinks to nothing or grows too big."""

    def tensor(self, env: dict, name: str, item, field: str = "inputs"):
        """The tensor bound to `name` in `env`; SK306 at `item`'s `field` when there is none."""

    def primitive(self, item, x, scope, env):
        """The generic lowering of `item` to its op (ops.GENERIC_KINDS)."""

    def emit(self, name: str, attrs: Op, inputs: list, out_shapes: list, span, path: str,
             scope):
        """Add the node `name` running `attrs` on `inputs`; its output ref (a list of them
        for an op of several outputs)."""


@functools.lru_cache(maxsize=4096)
def shared(name: str, *attributes) -> Op:
    """The record of op `name` with these numbers, one for every node that has them: records
    hold numbers, not places, and nothing changes one, so sharing saves making ~90 small objects
    per SKNet-101 lowering. Read at lowering time, when every op file is loaded."""
    return OPS[name](*attributes)


def writes_rows(*kinds: str):
    """Register the function below as the Table 1 text of spec items of `kinds`:
    `rows(item, in_block) -> lines` (report.item_lines), for a kind whose text is not its
    generic op's `row`."""

    def register(function: Callable) -> Callable:
        for kind in kinds:
            assert kind not in ROW_WRITERS, kind
            ROW_WRITERS[kind] = function
        return function

    return register


def lowers(*kinds: str):
    """Register the function below as the lowering of spec items of `kinds`:
    `lowerer(lowering, item, x, scope, env) -> the output ref`."""

    def register(function: Callable) -> Callable:
        for kind in kinds:
            assert kind not in LOWERERS, kind
            LOWERERS[kind] = function
        return function

    return register
