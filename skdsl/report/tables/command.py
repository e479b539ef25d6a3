"""Where `skdsl tables` reads its manifest and writes its page, unless told otherwise (the
command itself is skdsl/commands/tables.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...base.errors import SettingError
from ...lang.zoo import SPECS_DIR, shown

if TYPE_CHECKING:
    from .manifest import Manifest

DEFAULT_MANIFEST = Path("specs") / "paper_tables.toml"
DEFAULT_OUTPUT = Path("docs") / "paper-tables.md"


def manifest_path(given: str | None = None) -> Path:
    """The manifest: `given`, else the current directory's, else skdsl's own (shipped with it)."""
    if given == "":  # a name left empty (--manifest=), not one left out
        raise SettingError("--manifest '': name a TOML manifest, or leave out --manifest for "
                       "skdsl's own", code="SK544")
    if given is not None:
        return Path(given)
    return DEFAULT_MANIFEST if DEFAULT_MANIFEST.is_file() else SPECS_DIR / DEFAULT_MANIFEST.name


def default_page(manifest: Manifest) -> str | None:
    """docs/paper-tables.md beside the manifest's specs/; None where there is no docs/ folder
    (skdsl's own manifest in an installed package: the page is not written into it)."""
    page = manifest.root / DEFAULT_OUTPUT
    return str(shown(page)) if page.parent.is_dir() else None
