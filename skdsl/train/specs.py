"""The spec a run, an evaluation or an export names: found, read, and its class count replaced.

`spec_path` is the one place a SPEC argument becomes a file (a path, or a zoo name resolved by
skdsl.lang.zoo); loading itself is skdsl.lang.loading's, for every caller.
"""

from __future__ import annotations

from pathlib import Path

from ..lang.loading import load


def spec_path(name: str) -> str:
    """The file a SPEC argument names: a path, or a zoo name (skdsl.lang.zoo.resolve)."""
    from ..base.errors import SkdslError
    from ..lang.zoo import resolve

    try:
        return str(resolve(name))
    except SkdslError:
        return name  # the loader says why it cannot be read


def spec_text(name: str) -> str:
    """The spec as written, for the checkpoint's record ('' when it cannot be read as text)."""
    try:
        return Path(spec_path(name)).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def load_spec(name: str, overrides: dict | None = None, classes: int | None = None,
              allow_imports_outside: bool = False):
    """The expanded spec; `classes` replaces its `classes` header (fine-tuning to another class
    count: a head written `fc classes` follows)."""
    return load(name, overrides or None, classes, allow_imports_outside)


__all__ = ["spec_path", "spec_text", "load_spec"]
