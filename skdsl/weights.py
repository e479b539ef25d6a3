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

from .loading import SettingError

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


# The torchvision-style ResNet skeleton all three timm families share: a 7×7 stem conv + BN
# (skdsl: stage conv1, layer `conv`), stages layer1-4 (skdsl: stages conv2-conv5, each unit
# a `blockN`), a 1×1 conv + BN projection shortcut (`downsample`) and the classifier `fc`.
_SKELETON = (
    Rule("conv1.weight", "conv1.conv.conv.weight"),
    Rule("bn1.{p:tensor}", "conv1.conv.bn.{p}"),
    Rule("layer{s}.{b}.downsample.0.{p:tensor}", _block("shortcut.conv.{p}")),
    Rule("layer{s}.{b}.downsample.1.{p:tensor}", _block("shortcut.bn.{p}")),
    Rule("fc.{p:tensor}", "head.fc.{p}"),
)

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

# timm's SelectiveKernelBottleneck: conv1 and conv3 are ConvNormAct (conv + bn); conv2 is the
# SK convolution with `paths` (branch M has dilation M) and `attn` (fc_reduce, bn, fc_select,
# whose M·C outputs are path-major, as skdsl's `logits`). skdsl names the 1×1 after the SK
# unit `conv2`: it is the unit's second conv layer.
_SELECTIVE_KERNEL = (
    Rule("layer{s}.{b}.conv1.{l:conv_or_bn}.{p:tensor}", _block("conv1.{l}.{p}")),
    Rule("layer{s}.{b}.conv2.paths.{m}.{l:conv_or_bn}.{p:tensor}",
         _block("sk.branch{m+1}.{l}.{p}")),
    Rule("layer{s}.{b}.conv2.attn.fc_reduce.{p:tensor}", _block("sk.reduce.conv.{p}")),
    Rule("layer{s}.{b}.conv2.attn.bn.{p:tensor}", _block("sk.reduce.bn.{p}")),
    Rule("layer{s}.{b}.conv2.attn.fc_select.{p:tensor}", _block("sk.logits.{p}")),
    Rule("layer{s}.{b}.conv3.{l:conv_or_bn}.{p:tensor}", _block("conv2.{l}.{p}")),
)


@dataclass(frozen=True)
class Family:
    """One kind of source network: its rule table, and how to recognise its skdsl counterpart."""

    name: str      # timm's model name prefix, completed by the depth: skresnext -> skresnext50
    title: str     # for messages: "SK-ResNeXt"
    block: str     # the std/resnext.sk block a spec uses for it
    rules: tuple[Rule, ...]
    marker: str    # a regex that the compiled spec's keys match when it is built of `block`
    grouped: str   # the first unit's grouped 3×3 weight: its shape gives cardinality × width

    def depth(self, keys) -> int | None:
        """The network's depth from its units (3 layers each, plus the stem and the fc)."""
        units = {match.groups() for match in map(_LAYER_BLOCK.match, keys) if match}
        return 2 + 3 * len(units) if units else None

    def model_name(self, state) -> str:
        """timm's name for a state dict of this family, as far as it tells: `skresnext50_32x4d`
        (from keys alone, without shapes: `skresnext50`)."""
        depth = self.depth(state)
        name = f"{self.name}{depth}" if depth else self.name
        weight = state.get(self.grouped) if isinstance(state, Mapping) else None
        shape = getattr(weight, "shape", None)
        if shape is not None and len(shape) == 4 and shape[1] and shape[0] % shape[1] == 0:
            name += f"_{shape[0] // shape[1]}x{shape[1]}d"  # out = in = groups × group width
        return name


_LAYER_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.")

# Source families by origin (`--from`); on a tie the first one listed wins (ResNeXt before
# SE-ResNeXt: plain ResNeXt weights match both tables fully).
FAMILIES: dict[str, tuple[Family, ...]] = {
    "timm": (
        Family("resnext", "ResNeXt", "resnext_unit", _SKELETON + _BOTTLENECK,
               r"\.block\d+\.conv3\.conv\.weight$", "layer1.0.conv2.weight"),
        Family("seresnext", "SE-ResNeXt", "se_unit", _SKELETON + _BOTTLENECK + _SQUEEZE_EXCITE,
               r"\.block\d+\.se\.reduce\.weight$", "layer1.0.conv2.weight"),
        Family("skresnext", "SK-ResNeXt", "sk_unit", _SKELETON + _SELECTIVE_KERNEL,
               r"\.block\d+\.sk\.branch\d+\.conv\.weight$",
               "layer1.0.conv2.paths.0.conv.weight"),
    ),
}


# -- mapping ----------------------------------------------------------------------------------


@dataclass
class Plan:
    """How a source state dict maps onto a target one, and everything that does not fit."""

    family: Family
    source_model: str                                              # timm's name, as far as known
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
    """The family of `origin` whose rules explain the most source keys."""
    keys = list(keys)
    scores = [(sum(target is not None for target in map_keys(family, keys).values()), family)
              for family in FAMILIES[origin]]
    best = max(score for score, _ in scores)
    if best == 0:
        known = ", ".join(f"{f.title} ({f.name}50…)" for f in FAMILIES[origin])
        raise WeightsError(f"these weights are of no {origin} family skdsl knows: no key of them "
                       f"(such as '{keys[0] if keys else '?'}') matches a rule", code="SK523",
                       hint=f"skdsl converts {origin}'s {known}")
    return next(family for score, family in scores if score == best)


def plan(source: Mapping[str, "Tensor"], target: Mapping[str, "Tensor"],
         origin: str = "timm") -> Plan:
    """Map `source` (a foreign state dict) onto `target` (the compiled module's state dict)."""
    family = detect_family(source, origin)
    result = Plan(family, family.model_name(source))
    sources_of: dict[str, list[str]] = {}
    for key, destination in map_keys(family, source).items():
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
    model = f"{origin} {mapping.source_model}"
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
        message = f"{model} weights do not fit {spec_name} key for key"
        code = "SK524"
    else:
        message = f"{model} weights do not fit {spec_name}: {len(mapping.shapes)} shapes differ"
        code = "SK525"
    hint = _family_hint(mapping, source, target, origin, spec_name)
    return WeightsError(message + "\n" + "\n".join(lines), code=code, hint=hint)


def _family_hint(mapping: Plan, source, target, origin: str, spec_name: str) -> str:
    spec_families = [family for family in FAMILIES[origin]
                     if any(re.search(family.marker, key) for key in target)]
    family = mapping.family
    if spec_families and family is not spec_families[-1]:
        other = spec_families[-1]  # the most specific: SE and SK units have a conv3 too
        return (f"{spec_name} is built of {other.block} blocks and these weights are "
                f"{family.title}: convert {origin}'s {other.name}* weights for it, or use a spec "
                f"of {family.block} blocks")
    if mapping.shapes and not (mapping.missing or mapping.absent):
        return (f"{spec_name} has the modules of these weights but other widths: check its "
                f"widths, groups, reduction and classes against {mapping.source_model}")
    return (f"skdsl maps {origin}'s {family.title} onto specs of std/resnext.sk's "
            f"{family.block}, with stages conv1 (stem), conv2-conv5 and head (docs/weights.md)")


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
    import skdsl

    from . import state_io

    if origin not in FAMILIES:
        raise WeightsError(f"{{origin}} {origin!r}: skdsl converts weights from "
                           f"{', '.join(FAMILIES)}", code="SK523")
    unwritable = state_io.check_writable(output_path)  # before reading and compiling
    if unwritable:
        raise _unwritable(output_path, unwritable)
    model = skdsl.compile(spec)
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
