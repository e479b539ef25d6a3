"""Weights interop: published state dicts mapped onto the compiled module of a spec.

    skdsl weights convert --from timm specs/sknet50.sk skresnext50_32x4d.pth sknet50.pt

A source family is a rule table: each rule turns one pattern of source keys into one module
path of the compiled spec (`layer2.0.conv2.paths.1.conv.weight` -> `conv3.block1.sk.branch2.conv.
weight`). The family is the table that explains the most source keys. The mapping is all or
nothing: every source tensor lands on exactly one parameter or buffer of the same shape and every
parameter and buffer of the compiled module is filled, or the command names each key that does
not fit (exit status 2) and writes nothing. The output is a plain state dict of the compiled
module, `model.load_state_dict(torch.load(OUT, weights_only=True))`.

Equal keys and shapes do not prove equal wiring; `benchmarks/timm_equality.py` compares the
outputs of timm's models and the compiled specs on the same input (docs/weights.md).

Errors (WeightsError, exit status 2): SK520 no input file, SK521 the input cannot be read, SK522
it holds no state dict, SK523 it is of no known family, SK524 keys that do not correspond, SK525
shapes that differ, SK526 the output cannot be written, SK527 no head to skip. The command is
skdsl/commands/weights.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..base.errors import declare_settings
from ..base.errors import SettingError

declare_settings("origin", "skip_head")

if TYPE_CHECKING:
    from torch import Tensor

class WeightsError(SettingError):
    """Weights that cannot be converted onto a spec, or written."""

    code = "SK520"


# -- rule tables ----------------------------------------------------------------------------------

# The words a `{name:word}` field may take, by word.
WORDS: dict[str, tuple[str, ...]] = {
    # every tensor of a conv, linear or batch norm module
    "tensor": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
    "conv_or_bn": ("conv", "bn"),
    "conv_index": ("1", "2", "3"),
}

_FIELD = re.compile(r"\{(\w+)(?::(\w+))?\}")
_TARGET_FIELD = re.compile(r"\{(\w+)(?:([+-])(\d+))?\}")


@dataclass(frozen=True)
class Rule:
    """One source key pattern and the target module path it maps to.

    In `source`, `{name}` matches a non-negative integer and `{name:word}` one of WORDS[word];
    everything else is literal. In `target`, `{name}` is the matched text and `{name+N}` the
    matched integer plus N (timm counts stages and blocks from 0, skdsl's specs from 1).
    """

    source: str
    target: str

    def __post_init__(self):
        parts, position = [], 0
        for match in _FIELD.finditer(self.source):
            parts.append(re.escape(self.source[position:match.start()]))
            name, word = match.groups()
            alternatives = r"\d+" if word is None else "|".join(map(re.escape, WORDS[word]))
            parts.append(f"(?P<{name}>{alternatives})")
            position = match.end()
        parts.append(re.escape(self.source[position:]))
        object.__setattr__(self, "_pattern", re.compile("".join(parts)))
        names = set(self._pattern.groupindex)
        unknown = {m.group(1) for m in _TARGET_FIELD.finditer(self.target)} - names
        if unknown:
            raise ValueError(f"rule {self.source!r}: target names unknown fields {unknown}")

    def apply(self, key: str) -> str | None:
        """The target of `key`, or None when this rule does not match it."""
        match = self._pattern.fullmatch(key)
        if match is None:
            return None

        def fill(field_: re.Match) -> str:
            name, sign, offset = field_.groups()
            value = match.group(name)
            if sign is None:
                return value
            return str(int(value) + int(offset) * (1 if sign == "+" else -1))

        return _TARGET_FIELD.sub(fill, self.target)


def _block(rest: str) -> str:
    """A target inside the unit of timm's `layer{s}.{b}`: skdsl's stage conv{s+1}, block{b+1}."""
    return "conv{s+1}.block{b+1}." + rest


# The torchvision-style ResNet skeleton timm's families share: a 7×7 stem conv + BN (skdsl:
# stage conv1, layer `conv`), stages layer1-4 (skdsl: stages conv2-conv5, each unit a
# `blockN`), a 1×1 conv + BN projection shortcut (`downsample`) and the classifier `fc`.
_STEM = (
    Rule("conv1.weight", "conv1.conv.conv.weight"),
    Rule("bn1.{p:tensor}", "conv1.conv.bn.{p}"),
)
_PROJECTION = (
    Rule("layer{s}.{b}.downsample.0.{p:tensor}", _block("shortcut.conv.{p}")),
    Rule("layer{s}.{b}.downsample.1.{p:tensor}", _block("shortcut.bn.{p}")),
)
_CLASSIFIER = (Rule("fc.{p:tensor}", "head.fc.{p}"),)
_SKELETON = _STEM + _PROJECTION + _CLASSIFIER

# ResNet-D's skeleton (timm's stem_type='deep', avg_down=True): the stem is a Sequential of
# three 3×3 convs (0, 3, 6) with BNs (1, 4; the third's is `bn1`) and ReLUs (2, 5) between;
# the shortcut is downsample_avg, a Sequential of an AvgPool2d (an Identity where the unit
# does not stride; either has no tensors), a 1×1 conv and a BN: skdsl's explicit `shortcut:`,
# whose 1×1 conv layer is `shortcut.conv`.
_DEEP_STEM = (
    Rule("conv1.0.weight", "conv1.conv1.conv.weight"),
    Rule("conv1.1.{p:tensor}", "conv1.conv1.bn.{p}"),
    Rule("conv1.3.weight", "conv1.conv2.conv.weight"),
    Rule("conv1.4.{p:tensor}", "conv1.conv2.bn.{p}"),
    Rule("conv1.6.weight", "conv1.conv3.conv.weight"),
    Rule("bn1.{p:tensor}", "conv1.conv3.bn.{p}"),
)
_AVERAGE_DOWN = (
    Rule("layer{s}.{b}.downsample.1.weight", _block("shortcut.conv.conv.weight")),
    Rule("layer{s}.{b}.downsample.2.{p:tensor}", _block("shortcut.conv.bn.{p}")),
)
_SKELETON_D = _DEEP_STEM + _AVERAGE_DOWN + _CLASSIFIER

# timm's Bottleneck: conv1/bn1 1×1 reduce, conv2/bn2 3×3 grouped, conv3/bn3 1×1 expand.
_BOTTLENECK = (
    Rule("layer{s}.{b}.conv{i:conv_index}.{p:tensor}", _block("conv{i}.conv.{p}")),
    Rule("layer{s}.{b}.bn{i:conv_index}.{p:tensor}", _block("conv{i}.bn.{p}")),
)

# timm's SEModule (attn_layer='se'): fc1 reduce and fc2 expand, 1×1 convs with bias.
_SQUEEZE_EXCITE = (
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
_SK_BOTTLENECK = (_conv_norm_act("conv1", "conv1"), *_selective_kernel("conv2"),
                  _conv_norm_act("conv3", "conv2"))

# timm's SelectiveKernelBasic: conv1 is the SK convolution, conv2 a 3×3 ConvNormAct, skdsl's
# `conv` (the unit's only conv layer besides the SK).
_SK_BASIC = (*_selective_kernel("conv1"), _conv_norm_act("conv2", "conv"))

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


@dataclass(frozen=True)
class Family:
    """One kind of source network: its rule table, and how to recognise its skdsl counterpart."""

    name: str      # timm's model name prefix, completed by the depth: skresnext -> skresnext50
    title: str     # for messages: "SK-ResNeXt"
    block: str     # the skdsl block a spec uses for it
    rules: tuple[Rule, ...]
    markers: tuple[str, ...]  # regexes, each matched by a key of a spec built of `block`
    models: str    # timm's models of this family, as hints name them: "skresnext*"
    library: str = "std/resnext.sk"  # where `block` is defined
    also: str = ""            # what such a spec has besides `block` units, for hints
    unit_layers: int = 3      # weighted layers of a unit: 3 in a bottleneck, 2 in a basic unit
    suffix: str = ""          # after the depth: "d" for ResNet-D
    grouped: str | None = None  # the first unit's grouped 3×3 weight: cardinality × width
    split: bool | None = None   # whether its SK convolutions split their input (timm's split_input)

    def depth(self, keys) -> int | None:
        """The network's depth from its units (`unit_layers` each, plus the stem and the fc)."""
        units = {match.groups() for match in map(_LAYER_BLOCK.match, keys) if match}
        return 2 + self.unit_layers * len(units) if units else None

    def model_name(self, state) -> str:
        """timm's name for a state dict of this family, as far as it tells: `skresnext50_32x4d`
        (from keys alone, without shapes: `skresnext50`), `skresnet18`, `skresnet50d`."""
        depth = self.depth(state)
        name = f"{self.name}{depth}{self.suffix}" if depth else self.name
        weight = state.get(self.grouped) if self.grouped and isinstance(state, Mapping) else None
        shape = getattr(weight, "shape", None)
        if shape is not None and len(shape) == 4 and shape[1] and shape[0] % shape[1] == 0:
            name += f"_{shape[0] // shape[1]}x{shape[1]}d"  # out = in = groups × group width
        return name

    @property
    def built_of(self) -> str:
        """How a spec of this family is built, for hints: "sk_unit blocks"."""
        return f"{self.block} blocks{self.also}"

    def built_into(self, state) -> bool:
        """Whether `state` (skdsl keys: a compiled spec's state dict, or a source one under
        these rules' targets) has this family's modules, and its kind of SK where shapes
        tell."""
        if not all(any(re.search(marker, key) for key in state) for marker in self.markers):
            return False
        split = splits_input(state) if self.split is not None else None
        return split is None or split == self.split


_LAYER_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.")
_SK_MARKER = r"\.block\d+\.sk\.branch\d+\.conv\.weight$"

# Source families by origin (`--from`). The family of a state dict is the one whose rules map
# the most of its keys; on a tie, the first listed whose modules and SK kind it has (under the
# rules' targets), else the first listed: ResNeXt before SE-ResNeXt (plain ResNeXt weights match
# both tables fully), SK-ResNeXt before SK-ResNet (the same keys; grouped or split, the shapes
# tell). In hints, the last one listed that a spec is built into is its family (SE and SK units
# have a conv3 too; a ResNet-D spec has SK-ResNet's bottlenecks).
FAMILIES: dict[str, tuple[Family, ...]] = {
    "timm": (
        Family("resnext", "ResNeXt", "resnext_unit", _SKELETON + _BOTTLENECK,
               (r"\.block\d+\.conv3\.conv\.weight$",), "resnext*",
               grouped="layer1.0.conv2.weight"),
        Family("seresnext", "SE-ResNeXt", "se_unit", _SKELETON + _BOTTLENECK + _SQUEEZE_EXCITE,
               (r"\.block\d+\.se\.reduce\.weight$",), "seresnext*",
               grouped="layer1.0.conv2.weight"),
        Family("skresnext", "SK-ResNeXt", "sk_unit", _SKELETON + _SK_BOTTLENECK,
               (_SK_MARKER,), "skresnext*", grouped="layer1.0.conv2.paths.0.conv.weight",
               split=False),
        Family("skresnet", "SK-ResNet", "sk_basic", _SKELETON + _SK_BASIC,
               (_SK_MARKER, r"\.block\d+\.conv\.conv\.weight$"), "skresnet18, skresnet34",
               library="std/resnet.sk", unit_layers=2, split=True),
        Family("skresnet", "SK-ResNet", "sk_bottleneck", _SKELETON + _SK_BOTTLENECK,
               (_SK_MARKER, r"\.block\d+\.conv2\.conv\.weight$"), "skresnet50",
               library="std/resnet.sk", also=" and a 7×7 stem", split=True),
        Family("skresnet", "SK-ResNet-D", "sk_bottleneck", _SKELETON_D + _SK_BOTTLENECK,
               (_SK_MARKER, r"^conv1\.conv3\.conv\.weight$"), "skresnet50d",
               library="std/resnet.sk",
               also=" with avg_down=yes and a deep stem of three 3×3 convs", suffix="d",
               split=True),
    ),
}


# -- mapping ----------------------------------------------------------------------------------


@dataclass
class Plan:
    """How a source state dict maps onto a target one, and everything that does not fit."""

    family: Family
    source_model: str                                              # timm's name, as far as known
    recognised: bool = True   # whether the weights have the family's modules, not just its keys
    pairs: dict[str, str] = field(default_factory=dict)           # source key -> target key
    unmatched: list[str] = field(default_factory=list)            # source keys no rule maps
    absent: dict[str, str] = field(default_factory=dict)          # source -> target not in spec
    collisions: dict[str, list[str]] = field(default_factory=dict)  # target -> its sources
    missing: list[str] = field(default_factory=list)              # targets no source fills
    shapes: dict[str, tuple[str, tuple, tuple]] = field(default_factory=dict)  # source -> ...

    @property
    def fits(self) -> bool:
        return not (self.unmatched or self.absent or self.collisions or self.missing
                    or self.shapes)


def map_keys(family: Family, keys) -> dict[str, str | None]:
    """Each source key's target under `family`'s rules (None where no rule matches)."""
    mapped: dict[str, str | None] = {}
    for key in keys:
        mapped[key] = next((target for rule in family.rules
                            if (target := rule.apply(key)) is not None), None)
    return mapped


def detect_family(keys, origin: str = "timm") -> Family:
    """The family of `origin` whose rules explain the most source keys; on a tie, the first
    whose modules and kind of SK the state dict has (`Family.built_into` of it under the rules'
    targets: shapes tell skresnext's grouped SK from skresnet's split one), else the first."""
    state = keys if isinstance(keys, Mapping) else dict.fromkeys(keys)
    scored = [(family, map_keys(family, state)) for family in FAMILIES[origin]]
    scores = [sum(target is not None for target in mapped.values()) for _, mapped in scored]
    best = max(scores)
    if best == 0:
        raise WeightsError(f"these weights are of no {origin} family skdsl knows: no key of them "
                           f"(such as '{next(iter(state), '?')}') matches a rule", code="SK523",
                           hint=f"skdsl converts {origin}'s {_known(origin)}")
    tied = [(family, mapped) for (family, mapped), score in zip(scored, scores) if score == best]
    return next((family for family, mapped in tied
                 if family.built_into(_under_targets(state, mapped))), tied[0][0])


def _under_targets(state: Mapping, mapped: Mapping[str, str | None]) -> dict:
    """`state` keyed by its targets (skdsl keys), where a rule maps them."""
    return {target: state[key] for key, target in mapped.items() if target is not None}


def _known(origin: str) -> str:
    """`origin`'s families and their models, for hints: "ResNeXt (resnext*), …"."""
    models: dict[str, list[str]] = {}
    for family in FAMILIES[origin]:
        models.setdefault(family.title, []).append(family.models)
    return ", ".join(f"{title} ({', '.join(names)})" for title, names in models.items())


def plan(source: Mapping[str, "Tensor"], target: Mapping[str, "Tensor"],
         origin: str = "timm") -> Plan:
    """Map `source` (a foreign state dict) onto `target` (the compiled module's state dict)."""
    family = detect_family(source, origin)
    mapped = map_keys(family, source)
    # Weights that only the skeleton and shared rules explain (timm's resnet18 under ResNeXt's
    # rules: no unit has a conv3) are of no family skdsl knows: no depth or name is made up.
    if family.built_into(_under_targets(source, mapped)):
        result = Plan(family, family.model_name(source))
    else:
        result = Plan(family, f"{family.title}-like", recognised=False)
    sources_of: dict[str, list[str]] = {}
    for key, destination in mapped.items():
        if destination is None:
            result.unmatched.append(key)
        elif destination not in target:
            result.absent[key] = destination
        else:
            sources_of.setdefault(destination, []).append(key)
            result.pairs[key] = destination
    result.collisions = {dst: keys for dst, keys in sources_of.items() if len(keys) > 1}
    result.missing = [key for key in target if key not in sources_of]
    for key, destination in result.pairs.items():
        have, want = tuple(source[key].shape), tuple(target[destination].shape)
        if have != want:
            result.shapes[key] = (destination, have, want)
    return result


def convert_state_dict(source: Mapping[str, "Tensor"], target: Mapping[str, "Tensor"],
                       origin: str = "timm", spec_name: str = "the spec") -> dict[str, "Tensor"]:
    """The target-keyed state dict holding `source`'s tensors (cast to the target's dtypes), in
    the target's order; a WeightsError (SK524/SK525) naming every key that does not fit."""
    return _convert(source, target, origin, spec_name)[1]


def _convert(source, target, origin: str, spec_name: str) -> tuple[Plan, dict[str, "Tensor"]]:
    mapping = plan(source, target, origin)
    if not mapping.fits:
        raise _misfit(mapping, source, target, origin, spec_name)
    by_target = {destination: key for key, destination in mapping.pairs.items()}
    converted = {}
    for name, reference in target.items():
        tensor = source[by_target[name]].detach().to(device="cpu", dtype=reference.dtype)
        converted[name] = tensor.clone().contiguous()
    return mapping, converted


_SHOWN = 8  # keys listed per kind of problem


def _misfit(mapping: Plan, source, target, origin: str, spec_name: str) -> WeightsError:
    family = mapping.family
    weights = f"{origin} {mapping.source_model} weights"
    if not mapping.recognised:
        weights += ", of no family skdsl knows,"
    lines: list[str] = []

    def section(title: str, items: list[str]) -> None:
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {item}" for item in items[:_SHOWN])
            if len(items) > _SHOWN:
                lines.append(f"    … and {len(items) - _SHOWN} more")

    section(f"in the weights, mapped by no {family.title} rule",
            mapping.unmatched)
    section(f"in the weights, mapped to a module path that {spec_name} lacks",
            [f"{key} -> {dst}" for key, dst in mapping.absent.items()])
    section("in the weights, several mapped to one target",
            [f"{' + '.join(keys)} -> {dst}" for dst, keys in mapping.collisions.items()])
    section(f"in {spec_name}, filled by no tensor of the weights", mapping.missing)
    section("of another shape",
            [f"{key} {_shape(have)} -> {dst} {_shape(want)}"
             for key, (dst, have, want) in mapping.shapes.items()])
    keyed = mapping.unmatched or mapping.absent or mapping.collisions or mapping.missing
    if keyed:
        message = f"{weights} do not fit {spec_name} key for key"
        code = "SK524"
    else:
        message = f"{weights} do not fit {spec_name}: {len(mapping.shapes)} shapes differ"
        code = "SK525"
    hint = _family_hint(mapping, source, target, origin, spec_name)
    return WeightsError(message + "\n" + "\n".join(lines), code=code, hint=hint)


def _family_hint(mapping: Plan, source, target, origin: str, spec_name: str) -> str:
    spec_families = [family for family in FAMILIES[origin] if family.built_into(target)]
    family = mapping.family
    if spec_families and not mapping.recognised:
        other = spec_families[-1]
        return (f"{spec_name} is built of {other.built_of}: convert {origin}'s {other.models} "
                f"weights for it (skdsl converts {_known(origin)})")
    if spec_families and family is not spec_families[-1]:
        other = spec_families[-1]  # the most specific: SE and SK units have a conv3 too
        return (f"{spec_name} is built of {other.built_of} and these weights are "
                f"{family.title}: convert {origin}'s {other.models} weights for it, or use a "
                f"spec of {family.built_of}")
    if mapping.shapes and not (mapping.missing or mapping.absent):
        return (f"{spec_name} has the modules of these weights but other widths: check its "
                f"widths, groups, reduction and classes against {mapping.source_model}")
    return (f"skdsl maps {origin}'s {family.title} onto specs of {family.library}'s "
            f"{family.built_of}, with stages conv1 (stem), conv2-conv5 and head "
            f"(docs/weights.md)")


def _shape(shape: tuple) -> str:
    return "(" + "×".join(map(str, shape)) + ")" if shape else "(scalar)"


# -- files ----------------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, "Tensor"]:
    """The state dict in a torch file: a raw one, or one under 'state_dict' or 'model'
    (training checkpoints), without wrapper prefixes ('module.', '_orig_mod.', 'model.').
    Never unpickles Python objects (state_io.read: weights only)."""
    from . import state_io

    return state_io.state_dict_in(state_io.read(path, state_io.WEIGHTS), path, state_io.WEIGHTS)


def write_state_dict(state: Mapping[str, "Tensor"], path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, then an atomic rename: `path` is never
    left half written, and on an error nothing is left behind."""
    from . import state_io

    try:
        state_io.write(dict(state), path)
    except OSError as error:
        raise _unwritable(path, error.strerror or str(error)) from None


def _unwritable(path: str | Path, why: str) -> WeightsError:
    return WeightsError(f"cannot write '{path}': {why}", code="SK526")


@dataclass
class Conversion:
    """A written conversion: how the keys mapped, the state dict, the module's parameter count."""

    plan: Plan
    state_dict: dict[str, "Tensor"]
    parameters: int

    @property
    def source_model(self) -> str:
        return self.plan.source_model


def convert(spec, source_path: str | Path, output_path: str | Path, origin: str = "timm",
            spec_name: str | None = None, skip_head: bool = False) -> Conversion:
    """Read `source_path`, map it onto the compiled `spec` (a `Network`) and write
    `output_path` atomically. Nothing is written on an error. `skip_head`: the classifier (the
    last linear layer) is neither read nor written, for fine-tuning to other classes."""
    from . import state_io
    from .compiler import compile as compile_network

    if origin not in FAMILIES:
        raise WeightsError(f"{{origin}} {origin!r}: skdsl converts weights from "
                           f"{', '.join(FAMILIES)}", code="SK523")
    unwritable = state_io.check_writable(output_path)  # before reading and compiling
    if unwritable:
        raise _unwritable(output_path, unwritable)
    model = compile_network(spec)
    target = model.state_dict()
    spec_name = spec_name or f"spec '{spec.name}'"
    head = state_io.head_keys(model)
    if skip_head and not head:
        raise WeightsError(f"{{skip_head}}: {spec_name} has no classifier head (a final fc "
                           f"layer) to skip", code="SK527", hint="convert without {skip_head}")
    source = read_state_dict(source_path)
    if skip_head:
        source, target = _without_head(source, target, head, origin)
    mapping, converted = _convert(source, target, origin, spec_name)
    write_state_dict(converted, output_path)
    return Conversion(mapping, converted, sum(p.numel() for p in model.parameters()))


def _without_head(source, target, head: frozenset[str], origin: str):
    """`source` without the tensors that map onto the head, `target` without the head."""
    family = detect_family(source, origin)
    mapped = map_keys(family, source)
    return ({key: value for key, value in source.items() if mapped[key] not in head},
            {key: value for key, value in target.items() if key not in head})


__all__ = ["Rule", "Family", "FAMILIES", "WORDS", "Plan", "map_keys", "detect_family", "plan",
           "convert_state_dict", "read_state_dict", "write_state_dict", "Conversion", "convert",
           "WeightsError"]
