"""The scripts in examples/ run to completion, stay short and say what they show.

Each script runs as a user would run it, `python examples/NAME.py`, in a subprocess from the
repository root; the repository is put on PYTHONPATH so that an uninstalled checkout works too.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import skdsl

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# script -> a line its output must contain
SCRIPTS = {
    "load_and_analyze.py": "27,479,784",
    "parse_text.py": "conv3.block1.shortcut",
    "compile_and_run.py": "mult-adds    torch",
    "sweep_sk_options.py": "paper setting: 27,479,784 params, 4,462,710,784 mult-adds",
    "attention_weights.py": "conv3.block2.sk",
}


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_example_runs(script):
    result = run(script)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    assert SCRIPTS[script] in result.stdout, result.stdout


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_example_is_short_and_documented(script):
    source = (EXAMPLES / script).read_text(encoding="utf-8")
    assert len(source.splitlines()) < 40, f"{script} has {len(source.splitlines())} lines"
    assert ast.get_docstring(ast.parse(source)), f"{script} has no docstring"


def test_example_specs_load():
    sk_files = sorted(EXAMPLES.glob("*.sk"))
    assert sk_files
    for path in sk_files:
        skdsl.analyze(skdsl.load(path))


def test_options_spec_defaults_to_the_paper():
    report = skdsl.analyze(skdsl.load(EXAMPLES / "sknet50_options.sk"))
    assert (report.params, report.mult_adds) == (27_479_784, 4_462_710_784)


def test_load_and_analyze_takes_a_path():
    result = run("load_and_analyze.py", "specs/resnext50_32x4d.sk")
    assert result.returncode == 0, result.stderr
    assert "25,028,904" in result.stdout
