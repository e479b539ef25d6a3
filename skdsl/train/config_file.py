"""`--config FILE`: training settings in a TOML file, checked by a pydantic model before anything
starts; flags (and Python keyword arguments) override the file's values.

    # run.toml: the keys are TrainConfig's fields (docs/training.md), `-` or `_` alike
    data = "synthetic:train=2000,val=500"
    epochs = 4
    batch-size = 64
    opt = "adamw"
    ema = 0.999

The model is built from TrainConfig's own fields and config.py's ranges and choices, so a setting
has one definition, whether it comes from a flag, a file, a keyword or a checkpoint's record.
This module imports no torch.
"""

from __future__ import annotations

import re
import typing
from dataclasses import fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, create_model

from ..base import files
from ..base.errors import SkdslError
from ..core.settings import (CHOICES, FLAGS, INTEGER_RANGES, LARGEST_NUMBER, NUMBERS,
                            OPEN_RANGES, TEXTS, TrainConfig)

NOT_IN_FILES = ("config_file",)  # a file names no other file


class ConfigFileError(SkdslError):
    """A --config file that cannot be read, or a setting in it (or given to skdsl.train) of an
    unknown name, the wrong type or out of its range."""

    code = "SK650"


def _annotation(name: str):
    """The pydantic type of one TrainConfig field, from config.py's tables."""
    strict_int = Annotated[int, Strict()]
    if name in INTEGER_RANGES:
        low, high = INTEGER_RANGES[name]
        return Annotated[strict_int, Field(ge=low, le=high)]
    if name in NUMBERS:
        return Annotated[float, Strict(), Field(ge=0, le=LARGEST_NUMBER, allow_inf_nan=False)]
    if name in OPEN_RANGES:
        low, high = OPEN_RANGES[name]
        return Annotated[float, Strict(), Field(gt=low, lt=high)]
    if name in CHOICES:
        return Literal[CHOICES[name]]
    if name in FLAGS:
        return Annotated[bool, Strict()]
    if name in TEXTS:
        return Annotated[str, Strict()]
    special = {"resume": bool | Literal["auto"],
               "overrides": dict[str, Annotated[int, Strict()] | float | Annotated[str, Strict()]],
               "crop_scale": tuple[Annotated[float, Field(gt=0, le=1)],
                                   Annotated[float, Field(gt=0, le=1)]]}
    if name in special:
        return special[name]
    # Any other field: its declared type, strictly (a flag added without a table entry).
    return Annotated[typing.get_type_hints(TrainConfig)[name], Strict()]


@lru_cache(maxsize=1)
def settings_model() -> type[BaseModel]:
    """The pydantic model of every TrainConfig field a file or a keyword may set."""
    names = [f.name for f in fields(TrainConfig) if f.name not in NOT_IN_FILES]
    assert set(names) <= set(typing.get_type_hints(TrainConfig))
    return create_model("TrainSettings", __config__=ConfigDict(extra="forbid"),
                        **{name: (_annotation(name) | None, None) for name in names})


def check_settings(values: dict, origin: str, text: str = "") -> dict:
    """`values` (keys with '-' or '_') checked against the model; the set ones, by field name.
    `origin` names where they come from in a message; `text` is the file's, to find a key's line."""
    values = {key.replace("-", "_"): value for key, value in values.items()}
    try:
        checked = settings_model().model_validate(values)
    except ValidationError as error:
        raise _explained(error, origin, text) from None
    if checked.crop_scale is not None and checked.crop_scale[0] > checked.crop_scale[1]:
        raise ConfigFileError(f"{origin}: crop_scale {list(checked.crop_scale)}: LO must not "
                              f"exceed HI", hint="such as crop_scale = [0.08, 1.0]")
    return {key: value for key, value in checked.model_dump().items() if key in values}


def _explained(error: ValidationError, origin: str, text: str) -> ConfigFileError:
    """The first problem pydantic found, as one line naming the key, its value and its line."""
    problem = error.errors()[0]
    key = str(problem["loc"][0]) if problem["loc"] else "?"
    line = _line_of(key, text)
    where = f"{origin}, line {line}" if line else origin
    if problem["type"] == "extra_forbidden":
        from ..base.errors import did_you_mean

        known = [f.name for f in fields(TrainConfig) if f.name not in NOT_IN_FILES]
        return ConfigFileError(f"{where}: unknown setting '{key}'",
                               hint=did_you_mean(key, known) or
                               "the settings are TrainConfig's fields (docs/training.md)")
    value = problem.get("input")
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return ConfigFileError(f"{where}: {key} = {shown}: {problem['msg'][0].lower()}"
                           f"{problem['msg'][1:]}",
                           hint=f"it takes what {{{key}}} takes (docs/cli.md, skdsl train)")


def _line_of(key: str, text: str) -> int | None:
    """The line where `key` (spelt with '_' or '-') is set in TOML `text`, if it is found."""
    spelling = re.escape(key).replace("_", "[-_]")
    found = re.search(rf"^\s*\"?{spelling}\"?\s*=", text, re.M)
    return text.count("\n", 0, found.start()) + 1 if found else None


def read_config_file(path: str | Path) -> dict:
    """The checked settings of a TOML file (only those it sets)."""
    path = Path(path)
    try:  # a device or FIFO is refused, not read until memory runs out
        values, text = files.read_toml(path)
    except files.FileProblem as problem:
        if problem.kind == "invalid":
            raise ConfigFileError(f"{{config_file}} '{path}' is {problem}",
                                  hint="write one `name = value` per line, such as epochs = 4"
                                  ) from None
        raise ConfigFileError(f"cannot read {{config_file}} '{path}': {problem}") from None
    return check_settings(values, f"{{config_file}} '{path}'", text)


def with_config_file(config: TrainConfig) -> TrainConfig:
    """`config` with its unset fields taken from its --config file (none: `config` itself).
    Set fields win: flags and keywords override the file. `spec` and `out` are unset when ''."""
    if config.config_file is None:
        return config
    values = read_config_file(config.config_file)
    unset = {name: value for name, value in values.items()
             if getattr(config, name) in (None, "") or (name == "resume" and not config.resume)}
    return replace(config, **unset)


__all__ = ["ConfigFileError", "settings_model", "check_settings", "read_config_file",
           "with_config_file"]
