"""Rule tables: how the state-dict keys of another library map onto a compiled spec's, and back.

A family (one kind of source network: timm's SK-ResNet-D, say) is a table of rules. A rule turns
one pattern of source keys into one pattern of skdsl keys, `layer{s}.{b}.conv2.paths.{m}.conv.
weight` -> `conv{s+1}.block{b+1}.sk.branch{m+1}.conv.weight`, and back; a rule with a `Split`
turns one source tensor into several skdsl tensors, its chunks along an axis (timm's ResNeSt
keeps the M branch convs of a split attention in one conv). The built-in tables are here, in
Python; rule files (weight_rule_files.py, docs/weights.md) describe more in the same structure.

No torch here: the CLI reads and checks rule tables without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..base.errors import SettingError, declare_settings

declare_settings("origin", "to", "skip_head", "num_classes", "rules", "family", "format")


class WeightsError(SettingError):
    """Weights that cannot be converted onto a spec or exported from it, rule tables that
    cannot be used, or weights that cannot be written."""

    code = "SK520"


# The words a `{name:word}` field may take, by word. A rule file adds its own lists.
WORDS: dict[str, tuple[str, ...]] = {
    # every tensor of a conv, linear or batch norm module
    "tensor": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
    "conv_or_bn": ("conv", "bn"),
    "conv_index": ("1", "2", "3"),
    "outer": ("1", "3"),  # a bottleneck's 1×1 convs around its middle
}

_NAME = r"[A-Za-z_]\w*"
_SOURCE_FIELD = re.compile(rf"\{{({_NAME})(?::(\w+))?\}}")
_TARGET_FIELD = re.compile(rf"\{{({_NAME})(?:([+-])(\d+))?\}}")


@dataclass(frozen=True)
class Split:
    """One source tensor onto several skdsl tensors, and back: the source is cut along `axis`
    into chunks numbered 0, 1, ... by the target-only field `field` (`{m+1}` numbers them from
    1), as many as the spec has targets; export concatenates them. A tensor of no dimensions
    (a BN's num_batches_tracked) is copied to every target, and exported from the first."""

    field: str
    axis: int = 0


@dataclass(frozen=True)
class Rule:
    """One source key pattern and the skdsl key pattern it maps to.

    In `source`, `{name}` matches a non-negative integer and `{name:word}` one of the words of
    a word list (WORDS, or `words`: extra lists by name); everything else is literal. In
    `target`, `{name}` is the matched text and `{name+N}` (`{name-N}`) the matched integer plus
    (minus) N: timm counts stages and blocks from 0, skdsl's specs from 1. Every source field
    must appear in the target, so that distinct keys land apart and the rule runs backwards
    (export). A ValueError says what is wrong with a rule.
    """

    source: str
    target: str
    split: Split | None = None
    words: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), repr=False)

    def __post_init__(self):
        lists = {**dict(self.words), **WORDS}
        kinds, pattern = _source_pattern(self.source, lists)
        object.__setattr__(self, "words", tuple(sorted(
            (name, tuple(lists[name])) for name in set(kinds.values()) - {None} - set(WORDS))))
        target_fields, inverse = _target_pattern(self, kinds, lists)
        object.__setattr__(self, "_kinds", kinds)
        object.__setattr__(self, "_pattern", pattern)
        object.__setattr__(self, "_target_fields", target_fields)
        object.__setattr__(self, "_inverse", inverse)

    def match(self, key: str) -> dict[str, str] | None:
        """The fields of a source key this rule matches, or None."""
        found = self._pattern.fullmatch(key)
        return None if found is None else found.groupdict()

    def fill(self, values: Mapping[str, str], chunk: int | str = 0) -> str:
        """The target of a source key's fields; `chunk`: the split's chunk (a number, or text
        to show in its place: "{1..3}")."""
        def one(found: re.Match) -> str:
            name, sign, offset = found.groups()
            value = chunk if self.split and name == self.split.field else values[name]
            if sign is None or isinstance(value, str) and not value.isdigit():
                return str(value)
            return str(int(value) + int(offset) * (1 if sign == "+" else -1))

        return _TARGET_FIELD.sub(one, self.target)

    def apply(self, key: str) -> str | None:
        """The target of `key` (of a split, its first chunk's), or None when no match."""
        values = self.match(key)
        return None if values is None else self.fill(values)

    def chunks(self, values: Mapping[str, str], present) -> tuple[str, ...]:
        """A split's targets of a source key's fields: chunk 0, 1, ... while `present` (the
        spec's keys) has them."""
        targets: list[str] = []
        while (target := self.fill(values, len(targets))) in present:
            targets.append(target)
        return tuple(targets)

    def span(self, values: Mapping[str, str], count: int) -> str:
        """A split's targets in one line: `conv2.block1.sk.branch{1..3}.conv.weight`."""
        if count <= 1:
            return self.fill(values, 0)
        delta = next(offset for name, offset in self._target_fields if name == self.split.field)
        return self.fill(values, f"{{{delta}..{count - 1 + delta}}}")

    def unapply(self, key: str) -> tuple[str, int | None] | None:
        """The source key of a skdsl key this rule produces, and its chunk (None for a rule
        without a split); None when the rule does not produce it."""
        found = self._inverse.fullmatch(key)
        if found is None:
            return None
        values: dict[str, str] = {}
        for (name, delta), text in zip(self._target_fields, found.groups()):
            value = _field_value(text, delta, self._kinds.get(name, None) is None)
            if value is None or values.setdefault(name, value) != value:
                return None  # below zero, not canonical, or one field with two values
        chunk = int(values.pop(self.split.field)) if self.split else None
        return _SOURCE_FIELD.sub(lambda f: values[f.group(1)], self.source), chunk


def _field_value(text: str, delta: int, numeric: bool) -> str | None:
    """A field's source value from its text in a target: the number less its offset."""
    if not numeric:
        return text
    number = int(text) - delta
    return str(number) if number >= 0 and str(int(text)) == text else None


def _source_pattern(source: str, lists: Mapping[str, tuple[str, ...]]):
    """The kinds of a source pattern's fields (None: a number; else the word list's name) and
    its regex."""
    parts, kinds, position = [], {}, 0
    for found in _SOURCE_FIELD.finditer(source):
        parts.append(_literal(source[position:found.start()], source))
        name, word = found.groups()
        if name in kinds:
            raise ValueError(f"source {source!r}: the field '{name}' appears twice")
        if word is not None and word not in lists:
            raise ValueError(f"source {source!r}: no word list '{word}' (there are "
                             f"{', '.join(sorted(lists))})")
        kinds[name] = word
        parts.append(f"(?P<{name}>{_alternatives(word, lists)})")
        position = found.end()
    parts.append(_literal(source[position:], source))
    return kinds, re.compile("".join(parts))


def _alternatives(word: str | None, lists: Mapping[str, tuple[str, ...]]) -> str:
    if word is None:
        return r"\d+"
    return "|".join(map(re.escape, sorted(lists[word], key=len, reverse=True)))


def _literal(text: str, pattern: str) -> str:
    """`text` (between fields) as a regex; a brace there is a field written wrong."""
    if "{" in text or "}" in text:
        raise ValueError(f"{pattern!r}: a brace that opens no field (a field is a name in "
                         f"braces, with ':word' in a source, with +N or -N in a target)")
    return re.escape(text)


def _target_pattern(rule: Rule, kinds: Mapping[str, str | None], lists):
    """The fields of a rule's target in order, each with its offset, and the regex that
    matches the targets (to run the rule backwards); a ValueError for a rule that cannot be."""
    split = rule.split
    if split is not None:
        _check_split(rule, kinds)
    known = {**kinds, **({split.field: None} if split else {})}
    fields, parts, position = [], [], 0
    for found in _TARGET_FIELD.finditer(rule.target):
        parts.append(_literal(rule.target[position:found.start()], rule.target))
        name, sign, offset = found.groups()
        if name not in known:
            raise ValueError(f"rule {rule.source!r}: target names unknown fields {{{name!r}}}")
        delta = int(offset or 0) * (-1 if sign == "-" else 1)
        if known[name] is not None and sign:
            raise ValueError(f"target {rule.target!r}: '{name}' is a word, not a number: it "
                             f"takes no {sign}{offset}")
        fields.append((name, delta))
        parts.append(f"({_alternatives(known[name], lists)})")
        position = found.end()
    parts.append(_literal(rule.target[position:], rule.target))
    dropped = sorted(set(known) - {name for name, _ in fields})
    if dropped:
        raise ValueError(f"rule {rule.source!r}: its target {rule.target!r} leaves out the "
                         f"field '{dropped[0]}', so keys that differ in it would land on one "
                         f"target")
    return tuple(fields), re.compile("".join(parts))


def _check_split(rule: Rule, kinds: Mapping[str, str | None]) -> None:
    split = rule.split
    if not re.fullmatch(_NAME, split.field) or split.field in kinds:
        raise ValueError(f"rule {rule.source!r}: the split's field {split.field!r} must be a "
                         f"name of the target's alone, numbering its chunks")
    if isinstance(split.axis, bool) or not isinstance(split.axis, int) or split.axis < 0:
        raise ValueError(f"rule {rule.source!r}: the split's axis {split.axis!r} is not a "
                         f"dimension (0, 1, ...)")


# -- the built-in tables ---------------------------------------------------------------------------


def _block(rest: str) -> str:
    """A target inside the unit of timm's `layer{s}.{b}`: skdsl's stage conv{s+1}, block{b+1}."""
    return "conv{s+1}.block{b+1}." + rest


# The torchvision-style ResNet skeleton timm's families share: a 7×7 stem conv + BN (skdsl:
# stage conv1, layer `conv`), stages layer1-4 (skdsl: stages conv2-conv5, each unit a
# `blockN`), a 1×1 conv + BN projection shortcut (`downsample`) and the classifier `fc`.
STEM = (
    Rule("conv1.weight", "conv1.conv.conv.weight"),
    Rule("bn1.{p:tensor}", "conv1.conv.bn.{p}"),
)
PROJECTION = (
    Rule("layer{s}.{b}.downsample.0.{p:tensor}", _block("shortcut.conv.{p}")),
    Rule("layer{s}.{b}.downsample.1.{p:tensor}", _block("shortcut.bn.{p}")),
)
CLASSIFIER = (Rule("fc.{p:tensor}", "head.fc.{p}"),)
SKELETON = STEM + PROJECTION + CLASSIFIER

# ResNet-D's skeleton (timm's stem_type='deep', avg_down=True): the stem is a Sequential of
# three 3×3 convs (0, 3, 6) with BNs (1, 4; the third's is `bn1`) and ReLUs (2, 5) between;
# the shortcut is downsample_avg, a Sequential of an AvgPool2d (an Identity where the unit
# does not stride; either has no tensors), a 1×1 conv and a BN: skdsl's explicit `shortcut:`,
# whose 1×1 conv layer is `shortcut.conv`.
DEEP_STEM = (
    Rule("conv1.0.weight", "conv1.conv1.conv.weight"),
    Rule("conv1.1.{p:tensor}", "conv1.conv1.bn.{p}"),
    Rule("conv1.3.weight", "conv1.conv2.conv.weight"),
    Rule("conv1.4.{p:tensor}", "conv1.conv2.bn.{p}"),
    Rule("conv1.6.weight", "conv1.conv3.conv.weight"),
    Rule("bn1.{p:tensor}", "conv1.conv3.bn.{p}"),
)
AVERAGE_DOWN = (
    Rule("layer{s}.{b}.downsample.1.weight", _block("shortcut.conv.conv.weight")),
    Rule("layer{s}.{b}.downsample.2.{p:tensor}", _block("shortcut.conv.bn.{p}")),
)
SKELETON_D = DEEP_STEM + AVERAGE_DOWN + CLASSIFIER

# timm's Bottleneck: conv1/bn1 1×1 reduce, conv2/bn2 3×3 grouped, conv3/bn3 1×1 expand.
BOTTLENECK = (
    Rule("layer{s}.{b}.conv{i:conv_index}.{p:tensor}", _block("conv{i}.conv.{p}")),
    Rule("layer{s}.{b}.bn{i:conv_index}.{p:tensor}", _block("conv{i}.bn.{p}")),
)

# timm's SEModule (attn_layer='se'): fc1 reduce and fc2 expand, 1×1 convs with bias.
SQUEEZE_EXCITE = (
    Rule("layer{s}.{b}.se.fc1.{p:tensor}", _block("se.reduce.{p}")),
    Rule("layer{s}.{b}.se.fc2.{p:tensor}", _block("se.expand.{p}")),
)


def _conv_norm_act(module: str, layer: str) -> Rule:
    """timm's ConvNormAct `module` of a unit (`conv`, `bn`) onto the skdsl conv layer `layer`."""
    return Rule(f"layer{{s}}.{{b}}.{module}.{{l:conv_or_bn}}.{{p:tensor}}",
                _block(f"{layer}.{{l}}.{{p}}"))


def _selective_kernel(module: str) -> tuple[Rule, ...]:
    """timm's SelectiveKernel `module` of a unit onto skdsl's `sk`: `paths` (branch M has
    dilation M) and `attn` (fc_reduce, bn, fc_select, whose M·C outputs are path-major, as
    skdsl's `logits`). With split_input a path's conv reads 1/M of the input channels, as the
    branch conv of skdsl's `SK[..., split yes]`: the keys are the same, the shapes tell."""
    sk = f"layer{{s}}.{{b}}.{module}."
    return (
        Rule(sk + "paths.{m}.{l:conv_or_bn}.{p:tensor}", _block("sk.branch{m+1}.{l}.{p}")),
        Rule(sk + "attn.fc_reduce.{p:tensor}", _block("sk.reduce.conv.{p}")),
        Rule(sk + "attn.bn.{p:tensor}", _block("sk.reduce.bn.{p}")),
        Rule(sk + "attn.fc_select.{p:tensor}", _block("sk.logits.{p}")),
    )


# timm's SelectiveKernelBottleneck: conv1 and conv3 are ConvNormAct, conv2 the SK convolution.
# skdsl names the 1×1 after the SK unit `conv2`: it is the unit's second conv layer.
SK_BOTTLENECK = (_conv_norm_act("conv1", "conv1"), *_selective_kernel("conv2"),
                 _conv_norm_act("conv3", "conv2"))

# timm's SelectiveKernelBasic: conv1 is the SK convolution, conv2 a 3×3 ConvNormAct, skdsl's
# `conv` (the unit's only conv layer besides the SK).
SK_BASIC = (*_selective_kernel("conv1"), _conv_norm_act("conv2", "conv"))

# timm's ResNet `Bottleneck` with its attn_layer (std/resnet.sk's attn_bottleneck, whose attention
# layer is `attention`): timm keeps the module as `se` whatever it is. ECA's one conv1d (k
# weights) is skdsl's channelconv; SEModule's fcs are SE's reduce and expand.
ECA_ATTENTION = (Rule("layer{s}.{b}.se.conv.weight",
                      _block("attention.gate.channel_conv.weight")),)
SE_ATTENTION = (
    Rule("layer{s}.{b}.se.fc1.{p:tensor}", _block("attention.se.reduce.{p}")),
    Rule("layer{s}.{b}.se.fc2.{p:tensor}", _block("attention.se.expand.{p}")),
)

# timm's ResNestBottleneck: conv1/bn1 and conv3/bn3 around a SplitAttn `conv2`, whose one conv
# and one BN (bn0) of radix·C channels hold the radix branches in turn (skdsl's branch convs
# and BNs: a split), fc1 (bias) and bn1 the reduce, fc2 (bias) the group-major logits.
RESNEST = (
    Rule("layer{s}.{b}.conv{i:outer}.weight", _block("conv{i}.conv.weight")),
    Rule("layer{s}.{b}.bn{i:outer}.{p:tensor}", _block("conv{i}.bn.{p}")),
    Rule("layer{s}.{b}.conv2.conv.weight", _block("splat.sk.branch{m+1}.conv.weight"),
         Split("m")),
    Rule("layer{s}.{b}.conv2.bn0.{p:tensor}", _block("splat.sk.branch{m+1}.bn.{p}"),
         Split("m")),
    Rule("layer{s}.{b}.conv2.fc1.{p:tensor}", _block("splat.sk.reduce.conv.{p}")),
    Rule("layer{s}.{b}.conv2.bn1.{p:tensor}", _block("splat.sk.reduce.bn.{p}")),
    Rule("layer{s}.{b}.conv2.fc2.{p:tensor}", _block("splat.sk.logits.{p}")),
)

_SK_BRANCH = re.compile(r"(?P<sk>.*\.sk)\.branch(?P<m>\d+)\.conv\.weight$")


def splits_input(state) -> bool | None:
    """Whether the first SK convolution of `state` (skdsl keys: a compiled spec's state dict,
    or a source one under a family's targets) gives each branch 1/M of its input channels
    (timm's split_input, one group: a branch conv's in-channels × M = its out-channels, since
    timm's SK keeps its width), rather than all of them in groups; None without an SK or
    without shapes (keys alone)."""
    firsts = [(key, match) for key in state if (match := _SK_BRANCH.match(key))]
    if not firsts:
        return None
    key, first = firsts[0]
    shape = getattr(state[key], "shape", None) if isinstance(state, Mapping) else None
    if shape is None or len(shape) != 4:
        return None
    branches = {match["m"] for _, match in firsts if match["sk"] == first["sk"]}
    return shape[1] * len(branches) == shape[0]


_LAYER_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.")


def _tiered_stem(state) -> bool:
    """Whether timm's deep ResNet stem is 'deep_tiered' (ecaresnet26t: its first 3×3 conv 3/4
    as wide as its second, 24 and 32), which timm's names mark with t where 'deep' has d."""
    if not isinstance(state, Mapping):
        return False
    first, second = (getattr(state.get(f"conv1.{i}.weight"), "shape", None) for i in (0, 3))
    return bool(first and second) and first[0] != second[0]


@dataclass(frozen=True)
class Family:
    """One kind of source network: its rule table, and how to recognise its skdsl counterpart."""

    name: str      # unique among its origin's families: `--family skresnet-d`
    title: str     # for messages: "SK-ResNeXt"
    block: str     # the skdsl block a spec uses for it
    rules: tuple[Rule, ...]
    markers: tuple[str, ...]  # regexes, each matched by a key of a spec built of `block`
    models: tuple[str, ...]   # the source library's models of this family: ("skresnext*",)
    library: str = "std/resnext.sk"  # where `block` is defined ("": unsaid)
    also: str = ""            # what such a spec has besides `block` units, for hints
    unit_layers: int = 3      # weighted layers of a unit: 3 in a bottleneck, 2 in a basic unit
    suffix: str = ""          # after the depth: "d" for ResNet-D
    grouped: str | None = None  # the first unit's grouped 3×3 weight: cardinality × width
    split_input: bool | None = None  # whether its SK convolutions split their input
    prefix: str = ""          # the model name before the depth (default: `name`)
    origin: str = "timm"      # the library: `--from`, `--to`

    def depth(self, keys) -> int | None:
        """The network's depth from its units (`unit_layers` each, plus the stem and the fc)."""
        units = {match.groups() for match in map(_LAYER_BLOCK.match, keys) if match}
        return 2 + self.unit_layers * len(units) if units else None

    def model_name(self, state) -> str:
        """timm's name for a state dict of this family, as far as it tells: `skresnext50_32x4d`
        (from keys alone, without shapes: `skresnext50`), `skresnet18`, `skresnet50d`."""
        depth, prefix = self.depth(state), self.prefix or self.name
        suffix = "t" if self.suffix == "d" and _tiered_stem(state) else self.suffix
        name = f"{prefix}{depth}{suffix}" if depth else prefix
        weight = state.get(self.grouped) if self.grouped and isinstance(state, Mapping) else None
        shape = getattr(weight, "shape", None)
        if shape is not None and len(shape) == 4 and shape[1] and shape[0] % shape[1] == 0:
            name += f"_{shape[0] // shape[1]}x{shape[1]}d"  # out = in = groups × group width
        return name

    @property
    def model_list(self) -> str:
        """Its models, for hints: "skresnet18, skresnet34"."""
        return ", ".join(self.models)

    @property
    def built_of(self) -> str:
        """How a spec of this family is built, for hints: "sk_unit blocks"."""
        return f"{self.block} blocks{self.also}"

    @property
    def defined_in(self) -> str:
        """Where its block is, for hints: "std/resnext.sk's " (or nothing)."""
        return f"{self.library}'s " if self.library else ""

    def built_into(self, state) -> bool:
        """Whether `state` (skdsl keys: a compiled spec's state dict, or a source one under
        these rules' targets) has this family's modules, and its kind of SK where shapes
        tell."""
        if not all(any(re.search(marker, key) for key in state) for marker in self.markers):
            return False
        split = splits_input(state) if self.split_input is not None else None
        return split is None or split == self.split_input


_SK_MARKER = r"\.block\d+\.sk\.branch\d+\.conv\.weight$"

# Source families by origin (`--from`). The family of a state dict is the one whose rules map
# the most of its keys; on a tie, the first listed whose modules and SK kind it has (under the
# rules' targets), else the first listed: ResNeXt before SE-ResNeXt (plain ResNeXt weights match
# both tables fully), SK-ResNeXt before SK-ResNet (the same keys; grouped or split, the shapes
# tell). In hints, the last one listed that a spec is built into is its family (SE and SK units
# have a conv3 too; a ResNet-D spec has SK-ResNet's bottlenecks). register_family puts a family
# before these, so that it wins a tie.
FAMILIES: dict[str, tuple[Family, ...]] = {
    "timm": (
        Family("resnext", "ResNeXt", "resnext_unit", SKELETON + BOTTLENECK,
               (r"\.block\d+\.conv3\.conv\.weight$",), ("resnext*",),
               grouped="layer1.0.conv2.weight"),
        Family("seresnext", "SE-ResNeXt", "se_unit", SKELETON + BOTTLENECK + SQUEEZE_EXCITE,
               (r"\.block\d+\.se\.reduce\.weight$",), ("seresnext*",),
               grouped="layer1.0.conv2.weight"),
        Family("skresnext", "SK-ResNeXt", "sk_unit", SKELETON + SK_BOTTLENECK,
               (_SK_MARKER,), ("skresnext*",), grouped="layer1.0.conv2.paths.0.conv.weight",
               split_input=False),
        Family("skresnet-basic", "SK-ResNet", "sk_basic", SKELETON + SK_BASIC,
               (_SK_MARKER, r"\.block\d+\.conv\.conv\.weight$"), ("skresnet18", "skresnet34"),
               library="std/resnet.sk", unit_layers=2, split_input=True, prefix="skresnet"),
        Family("skresnet", "SK-ResNet", "sk_bottleneck", SKELETON + SK_BOTTLENECK,
               (_SK_MARKER, r"\.block\d+\.conv2\.conv\.weight$"), ("skresnet50",),
               library="std/resnet.sk", also=" and a 7×7 stem", split_input=True),
        Family("skresnet-d", "SK-ResNet-D", "sk_bottleneck", SKELETON_D + SK_BOTTLENECK,
               (_SK_MARKER, r"^conv1\.conv3\.conv\.weight$"), ("skresnet50d",),
               library="std/resnet.sk",
               also=" with avg_down=yes and a deep stem of three 3×3 convs", suffix="d",
               split_input=True, prefix="skresnet"),
        Family("ecaresnet-d", "ECA-ResNet-D", "attn_bottleneck",
               SKELETON_D + BOTTLENECK + ECA_ATTENTION,
               (r"\.attention\.gate\.channel_conv\.weight$", r"^conv1\.conv3\.conv\.weight$"),
               ("ecaresnet26t", "ecaresnet50d", "ecaresnet101d"), library="std/resnet.sk",
               also=" with attn=eca, avg_down=yes and a deep stem of three 3×3 convs",
               suffix="d", prefix="ecaresnet"),
        Family("seresnext-d", "SE-ResNeXt-D", "attn_bottleneck",
               SKELETON_D + BOTTLENECK + SE_ATTENTION,
               (r"\.attention\.se\.reduce\.weight$", r"^conv1\.conv3\.conv\.weight$"),
               ("seresnext26d_32x4d", "seresnext26t_32x4d"), library="std/resnet.sk",
               also=" with attn=se, avg_down=yes and a deep stem of three 3×3 convs",
               suffix="d", grouped="layer1.0.conv2.weight", prefix="seresnext"),
        Family("resnest-d", "ResNeSt-D", "resnest_bottleneck", SKELETON_D + RESNEST,
               (r"\.splat\.sk\.logits\.weight$", r"^conv1\.conv3\.conv\.weight$"),
               ("resnest14d", "resnest26d", "resnest50d"), library="std/resnet.sk",
               also=" and a deep stem of three 3×3 convs", suffix="d", prefix="resnest"),
    ),
}


def families_of(origin: str, extra: Iterable[Family] = (),
                setting: str = "origin") -> tuple[Family, ...]:
    """The families of `origin` a conversion tries, in order: `extra` (rule files given to this
    call), then the registered ones (register_family, then the built-in tables). `setting`
    names the library in an error: `origin` (convert) or `to` (export)."""
    extra = tuple(extra)
    found = tuple(family for family in extra if family.origin == origin)
    found += FAMILIES.get(origin, ())
    if not found:
        known = sorted(set(FAMILIES) | {family.origin for family in extra})
        raise WeightsError(f"{{{setting}}} {origin!r}: skdsl knows the weights of "
                           f"{', '.join(known)}", code="SK523",
                           hint="describe another library's families in a rule file, given "
                                "with {rules} (docs/weights.md)")
    return found


def find_family(name: str, origin: str, extra: Iterable[Family] = ()) -> Family:
    """The family of `origin` called `name` (--family), or a WeightsError listing them."""
    candidates = families_of(origin, extra)
    for family in candidates:
        if family.name == name:
            return family
    raise WeightsError(f"{{family}} {name!r}: {origin} has no such family", code="SK523",
                       hint=f"name one of {', '.join(f.name for f in candidates)}, or give "
                            f"its rule file with {{rules}}")


def register_family(family: Family) -> Family:
    """Add `family` to FAMILIES (before the families of its origin already there, so that it
    wins a tie); registering an equal family again does nothing. A WeightsError (SK528) when
    another family of its origin has its name."""
    known = FAMILIES.get(family.origin, ())
    if family in known:
        return family
    taken = next((other for other in known if other.name == family.name), None)
    if taken is not None:
        raise WeightsError(f"a {family.origin} family named {family.name!r} is registered "
                           f"already ({taken.title})", code="SK528",
                           hint="give the new family another name")
    FAMILIES[family.origin] = (family, *known)
    return family


__all__ = ["WeightsError", "WORDS", "Split", "Rule", "Family", "FAMILIES", "families_of",
           "find_family", "register_family", "splits_input"]
