"""Weights interop: published state dicts mapped onto the compiled module of a spec, and back.

    skdsl weights convert --from timm specs/sknet50.sk skresnext50_32x4d.pth sknet50.pt
    skdsl weights export --to timm specs/sknet50.sk sknet50.pt skresnext50_32x4d.safetensors

A source family is a rule table (weight_rules.py; rule files add more, weight_rule_files.py):
each rule turns one pattern of source keys into one module path of the compiled spec
(`layer2.0.conv2.paths.1.conv.weight` -> `conv3.block1.sk.branch2.conv.weight`), or one source
tensor into several, its chunks along an axis (a `Split`). The family is the table that explains
the most source keys. The mapping is all or nothing: every source tensor lands on parameters or
buffers of its shape and every parameter and buffer of the compiled module is filled, or the
error names each key that does not fit (exit status 2) and nothing is written. Export runs the
same rules backwards, and checks that they lead forwards to where they came from.

Equal keys and shapes do not prove equal wiring; `benchmarks/timm_equality.py` compares the
outputs of timm's models and the compiled specs on the same input (docs/weights.md).

Errors (WeightsError, exit status 2): SK520 no input file, SK521 the input cannot be read, SK522
it holds no state dict, SK523 it is of no known family (or names an unknown library or family),
SK524 keys that do not correspond, SK525 shapes that differ, SK526 the output cannot be written,
SK527 no head to skip, SK528 a rule table or file that cannot be used, SK529 the safetensors
package is missing. The commands are in skdsl/commands/weights.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from .weight_rule_files import dump_rules, load_rules
from .weight_rules import (FAMILIES, WORDS, Family, Rule, Split, WeightsError, families_of,
                           find_family, register_family, splits_input)

if TYPE_CHECKING:
    from torch import Tensor

FORMATS = ("torch", "safetensors")


# -- mapping ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A source tensor and the skdsl tensors it is: one, or a split's chunks along `axis`."""

    source: str
    targets: tuple[str, ...]  # none: its target is not in the spec
    axis: int | None = None   # a split's axis; None: one to one
    shown: str = ""           # the targets in one line, for messages

    @property
    def label(self) -> str:
        return self.shown or self.targets[0]


@dataclass
class Plan:
    """How a source state dict maps onto a target one, and everything that does not fit."""

    family: Family
    source_model: str                                   # timm's name, as far as known
    recognised: bool = True   # whether the weights have the family's modules, not just its keys
    total: int = 0                                      # source keys
    mapped: int = 0                                     # of them, those the family's rules map
    others: dict[str, int] = field(default_factory=dict)  # keys other families map, by title
    links: dict[str, Link] = field(default_factory=dict)  # source key -> its targets
    unmatched: list[str] = field(default_factory=list)  # source keys no rule maps
    absent: dict[str, str] = field(default_factory=dict)  # source -> target not in spec
    collisions: dict[str, list[str]] = field(default_factory=dict)  # target -> its sources
    missing: list[str] = field(default_factory=list)    # targets no source fills
    shapes: dict[str, tuple[str, tuple, tuple | None]] = field(default_factory=dict)

    @property
    def pairs(self) -> dict[str, str]:
        """Source key -> target key, of the one-to-one links."""
        return {key: link.targets[0] for key, link in self.links.items() if link.axis is None}

    @property
    def partial(self) -> bool:
        """Whether some source keys are of no rule of the family: its name is then not given."""
        return self.mapped < self.total

    @property
    def keyed(self) -> bool:
        return bool(self.unmatched or self.absent or self.collisions or self.missing)

    @property
    def fits(self) -> bool:
        return not (self.keyed or self.shapes)


def _match(family: Family, key: str) -> tuple[Rule, dict[str, str]] | None:
    """The first rule of `family` that matches `key`, and the key's fields."""
    for rule in family.rules:
        values = rule.match(key)
        if values is not None:
            return rule, values
    return None


def map_keys(family: Family, keys) -> dict[str, str | None]:
    """Each source key's target under `family`'s rules (a split's first chunk; None where no
    rule matches)."""
    return {key: None if (found := _match(family, key)) is None else found[0].fill(found[1])
            for key in keys}


def _mapped(mapped: Mapping[str, str | None]) -> int:
    return sum(target is not None for target in mapped.values())


def detect_family(keys, origin: str = "timm", families: Iterable[Family] = ()) -> Family:
    """The family of `origin` (`families`, then the registered ones) whose rules explain the
    most source keys; on a tie, the first whose modules and kind of SK the state dict has
    (`Family.built_into` of it under the rules' targets: shapes tell skresnext's grouped SK from
    skresnet's split one), else the first."""
    state = keys if isinstance(keys, Mapping) else dict.fromkeys(keys)
    return _detect(state, families_of(origin, families), origin)[0]


def _detect(state: Mapping, candidates: tuple[Family, ...], origin: str):
    """(family, its map of `state`'s keys, each candidate's number of keys mapped)."""
    ranked = [(family, map_keys(family, state)) for family in candidates]
    best = max(_mapped(mapped) for _, mapped in ranked)
    if best == 0:
        raise _unknown(state, origin, candidates, "maps")
    tied = [(family, mapped) for family, mapped in ranked if _mapped(mapped) == best]
    family, mapped = next(((family, mapped) for family, mapped in tied
                           if family.built_into(_under_targets(state, mapped))), tied[0])
    others: dict[str, int] = {}  # by title: the most any family of that title maps
    for other, found in ranked:
        if other.title != family.title and _mapped(found):
            others[other.title] = max(others.get(other.title, 0), _mapped(found))
    return family, mapped, others


def _under_targets(state: Mapping, mapped: Mapping[str, str | None]) -> dict:
    """`state` keyed by its targets (skdsl keys), where a rule maps them."""
    return {target: state[key] for key, target in mapped.items() if target is not None}


def _named(family: Family, source: Mapping, mapped: Mapping, others: dict[str, int]) -> Plan:
    """A plan that names the source model only as far as the keys and shapes tell: every key
    of the family's rules and its modules (timm's resnet18 has ResNeXt's keys but no conv3, so
    no depth or cardinality is made up for it)."""
    count = _mapped(mapped)
    named = count == len(source) and family.built_into(_under_targets(source, mapped))
    return Plan(family, family.model_name(source) if named else f"{family.title}-like",
                recognised=named, total=len(source), mapped=count, others=others)


def _chosen(family: Family | str | None, origin: str, families: tuple[Family, ...],
            setting: str = "origin") -> Family | None:
    """A family given by name (`--family`) or as itself; None: to be detected."""
    families_of(origin, families, setting)  # an unknown library, first
    return find_family(family, origin, families) if isinstance(family, str) else family


def plan(source: Mapping[str, "Tensor"], target: Mapping[str, "Tensor"], origin: str = "timm",
         families: Iterable[Family] = (), family: Family | str | None = None) -> Plan:
    """Map `source` (a foreign state dict) onto `target` (the compiled module's state dict),
    with `family`'s rules (a Family, or its name), or those of the family detected among
    `families` and the registered ones of `origin`."""
    families = tuple(families)
    family = _chosen(family, origin, families)
    if family is None:
        family, mapped, others = _detect(source, families_of(origin, families), origin)
    else:
        mapped, others = map_keys(family, source), {}
    result = _named(family, source, mapped, others)
    sources_of: dict[str, list[str]] = {}
    for key in source:
        found = _match(family, key)
        link = None if found is None else _link(key, *found, target)
        if link is None:
            result.unmatched.append(key)
        elif not link.targets:
            result.absent[key] = link.label
        else:
            result.links[key] = link
            for name in link.targets:
                sources_of.setdefault(name, []).append(key)
    result.collisions = {name: keys for name, keys in sources_of.items() if len(keys) > 1}
    result.missing = [name for name in target if name not in sources_of]
    for key, link in result.links.items():
        have, want = tuple(source[key].shape), _joined_shape(link, target)
        if have != want:
            result.shapes[key] = (link.label, have, want)
    return result


def _link(key: str, rule: Rule, values: dict[str, str], target: Mapping) -> Link:
    """Where `key` lands in `target`: its rule's target, or a split's chunks that the spec has
    (none, when the spec has not the target)."""
    if rule.split is None:
        name = rule.fill(values)
        return Link(key, (name,) if name in target else (), shown=name)
    chunks = rule.chunks(values, target)
    return Link(key, chunks, rule.split.axis, rule.span(values, len(chunks)))


def _joined_shape(link: Link, target: Mapping) -> tuple | None:
    """The shape a source tensor needs to fill `link`'s targets: theirs, or for a split their
    concatenation along its axis (no dimensions: copies); None for chunks that cannot join."""
    shapes = [tuple(target[name].shape) for name in link.targets]
    first, axis = shapes[0], link.axis
    if axis is None:
        return first
    if not first:
        return () if not any(shapes) else None
    if axis >= len(first) or len({shape[:axis] + shape[axis + 1:] for shape in shapes}) > 1 \
            or any(len(shape) != len(first) for shape in shapes):
        return None
    return first[:axis] + (sum(shape[axis] for shape in shapes),) + first[axis + 1:]


def convert_state_dict(source: Mapping[str, "Tensor"], target: Mapping[str, "Tensor"],
                       origin: str = "timm", spec_name: str = "the spec",
                       families: Iterable[Family] = (), family: Family | str | None = None,
                       head: Iterable[str] = ()) -> dict[str, "Tensor"]:
    """The target-keyed state dict holding `source`'s tensors (cast to the target's dtypes), in
    the target's order; a WeightsError (SK524/SK525) naming every key that does not fit (`head`:
    the target's classifier keys, for a hint when only they differ)."""
    families = tuple(families)
    mapping = plan(source, target, origin, families, family)
    if not mapping.fits:
        raise _misfit(mapping, target, origin, spec_name, families_of(origin, families),
                      frozenset(head))
    return _filled(source, target, mapping)


def _filled(source: Mapping, target: Mapping, mapping: Plan) -> dict[str, "Tensor"]:
    pieces: dict[str, "Tensor"] = {}
    for key, link in mapping.links.items():
        tensor = source[key].detach()
        if link.axis is None or tensor.dim() == 0:  # one target, or copies of a scalar
            parts = [tensor] * len(link.targets)
        else:
            parts = tensor.split([target[name].shape[link.axis] for name in link.targets],
                                 link.axis)
        for name, part in zip(link.targets, parts):
            pieces[name] = part.to(device="cpu", dtype=target[name].dtype).clone().contiguous()
    return {name: pieces[name] for name in target}


# -- what does not fit, in words ------------------------------------------------------------------

_SHOWN = 8  # lines listed per kind of problem


def _section(lines: list[str], title: str, items: list[str], count: int | None = None) -> None:
    if items:
        lines.append(f"  {title} ({len(items) if count is None else count}):")
        lines.extend(f"    {item}" for item in items[:_SHOWN])
        if len(items) > _SHOWN:
            lines.append(f"    … and {len(items) - _SHOWN} more")


def _grouped(keys: list[str]) -> list[str]:
    """Keys by their pattern (numbers as `*`, last parts together), so that what was not
    recognised reads at a glance: `layer*.*.conv*.bn*.{weight,bias} (16, such as ...)`."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        stem, dot, _ = key.rpartition(".")
        groups.setdefault(re.sub(r"\d+", "*", stem) + dot, []).append(key)
    lines = []
    for stem, members in groups.items():
        if len(members) == 1:
            lines.append(members[0])
            continue
        leaves = list(dict.fromkeys(member.rpartition(".")[2] for member in members))
        leaf = leaves[0] if len(leaves) == 1 else "{" + ",".join(leaves) + "}"
        lines.append(f"{stem}{leaf} ({len(members)}, such as {members[0]})")
    return lines


def _unknown(keys, origin: str, candidates: tuple[Family, ...], verb: str) -> WeightsError:
    """SK523: no key of these weights is one a rule of `origin`'s families `verb`s."""
    lines: list[str] = []
    _section(lines, "not recognised", _grouped(list(keys)), len(keys))
    return WeightsError(f"these weights are of no {origin} family skdsl knows: no rule {verb} "
                        f"any of their keys\n" + "\n".join(lines), code="SK523",
                        hint=f"skdsl {'converts' if verb == 'maps' else 'exports to'} "
                             f"{origin}'s {_known(candidates)}; describe another "
                             f"family in a rule file, given with {{rules}} (docs/weights.md)")


def _known(candidates: Iterable[Family]) -> str:
    """Families and their models, for hints: "ResNeXt (resnext*), …"."""
    models: dict[str, list[str]] = {}
    for family in candidates:
        models.setdefault(family.title, []).extend(family.models)
    return ", ".join(f"{title} ({', '.join(names)})" for title, names in models.items())


def _recognised(plan_: Plan) -> str:
    """What a partial match recognised: the family's share, then the others'."""
    others = "".join(f", {title}'s {count}" for title, count in
                     sorted(plan_.others.items(), key=lambda item: -item[1])[:4])
    return (f"  recognised: {plan_.mapped} of their {plan_.total} keys, by "
            f"{plan_.family.title}'s rules{' (' + others[2:] + ')' if others else ''}")


def _misfit(mapping: Plan, target, origin: str, spec_name: str,
            candidates: tuple[Family, ...], head: frozenset[str]) -> WeightsError:
    family = mapping.family
    if mapping.partial:
        weights, lines = f"{origin} weights of no family skdsl knows", [_recognised(mapping)]
    else:
        weights, lines = f"{origin} {mapping.source_model} weights", []
        weights += "" if mapping.recognised else ", of no family skdsl knows,"
    _section(lines, f"in the weights, mapped by no {family.title} rule",
             _grouped(mapping.unmatched), len(mapping.unmatched))
    _section(lines, f"in the weights, mapped to a module path that {spec_name} lacks",
             [f"{key} -> {dst}" for key, dst in mapping.absent.items()])
    _section(lines, "in the weights, several mapped to one target",
             [f"{' + '.join(keys)} -> {dst}" for dst, keys in mapping.collisions.items()])
    _section(lines, f"in {spec_name}, filled by no tensor of the weights", mapping.missing)
    _section(lines, "of another shape",
             [f"{key} {_shape(have)} -> {dst} {_shape(want)}"
              for key, (dst, have, want) in mapping.shapes.items()])
    if mapping.keyed:
        message, code = f"{weights} do not fit {spec_name} key for key", "SK524"
    else:
        message = f"{weights} do not fit {spec_name}: {len(mapping.shapes)} shapes differ"
        code = "SK525"
    hint = _family_hint(mapping, target, origin, spec_name, candidates, head)
    return WeightsError(message + "\n" + "\n".join(lines), code=code, hint=hint)


def _family_hint(mapping: Plan, target, origin: str, spec_name: str,
                 candidates: tuple[Family, ...], head: frozenset[str]) -> str:
    spec_families = [family for family in candidates if family.built_into(target)]
    family, other = mapping.family, (spec_families[-1] if spec_families else None)
    if mapping.partial:
        built = (f"{spec_name} is built of {other.built_of} ({origin}'s {other.model_list}); "
                 if other else "")
        return (f"{built}no family skdsl knows explains all of these weights: describe theirs "
                f"in a rule file, given with {{rules}} (docs/weights.md); skdsl converts "
                f"{origin}'s {_known(candidates)}")
    if other and not mapping.recognised:
        return (f"{spec_name} is built of {other.built_of}: convert {origin}'s "
                f"{other.model_list} weights for it (skdsl converts {_known(candidates)})")
    if other and family is not other:  # the most specific: SE and SK units have a conv3 too
        return (f"{spec_name} is built of {other.built_of} and these weights are "
                f"{family.title}: convert {origin}'s {other.model_list} weights for it, or use "
                f"a spec of {family.built_of}")
    if mapping.shapes and not mapping.keyed:
        return _shapes_hint(mapping, spec_name, head)
    if head and set(mapping.missing) == set(head) and not (
            mapping.unmatched or mapping.absent or mapping.collisions or mapping.shapes):
        return (f"the weights have no classifier (a model made with num_classes=0): leave the "
                f"head of {spec_name} out with {{skip_head}}")
    return (f"skdsl maps {origin}'s {family.title} onto specs of {family.defined_in}"
            f"{family.built_of}, with stages conv1 (stem), conv2-conv5 and head "
            f"(docs/weights.md)")


def _shapes_hint(mapping: Plan, spec_name: str, head: frozenset[str]) -> str:
    """Only the classifier differs: the class counts, and the two ways out."""
    shapes = list(mapping.shapes.values())
    if head and all(dst in head for dst, _, _ in shapes) and shapes[0][1] and shapes[0][2]:
        have, want = shapes[0][1][0], shapes[0][2][0]
        return (f"the weights' classifier has {have} classes and {spec_name} has {want}: "
                f"convert with {{num_classes}} {have}, or leave the head out with {{skip_head}}")
    return (f"{spec_name} has the modules of these weights but other widths: check its "
            f"widths, groups, reduction and classes against {mapping.source_model}")


def _shape(shape: tuple | None) -> str:
    if shape is None:
        return "(chunks of shapes that do not join)"
    return "(" + "×".join(map(str, shape)) + ")" if shape else "(scalar)"


# -- export: the rules backwards ------------------------------------------------------------------


@dataclass
class Export:
    """How a spec's state dict maps back onto a source library's keys."""

    family: Family
    total: int = 0
    links: dict[str, Link] = field(default_factory=dict)  # source key -> the skdsl keys it joins
    unexplained: list[str] = field(default_factory=list)  # skdsl keys no rule exports
    collisions: dict[str, list[str]] = field(default_factory=dict)  # source key -> skdsl keys
    gaps: dict[str, list[str]] = field(default_factory=dict)  # source key -> chunks missing

    @property
    def fits(self) -> bool:
        return not (self.unexplained or self.collisions or self.gaps)


def _unmap(family: Family, keys) -> dict[str, tuple[Rule, str, int | None] | None]:
    """Each skdsl key's source key and chunk under the first of `family`'s rules that gives
    one, with the rule (None: no rule does)."""
    found: dict[str, tuple[Rule, str, int | None] | None] = {}
    for key in keys:
        found[key] = next(((rule, *back) for rule in family.rules
                           if (back := rule.unapply(key)) is not None), None)
    return found


def detect_export_family(keys, to: str = "timm", families: Iterable[Family] = ()) -> Family:
    """The family of `to` whose rules export the most of a spec's keys; on a tie the first
    whose modules (markers, kind of SK) the spec has, else the first."""
    candidates = families_of(to, families, "to")
    ranked = [(family, _unmap(family, keys)) for family in candidates]
    scores = [sum(found is not None for found in back.values()) for _, back in ranked]
    if max(scores) == 0:
        raise _unknown(list(keys), to, candidates, "exports")
    tied = [family for (family, _), score in zip(ranked, scores) if score == max(scores)]
    return next((family for family in tied if family.built_into(keys)), tied[0])


def export_plan(state: Mapping[str, "Tensor"], family: Family) -> Export:
    """How `family`'s rules, run backwards, map the spec-keyed `state` onto source keys."""
    result, rule_of = Export(family, total=len(state)), {}
    chunks_of: dict[str, dict[int | None, str]] = {}
    for key, found in _unmap(family, state).items():
        if found is None:
            result.unexplained.append(key)
            continue
        rule, source, chunk = found
        chunks = chunks_of.setdefault(source, {})
        if chunk in chunks or rule_of.setdefault(source, rule) is not rule:
            result.collisions.setdefault(source, [*chunks.values()]).append(key)
        chunks[chunk] = key
    for source, chunks in chunks_of.items():
        if source not in result.collisions:
            _join(result, source, rule_of[source], chunks)
    return result


def _join(result: Export, source: str, rule: Rule, chunks: dict[int | None, str]) -> None:
    """The link of `source`'s skdsl keys; a split needs all its chunks 0..M-1."""
    if rule.split is None:
        result.links[source] = Link(source, (chunks[None],))
        return
    values, count = rule.match(source), max(chunks) + 1
    gaps = [rule.fill(values, index) for index in range(count) if index not in chunks]
    if gaps:
        result.gaps[source] = gaps
        return
    result.links[source] = Link(source, tuple(chunks[index] for index in range(count)),
                                rule.split.axis, rule.span(values, count))


def _check_backwards(result: Export) -> None:
    """SK528 unless each exported key converts back to the keys it came from: a rule listed
    earlier may match it first (the rules then do not run backwards)."""
    wrong = []
    for source, link in result.links.items():
        found = _match(result.family, source)
        back = () if found is None else (
            (found[0].fill(found[1]),) if found[0].split is None else
            tuple(found[0].fill(found[1], index) for index in range(len(link.targets))))
        if back != link.targets:
            wrong.append(f"{link.label} -> {source} -> {back[0] if back else 'no rule'}")
    if wrong:
        raise WeightsError(f"the rules of {result.family.origin} family "
                           f"{result.family.name!r} do not run backwards: "
                           f"{len(wrong)} keys export to keys that convert elsewhere\n    "
                           + "\n    ".join(wrong[:_SHOWN]), code="SK528",
                           hint="put the more specific rule first, or give the rules targets "
                                "that no other rule's pattern matches")


def export_state_dict(state: Mapping[str, "Tensor"], reference: Mapping[str, "Tensor"] | None,
                      to: str = "timm", families: Iterable[Family] = (),
                      family: Family | str | None = None,
                      spec_name: str = "the spec") -> tuple[Family, dict[str, "Tensor"]]:
    """`state` (a compiled spec's state dict, checked key for key and shape for shape against
    `reference`, that spec's own) under the source keys of `family`, or of the family of `to`
    detected among `families` and the registered ones: (the family, the state dict). A split's
    chunks are concatenated (a scalar: the first chunk's). A WeightsError names every misfit."""
    families = tuple(families)
    family = _chosen(family, to, families, "to")
    if reference is not None:
        _check_against_spec(state, reference, spec_name)
    family = family or detect_export_family(state, to, families)
    result = export_plan(state, family)
    if not result.fits:
        raise _export_misfit(result, to, spec_name)
    _check_backwards(result)
    return family, {source: _joined(state, link) for source, link in result.links.items()}


def _joined(state: Mapping, link: Link) -> "Tensor":
    import torch

    parts = [state[name].detach().cpu() for name in link.targets]
    if link.axis is None or parts[0].dim() == 0:  # one to one, or equal copies of a scalar
        return parts[0].clone().contiguous()
    return torch.cat(parts, link.axis)


def _check_against_spec(state: Mapping, reference: Mapping, spec_name: str) -> None:
    """SK524/SK525 unless `state` holds exactly `reference`'s keys, of its shapes."""
    extra = [key for key in state if key not in reference]
    missing = [key for key in reference if key not in state]
    shapes = [f"{key} {_shape(tuple(state[key].shape))}, in {spec_name} "
              f"{_shape(tuple(reference[key].shape))}" for key in state
              if key in reference and tuple(state[key].shape) != tuple(reference[key].shape)]
    if not (extra or missing or shapes):
        return
    fitting = len(state) - len(extra) - len(shapes)
    lines = [f"  recognised: {fitting} of their {len(state)} keys, of {spec_name} and of its "
             f"shapes"]
    _section(lines, f"in the weights, not in {spec_name}", extra)
    _section(lines, f"in {spec_name}, not in the weights", missing)
    _section(lines, "of another shape", shapes)
    code = "SK524" if extra or missing else "SK525"
    raise WeightsError(f"these weights are not those of {spec_name}\n" + "\n".join(lines),
                       code=code, hint="export with the spec the weights were converted or "
                                       "trained with, its {overrides} and {num_classes} "
                                       "({skip_head} for weights without a head)")


def _export_misfit(result: Export, to: str, spec_name: str) -> WeightsError:
    family = result.family
    explained = result.total - len(result.unexplained)
    lines = [f"  recognised: {explained} of their {result.total} keys, by {family.title}'s "
             f"rules"]
    _section(lines, f"in {spec_name}, exported by no {family.title} rule",
             _grouped(result.unexplained), len(result.unexplained))
    _section(lines, f"in {spec_name}, several exported to one {to} key",
             [f"{' + '.join(keys)} -> {source}" for source, keys in result.collisions.items()])
    _section(lines, "chunks of a split missing",
             [f"{', '.join(gaps)} (of {source})" for source, gaps in result.gaps.items()])
    return WeightsError(
        f"the weights of {spec_name} do not export to {to}'s {family.title} key for key\n"
        + "\n".join(lines), code="SK524",
        hint=f"{to}'s {family.title} ({family.model_list}) is built as a spec of "
             f"{family.defined_in}{family.built_of}: name another family with {{family}}, or "
             f"describe one in a rule file, given with {{rules}} (docs/weights.md)")


# -- files ----------------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, "Tensor"]:
    """The state dict in a torch file (a raw one, or one under 'state_dict' or 'model' of a
    training checkpoint, without wrapper prefixes 'module.', '_orig_mod.', 'model.') or in a
    safetensors file. Never unpickles Python objects (state_io.read: weights only)."""
    from . import state_io

    return state_io.state_dict_in(state_io.read(path, state_io.WEIGHTS), path, state_io.WEIGHTS)


def output_format(path: str | Path, format: str | None = None) -> str:
    """The format a state dict is written in: `format`, else safetensors for a `.safetensors`
    path, else torch."""
    if format is None:
        return "safetensors" if str(path).lower().endswith(".safetensors") else "torch"
    if format not in FORMATS:
        raise WeightsError(f"{{format}} {format!r}: skdsl writes weights as "
                           f"{' or '.join(FORMATS)}", code="SK526")
    return format


def write_state_dict(state: Mapping[str, "Tensor"], path: str | Path,
                     format: str | None = None) -> None:
    """torch.save (or safetensors, `output_format`) to a temporary file beside `path`, then an
    atomic rename: `path` is never left half written, and on an error nothing is left behind."""
    from . import safetensors_io, state_io

    try:
        if output_format(path, format) == "safetensors":
            safetensors_io.save(state, path)
        else:
            state_io.write(dict(state), path)
    except OSError as error:
        raise _unwritable(path, error.strerror or str(error)) from None


def _unwritable(path: str | Path, why: str) -> WeightsError:
    return WeightsError(f"cannot write '{path}': {why}", code="SK526")


def _prepare_output(path: str | Path, format: str | None) -> str:
    """The output's format, after checking (before anything is read or compiled) that it can
    be written: its folder, and the safetensors package where it is needed."""
    from . import safetensors_io, state_io

    chosen = output_format(path, format)
    if chosen == "safetensors":
        safetensors_io.package(f"writing '{path}' as safetensors")
    unwritable = state_io.check_writable(path)
    if unwritable:
        raise _unwritable(path, unwritable)
    return chosen


# -- the commands' work ---------------------------------------------------------------------------


@dataclass
class Conversion:
    """A written conversion or export: the family, the source model's name as far as known,
    the state dict written, the module's parameter count and the file format."""

    family: Family
    source_model: str
    state_dict: dict[str, "Tensor"]
    parameters: int
    format: str = "torch"
    plan: Plan | None = None


def _compiled(spec, skip_head: bool, spec_name: str, verb: str):
    """The spec's module, its state dict and its classifier's keys; SK527 for a head to skip
    that the spec does not have."""
    from . import state_io
    from .compiler import compile as compile_network

    model = compile_network(spec)
    head = state_io.head_keys(model)
    if skip_head and not head:
        raise WeightsError(f"{{skip_head}}: {spec_name} has no classifier head (a final fc "
                           f"layer) to skip", code="SK527", hint=f"{verb} without {{skip_head}}")
    return model, model.state_dict(), head


def convert(spec, source_path: str | Path, output_path: str | Path, origin: str = "timm",
            spec_name: str | None = None, skip_head: bool = False,
            families: Iterable[Family] = (), family: Family | str | None = None,
            format: str | None = None) -> Conversion:
    """Read `source_path`, map it onto the compiled `spec` (a `Network`; `skdsl.load(path,
    num_classes=N)` for another head) and write `output_path` atomically, in `format`
    (output_format). Nothing is written on an error. `skip_head`: the classifier (the last
    linear layer) is neither read nor written, for fine-tuning to other classes. `families`:
    more families (load_rules), tried first; `family`: the one to use (or its name)."""
    families = tuple(families)
    chosen = _chosen(family, origin, families)  # an unknown library or family: before any work
    candidates = families_of(origin, families)
    fmt = _prepare_output(output_path, format)
    spec_name = spec_name or f"spec '{spec.name}'"
    model, target, head = _compiled(spec, skip_head, spec_name, "convert")
    source = read_state_dict(source_path)
    if skip_head:
        source, target = _without_head(source, target, head, chosen or _detect(
            source, candidates, origin)[0])
    mapping = plan(source, target, origin, families, chosen)
    if not mapping.fits:
        raise _misfit(mapping, target, origin, spec_name, candidates, head)
    converted = _filled(source, target, mapping)
    write_state_dict(converted, output_path, fmt)
    return Conversion(mapping.family, mapping.source_model, converted,
                      sum(p.numel() for p in model.parameters()), fmt, mapping)


def _without_head(source, target, head: frozenset[str], family: Family):
    """`source` without the tensors that map onto the head, `target` without the head."""
    mapped = map_keys(family, source)
    return ({key: value for key, value in source.items() if mapped[key] not in head},
            {key: value for key, value in target.items() if key not in head})


def export(spec, source_path: str | Path, output_path: str | Path, to: str = "timm",
           spec_name: str | None = None, skip_head: bool = False,
           families: Iterable[Family] = (), family: Family | str | None = None,
           format: str | None = None) -> Conversion:
    """Read the weights of the compiled `spec` at `source_path` (converted weights, an skdsl
    checkpoint such as best.pt, or any state dict of the spec), map them onto the keys of
    `to`'s family (detected, or named by `family`) and write `output_path` atomically, in
    `format`. `skip_head`: the classifier is left out. Nothing is written on an error."""
    from . import state_io

    families = tuple(families)
    chosen = _chosen(family, to, families, "to")  # an unknown library or family: first
    fmt = _prepare_output(output_path, format)
    spec_name = spec_name or f"spec '{spec.name}'"
    model, reference, head = _compiled(spec, skip_head, spec_name, "export")
    state, _ = state_io.read_weights(source_path, state_io.WEIGHTS, expected=reference)
    if skip_head:
        state, reference = ({key: value for key, value in weights.items() if key not in head}
                            for weights in (state, reference))
    used, exported = export_state_dict(state, reference, to, families, chosen, spec_name)
    write_state_dict(exported, output_path, fmt)
    return Conversion(used, used.model_name(exported), exported,
                      sum(p.numel() for p in model.parameters()), fmt)


__all__ = ["Rule", "Split", "Family", "FAMILIES", "WORDS", "FORMATS", "Link", "Plan", "Export",
           "Conversion", "WeightsError", "register_family", "load_rules", "dump_rules",
           "families_of", "find_family", "splits_input", "map_keys", "detect_family", "plan",
           "convert_state_dict", "detect_export_family", "export_plan", "export_state_dict",
           "read_state_dict", "write_state_dict", "output_format", "convert", "export"]
