"""The model zoo: the networks shipped in skdsl/specs/, by name, as timm's registry offers them.

    skdsl.list_models("sk*")                      # ['sknet101', 'sknet26', 'sknet29', ...]
    skdsl.create_model("sknet50", num_classes=10) # the compiled module, pretrained_cfg set
    skdsl.load("sknet50")                         # its spec; every CLI command takes the name

A zoo name is the name a spec's `network` line declares (`sknet50`, `shufflenet_v2_x0_5`,
`sknet50_sk_pair`), the name reports and checkpoints already show; specs/zoo.toml maps each
to its file and its preprocessing. `resolve` turns what a user typed into a file: an existing
file wins, then a zoo name, then a path under the shipped specs folder (`specs/sknet50.sk`
works from an installed wheel, outside the source tree). No torch here.
"""

from __future__ import annotations

import fnmatch
import functools
import tomllib
from pathlib import Path, PurePath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..base.errors import SkdslError, SpecError, did_you_mean

SPECS_DIR = Path(__file__).resolve().parents[1] / "specs"
REGISTRY = SPECS_DIR / "zoo.toml"
SPEC_SUFFIXES = (".sk", ".json")


class Preprocessing(BaseModel):
    """How a network's images are prepared: timm's pretrained_cfg fields beyond the shapes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: tuple[float, float, float] = Field(description="Per-channel mean of 0–1 pixels.")
    std: tuple[float, float, float] = Field(description="Per-channel standard deviation.")
    crop_pct: float = Field(gt=0, le=1, description="Centre crop side / resized side at eval.")
    interpolation: Literal["bilinear", "bicubic", "nearest"]


class ZooModel(BaseModel):
    """One entry of specs/zoo.toml's [models]."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: str = Field(description="The spec file, relative to the specs folder.")
    preprocessing: str


class Registry(BaseModel):
    """specs/zoo.toml, validated: a model's preprocessing must be one the file defines."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preprocessing: dict[str, Preprocessing]
    models: dict[str, ZooModel]

    @model_validator(mode="after")
    def _known_preprocessing(self):
        for name, entry in self.models.items():
            if entry.preprocessing not in self.preprocessing:
                raise ValueError(f"zoo model {name}: no [preprocessing.{entry.preprocessing}]")
        return self


@functools.cache
def registry() -> Registry:
    """The shipped zoo (read once; a mistake in it is a bug in skdsl, caught by its tests)."""
    return Registry.model_validate(tomllib.loads(REGISTRY.read_text(encoding="utf-8")))


def list_models(pattern: str = "*") -> list[str]:
    """The zoo's names matching a shell-style pattern (`"sk*"`, `"*29*"`), sorted."""
    return sorted(name for name in registry().models
                  if fnmatch.fnmatchcase(name, pattern.lower()))


def resolve(name_or_path: str | Path) -> Path:
    """The spec file meant: an existing file, else a zoo name, else a path under the specs folder.

    A folder named like a zoo model (a run's `--out sknet50`) does not hide it: only a file
    wins. A bare word that is none of these is an SK110 naming the closest zoo names; anything
    else is returned as given, for the reader to say why it cannot be read.
    """
    path = Path(name_or_path)
    try:
        found = _found(path)
    except OSError:  # a name the system cannot look up (too long): the reader says why
        return path
    if found is None and _is_bare_name(path):
        raise SpecError(f"no such file or zoo model: '{name_or_path}'", code="SK110",
                        hint=did_you_mean(str(name_or_path), registry().models) or
                        "name a .sk file, or one of skdsl.list_models() (docs/model-zoo.md)")
    return found or path


def _found(path: Path) -> Path | None:
    if path.exists() and not path.is_dir():
        return path  # a file; a pipe or a device too, for the reader to refuse
    entry = registry().models.get(str(path))
    if entry is not None:
        return shown(SPECS_DIR / entry.spec)
    return _shipped(path)


def name_of(path: str | Path) -> str | None:
    """The zoo name of a spec file, or None when the file is not one of the zoo's."""
    target = Path(path).resolve()
    for name, entry in registry().models.items():
        if (SPECS_DIR / entry.spec).resolve() == target:
            return name
    return None


def pretrained_cfg(name: str | None, input_size: tuple[int, ...], num_classes: int | None,
                   **changes) -> dict:
    """timm's pretrained_cfg for a network: its shapes, and the zoo's preprocessing for it.

    `changes` replace fields (validated as the zoo's own are); a network outside the zoo has
    no preprocessing unless they give all of it.
    """
    record = {"architecture": name, "input_size": tuple(input_size), "num_classes": num_classes}
    preprocessing: dict = {}
    if name is not None and name in registry().models:
        zoo = registry()
        preprocessing = zoo.preprocessing[zoo.models[name].preprocessing].model_dump()
    given = {key: changes.pop(key) for key in list(changes) if key in Preprocessing.model_fields}
    if changes:
        unknown = next(iter(changes))
        raise SkdslError(f"pretrained_cfg has no field '{unknown}'", code="SK551",
                         hint=did_you_mean(unknown, [*record, *Preprocessing.model_fields]))
    if given:
        preprocessing = _validated({**preprocessing, **given})
    return {**record, **preprocessing}


def _validated(preprocessing: dict) -> dict:
    from pydantic import ValidationError

    try:
        return Preprocessing.model_validate(preprocessing).model_dump()
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(map(str, first["loc"])) or "pretrained_cfg"
        raise SkdslError(f"pretrained_cfg {field}: {first['msg']}", code="SK551",
                         hint="give mean, std, crop_pct and interpolation (bilinear, bicubic "
                              "or nearest), as in skdsl/specs/zoo.toml") from None


def load(name_or_path: str | Path, overrides: dict | None = None,
         num_classes: int | None = None, allow_imports_outside: bool = False):
    """The spec of a file or zoo name; `num_classes` replaces its `classes` header.

    The header is replaced in the spec, before expansion, so that `fc classes` (and every
    count) follows: where it is written `classes NAME` with NAME a `param`, that param is
    set instead, so the spec's parameters agree with its head.
    """
    from .expand import expand, parse_file
    from .space import check_space

    source = parse_file(resolve(name_or_path))
    check_space(source)
    overrides = dict(overrides or {})
    if num_classes is not None:
        source, overrides = _with_classes(source, _class_count(num_classes), overrides)
    return expand(source, overrides or None, allow_imports_outside)


def _class_count(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SkdslError(f"num_classes={num_classes!r}: expected a positive integer",
                         code="SK550", hint="num_classes=10 gives a 10-way classifier")
    return num_classes


def _with_classes(source, num_classes: int, overrides: dict) -> tuple:
    """The source and overrides that give the network `num_classes` classes: a param set, or
    a copy of the tree with another header (the parsed tree is cached and shared: never
    changed in place)."""
    from dataclasses import replace

    from . import syntax as A

    if len(source.networks) != 1:
        return source, overrides  # the expander says what is wrong with the file
    network = source.networks[0]
    if network.classes is None:
        raise SpecError(f"num_classes: network {network.name.name} declares no `classes`",
                        network.name.span, code="SK550",
                        hint="add a `classes N` line and end the head with `fc classes`")
    declared = {param.name for param in source.params}
    if isinstance(network.classes, A.Name) and network.classes.id in declared:
        return source, {**overrides, network.classes.id: num_classes}
    header = replace(network, classes=A.Int(num_classes, network.classes.span))
    return replace(source, networks=[header]), overrides


def pretrained_cfg_of(name_or_path: str | Path, spec, **changes) -> dict:
    """`pretrained_cfg` for the network of `spec`, read from `name_or_path`."""
    return pretrained_cfg(name_of(resolve(name_or_path)), spec.input, spec.classes, **changes)


def shown(path: Path) -> Path:
    """A path as short as it can be said: relative to the current directory when inside it."""
    try:
        return path.relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _shipped(path: Path) -> Path | None:
    """`specs/cifar/sknet29.sk` (or `cifar/sknet29.sk`) in the shipped specs folder."""
    if path.is_absolute() or ".." in path.parts:
        return None
    parts = path.parts[1:] if path.parts[:1] == ("specs",) else path.parts
    candidate = SPECS_DIR.joinpath(*parts) if parts else None
    return shown(candidate) if candidate is not None and candidate.is_file() else None


def _is_bare_name(path: Path) -> bool:
    """A word such as `sknet5`, not a path: one part, no spec suffix."""
    return len(PurePath(path).parts) == 1 and path.suffix.lower() not in SPEC_SUFFIXES


__all__ = ["list_models", "resolve", "load", "name_of", "pretrained_cfg",
           "registry", "Preprocessing", "SPECS_DIR"]
