"""Packaging: every import is declared, and the wheel works on its own, outside the source tree.

(a) scans every skdsl module's imports (lazy ones inside functions, and `find_spec("name")`
probes, included) and checks each third-party one against pyproject.toml: module-level imports
need a core dependency, the rest a core dependency or an extra. (b) builds the wheel, installs
it into a fresh venv (system site-packages visible, so torch is not installed again) and runs
the CLI by zoo name from a folder outside the tree.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# Modules that only an extra's users import (a path, or a folder's prefix for every file in
# it): their own module-level imports may be that extra's.
OPTIONAL_MODULES = {"skdsl/testing/": "test"}


def _optional_extra(file: str) -> str | None:
    """The extra whose users alone import `file` (a path under the root), if any."""
    return next((extra for prefix, extra in OPTIONAL_MODULES.items() if file.startswith(prefix)),
                None)


# Import names whose distribution is named otherwise, for when the distribution is not installed.
DISTRIBUTIONS = {"PIL": "pillow"}


def _name(requirement: str) -> str:
    """PEP 503's normal form of a requirement's distribution name: 'Pillow>=10' -> 'pillow'."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement)[0]).lower()


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distribution(module: str) -> str:
    installed = _installed().get(module)
    return _name(installed[0] if installed else DISTRIBUTIONS.get(module, module))


CORE = {_name(r) for r in PYPROJECT["dependencies"]}
EXTRAS = {extra: {_name(r) for r in requirements}
          for extra, requirements in PYPROJECT["optional-dependencies"].items()}


class _Imports(ast.NodeVisitor):
    """(module, line, lazy) for every absolute import and find_spec/import_module probe."""

    def __init__(self):
        self.found: list[tuple[str, int, bool]] = []
        self.depth = 0  # functions entered: an import inside one runs only when it is called

    def visit_FunctionDef(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node):
        self.found += [(alias.name, node.lineno, self.depth > 0) for alias in node.names]

    def visit_ImportFrom(self, node):
        if node.level == 0:
            self.found.append((node.module, node.lineno, self.depth > 0))

    def visit_Call(self, node):
        if _probe(node) == "literal":
            self.found.append((node.args[0].value, node.lineno, True))
        self.generic_visit(node)

    def visit_ListComp(self, node):
        """`[n for n in ("onnx", "onnxscript") if find_spec(n) is None]` probes both names."""
        generator = node.generators[0]
        probed = {call.args[0].id for call in ast.walk(node) if _probe(call) == "variable"}
        if isinstance(generator.target, ast.Name) and generator.target.id in probed and \
                isinstance(generator.iter, (ast.Tuple, ast.List)):
            self.found += [(item.value, node.lineno, True) for item in generator.iter.elts
                           if isinstance(item, ast.Constant) and isinstance(item.value, str)]
        self.generic_visit(node)

    visit_GeneratorExp = visit_SetComp = visit_ListComp


def _probe(node) -> str | None:
    """'literal' for find_spec("x") / import_module("x"), 'variable' for find_spec(name)."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    called = node.func.attr if isinstance(node.func, ast.Attribute) else \
        getattr(node.func, "id", None)
    if called not in ("find_spec", "import_module"):
        return None
    argument = node.args[0]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return "literal"
    return "variable" if isinstance(argument, ast.Name) else None


def third_party_imports() -> list[tuple[str, str, int, bool]]:
    """(file, top-level module, line, lazy) for every third-party import in skdsl/."""
    found = []
    for path in sorted((ROOT / "skdsl").rglob("*.py")):
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        file = path.relative_to(ROOT).as_posix()
        for module, line, lazy in visitor.found:
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ("skdsl", "__future__"):
                found.append((file, top, line, lazy))
    return found


def test_the_scan_sees_lazy_imports_and_probes():
    seen = {(file, module, lazy) for file, module, _, lazy in third_party_imports()}
    assert ("skdsl/nn/compiler.py", "torch", False) in seen
    assert ("skdsl/nn/export.py", "onnxscript", True) in seen  # a find_spec probe
    assert any(file.startswith("skdsl/testing/") and module == "hypothesis" and not lazy
               for file, module, lazy in seen)


def test_every_third_party_import_is_declared():
    undeclared, not_core = [], []
    for file, module, line, lazy in third_party_imports():
        where = f"{file}:{line} imports {module}"
        dist = _distribution(module)
        allowed = CORE | EXTRAS.get(_optional_extra(file) or "", set())
        if dist not in CORE | set().union(*EXTRAS.values()):
            undeclared.append(f"{where} ({dist}): declare it in pyproject.toml")
        elif not lazy and dist not in allowed:
            not_core.append(f"{where} at module level: {dist} is optional; import it where used")
    assert not undeclared + not_core, "\n".join(undeclared + not_core)


def test_optional_modules_are_imported_by_no_core_module():
    """skdsl.testing (hypothesis) is the test extra's: a core module importing it would need it."""
    for path in (ROOT / "skdsl").rglob("*.py"):
        file = path.relative_to(ROOT).as_posix()
        if _optional_extra(file):
            continue
        text = path.read_text(encoding="utf-8")
        for optional in OPTIONAL_MODULES:
            name = Path(optional).stem
            assert not re.search(rf"^(from \.|from skdsl\.|import skdsl\.){name}\b", text,
                                 re.M), f"{file} imports skdsl.{name} at module level"


def test_numpy_and_the_onnx_exporter_are_declared():
    """numpy: torch's CPU wheel lacks it and torch.distributed's object collectives need it;
    `export --format onnx` needs onnx and onnxscript (skdsl/nn/export.py's SK533)."""
    assert "numpy" in CORE
    assert {"onnx", "onnxscript", "onnxruntime"} <= EXTRAS["onnx"]


# -- (b) the wheel, installed in a fresh venv, outside the source tree ---------------------------


def _run(command: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{' '.join(map(str, command))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel, built by the PEP 517 backend from a copy (two runs never share build/)."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "skdsl", source / "skdsl", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.build_wheel(sys.argv[1]))")
    name = _run([sys.executable, "-c", code, str(tmp_path / "dist")], source).strip().splitlines()
    return tmp_path / "dist" / name[-1]


def _venv(tmp_path: Path) -> Path:
    """A fresh venv that sees this environment's packages (torch, pip) but not skdsl's source.

    `--system-site-packages` would show the base interpreter's packages, not those of the venv
    CI runs in; a .pth line per site-packages folder of ours shows exactly these. Their own .pth
    files (the editable skdsl's finder among them) are not run, and the venv's site-packages,
    where the wheel goes, comes first on sys.path.
    """
    import site
    import venv  # noqa: F401 - its absence skips this test below

    venv_dir = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv_dir)], tmp_path)
    bin_dir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
    purelib = _run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   tmp_path).strip()
    ours = [path for path in site.getsitepackages() if Path(path).is_dir()]
    (Path(purelib) / "outer_environment.pth").write_text("\n".join(ours) + "\n")
    return bin_dir


def test_the_wheel_builds_the_zoo_by_name_outside_the_tree(tmp_path):
    pytest.importorskip("venv", reason="no venv module: cannot make a fresh environment")
    pytest.importorskip("pip", reason="no pip: cannot install the wheel into a venv")
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    shipped = {n for n in names if n.startswith("skdsl/specs/") and n.endswith(".sk")}
    assert len(shipped) == len(list((ROOT / "skdsl" / "specs").rglob("*.sk")))
    assert {"skdsl/specs/zoo.toml", "skdsl/specs/paper_tables.toml", "skdsl/py.typed",
            "skdsl/lang/grammar.lark", "skdsl/lang/std/resnext.sk"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: MIT" in metadata.decode()

    bin_dir = _venv(tmp_path)
    python = bin_dir / "python"
    # Our pip, run by the venv's python, installs into the venv; --ignore-installed because our
    # environment may hold an editable skdsl of the same version.
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
          "--quiet", str(wheel)], tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where = _run([python, "-c", "import skdsl, importlib.metadata as m, json; "
                  "print(json.dumps([skdsl.__file__, m.requires('skdsl')]))"], outside, env)
    module, requires = json.loads(where)
    assert Path(module).is_relative_to(tmp_path / "venv"), module
    assert {_name(r) for r in requires if "extra ==" not in r} == CORE

    skdsl_cli = str(bin_dir / "skdsl")
    report = _run([skdsl_cli, "build", "sknet50", "--report"], outside, env)
    assert "27,479,784" in report and "SK[M=2, G=32, r=16], 128" in report
    built = json.loads(_run([skdsl_cli, "build", "specs/sknet50.sk", "--json"], outside, env))
    assert (built["network"], built["params"]) == ("sknet50", 27_479_784)
    assert "rows checked" in _run([skdsl_cli, "tables", "--check"], outside, env)
