"""The import rules: pyproject.toml's [tool.importlinter] contracts, run by import-linter over
every module of skdsl (imports inside functions included), and each shown able to fail on a copy
of the package with one forbidden import added. docs/testing.md, "Import rules checked in CI".
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "importlinter"]["contracts"]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("importlinter") is None,
                                reason="import-linter is not installed: pip install -e '.[test]'")


def lint_imports(folder: Path, *contract_ids: str) -> subprocess.CompletedProcess:
    """`lint-imports` in `folder` (its pyproject.toml, its skdsl first on sys.path), no cache."""
    contracts = [word for id in contract_ids for word in ("--contract", id)]
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as main; "
               "main()", "--no-cache", *contracts]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}  # one line per contract
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)


def test_every_import_rule_holds():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


# One import per rule that each breaks; appended at the end of the module, where import-linter
# reads it as it reads any other.
BREAKS = {
    "pipeline-layers": ("core/graph.py", "def _parse():\n    from ..lang import parser"),
    "torch-free-core": ("core/analysis.py", "import torch"),
    "rich-free-core": ("nn/compiler.py", "def _draw():\n    import rich.table"),
    "commands-on-top": ("nn/doctor.py", "from ..commands import main"),
    "facade-on-top": ("report/compare.py", "def _analyze():\n    import skdsl"),
    "no-cycles": ("core/spec.py", "def _layers():\n    from ..nn import compiler"),
}


def test_every_rule_is_exercised_here():
    assert sorted(BREAKS) == sorted(contract["id"] for contract in CONTRACTS)


def _all_but_python(where: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"
            or not (name.endswith(".py") or (Path(where) / name).is_dir())]


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    """skdsl's Python files and pyproject.toml, in a folder of their own."""
    folder = tmp_path_factory.mktemp("layering")
    shutil.copytree(ROOT / "skdsl", folder / "skdsl", ignore=_all_but_python)
    shutil.copy(ROOT / "pyproject.toml", folder)
    return folder


@pytest.mark.parametrize("contract_id", sorted(BREAKS))
def test_a_forbidden_import_breaks_its_rule(package_copy, contract_id):
    file, line = BREAKS[contract_id]
    module = package_copy / "skdsl" / file
    original = module.read_text(encoding="utf-8")
    module.write_text(f"{original}\n\n{line}\n", encoding="utf-8")
    try:
        result = lint_imports(package_copy, contract_id)
    finally:
        module.write_text(original, encoding="utf-8")
    name = next(contract["name"] for contract in CONTRACTS if contract["id"] == contract_id)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{name} BROKEN" in result.stdout, result.stdout


def test_the_rules_are_documented():
    page = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    section = page[page.index("## Import rules checked in CI"):]
    missing = [contract["id"] for contract in CONTRACTS if f"`{contract['id']}`" not in section]
    assert missing == []
