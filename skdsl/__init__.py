"""skdsl: a declarative architecture language and model compiler for Selective Kernel Networks.

    import skdsl
    spec = skdsl.load("specs/sknet50.sk")     # text -> validated spec (no torch)
    skdsl.lint("specs/sknet50.sk")            # its warnings (SK7xx): [] when it reads clean
    report = skdsl.analyze(spec)              # exact params and multiply-adds (no torch)
    model = skdsl.compile(spec)               # torch.nn.Module with exactly those counts

    skdsl.list_models("sk*")                  # the zoo's names (skdsl/specs/zoo.toml)
    model = skdsl.create_model("sknet50", num_classes=10)   # as timm's create_model
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base.errors import (CheckpointError, CliError, InputFileError, SettingError, SkdslError,
                          SpecError, SpecWarning)
from .base.errors import SettingError
from .core.spec import Network
from .version import __version__

if TYPE_CHECKING:
    from .core.analysis import Analysis

# skdsl.train: the training package, callable as skdsl.train(model_or_spec, train_data=...,
# val_data=..., **config) (train/api.py); importing it does not import torch.
from . import train  # noqa: E402

__all__ = ["train", "load", "parse", "lint", "lint_text", "analyze", "compile", "lower",
           "list_models", "create_model", "Network", "SkdslError", "SpecError", "SpecWarning",
           "CliError", "CheckpointError", "SettingError", "InputFileError", "__version__"]


def load(path: str | Path, overrides: dict | None = None, *,
         num_classes: int | None = None, allow_imports_outside: bool = False) -> Network:
    """Read, parse and expand a .sk file or zoo name (and what it imports), or validate a .json
    spec written by `skdsl spec --json`, into a validated spec.

    `overrides` set `param`s; `num_classes` replaces the `classes` header (and so the head);
    neither can change a JSON spec. `use` reads only files under the spec's folder and std/
    unless `allow_imports_outside`.
    """
    from .lang.loading import load as _load

    return _load(path, overrides, num_classes, allow_imports_outside)


def lint(path: str | Path, *, allow_imports_outside: bool = False) -> list[SpecWarning]:
    """The warnings of a .sk file or zoo name and of the files it imports: located remarks
    (SK7xx, docs/errors.md) on a spec that builds, but likely not as meant; [] when it reads
    clean, and always for a .json spec. A spec that cannot be read raises, as `load` does.
    """
    from .lang.loading import lint as _lint

    return _lint(path, allow_imports_outside)


def lint_text(text: str, file: str = "<string>", *,
              allow_imports_outside: bool = False) -> list[SpecWarning]:
    """The warnings of .sk text, as `lint` gives a file's; `use` paths resolve against the
    current directory."""
    from .lang.lint import lint_text as _lint_text

    return _lint_text(text, file, allow_imports_outside)


def list_models(pattern: str = "*") -> list[str]:
    """The zoo's network names matching a shell-style pattern, such as "sk*"."""
    from .lang.zoo import list_models as _list_models

    return _list_models(pattern)


def create_model(name_or_path: str | Path, num_classes: int | None = None,
                 pretrained_cfg: dict | None = None, **overrides):
    """The compiled network of a zoo name or spec file, with `pretrained_cfg` (imports torch).

    `overrides` set the spec's `param`s, as `--set` does: create_model("sknet101", L3=16).
    """
    from .nn.models import create_model as _create_model

    return _create_model(name_or_path, num_classes, pretrained_cfg, **overrides)


def parse(text: str, file: str = "<string>", overrides: dict | None = None, *,
          allow_imports_outside: bool = False) -> Network:
    """Parse and expand .sk text; `use` paths resolve against the current directory."""
    from .lang.loading import parse as _parse

    return _parse(text, file, overrides, allow_imports_outside)


def lower(spec: Network, input_shape=None):
    """The networkx graph of a spec, one node per primitive op, with every shape inferred."""
    from .core.graph import lower as _lower

    return _lower(spec, input_shape)


def analyze(spec: Network, input_shape=None, count=()) -> "Analysis":
    """Exact parameters, multiply-adds, shapes and receptive fields, without building a model.

    `count` adds op classes to the multiply-adds (bn, act, pool, add, mul, softmax); the
    default counts convolutions and fc layers only, as the paper and FlopCounterMode do.
    """
    from .core.analysis import analyze as _analyze

    return _analyze(spec, input_shape, count)


def compile(spec: Network, input_shape=None, *, features_only: bool = False,  # noqa: A001
            out_indices=None, memory_budget: int | None = None):
    """Build the torch.nn.Module of a spec (imports torch); `features_only` gives the stage
    outputs of `out_indices` instead of the logits (docs/model-api.md).

    A network whose weights would not fit `memory_budget` bytes (default: the memory available
    now) is refused before anything is allocated (ResourceError, SK620).
    """
    from .nn.compiler import compile as _compile

    return _compile(spec, input_shape, features_only=features_only, out_indices=out_indices,
                    memory_budget=memory_budget)
