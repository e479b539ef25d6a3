"""timm's create_model for skdsl: a zoo name or spec file -> its compiled network, carrying the
zoo's preprocessing record as `model.pretrained_cfg`. (The names themselves are lang/zoo.py's.)
"""

from __future__ import annotations

from pathlib import Path

from ..base.errors import SkdslError
from ..core.graph import lower_table, output_shape
from ..lang.zoo import load, pretrained_cfg_of
from .compiler import compile


def create_model(name_or_path: str | Path, num_classes: int | None = None,
                 pretrained_cfg: dict | None = None, **overrides):
    """The compiled network of a zoo name or spec file, as timm's create_model gives one.

    `overrides` set the spec's `param`s (as `--set` does); `pretrained_cfg` replaces fields of
    the zoo's preprocessing record, which the module carries as `model.pretrained_cfg`.
    """
    spec = load(name_or_path, overrides, num_classes)
    graph = lower_table(spec)
    if num_classes is not None and output_shape(graph) != (num_classes,):
        raise SkdslError(f"num_classes={num_classes}: network {spec.name}'s head does not follow "
                         f"its `classes` line (it gives {'×'.join(map(str, output_shape(graph)))} "
                         f"outputs)", code="SK550", hint="end the head with `fc classes`")
    model = compile(graph)
    model.pretrained_cfg = pretrained_cfg_of(name_or_path, spec, **(pretrained_cfg or {}))
    return model
