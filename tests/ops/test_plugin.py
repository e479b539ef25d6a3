"""Adding an op is one file: docs/architecture.md's worked example (the `pixelshuffle` op file
and its name in skdsl/ops/__init__.py, taken from the page itself) added to a copy of the
package, and everything else in skdsl shown to follow: grammar, validation, located errors,
lowering, counts, the compiled module, feature_info and the report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"

CHECKS = r'''
import json
import skdsl
from skdsl.base.errors import SpecError
from skdsl.core.spec import json_schema
from skdsl.ops import KEYWORDS
from skdsl.report.network import item_lines
from skdsl.testing import assert_compiles_exactly

TEXT = """network ps:
    input 3x16x16
    classes 10
    stage stem: conv 3x3, 32
    stage up: pixelshuffle {factor}
    stage head:
        avgpool global
        fc classes
"""
spec = skdsl.parse(TEXT.format(factor=2))
analysis = skdsl.analyze(spec)
exact = assert_compiles_exactly(spec)
model = skdsl.compile(spec)
try:
    skdsl.analyze(skdsl.parse(TEXT.format(factor=3)))
    located = None
except SpecError as error:
    located = [error.code, error.span.line, error.span.column]
print(json.dumps({
    "file": skdsl.__file__,
    "keyword": "pixelshuffle" in KEYWORDS,
    "example": KEYWORDS["pixelshuffle"].example,
    "params": analysis.params, "exact_params": exact.params,
    "mult_adds": analysis.mult_adds, "exact_mult_adds": exact.mult_adds,
    "module": type(model.up.shuffle).__name__,
    "feature_info": model.feature_info,
    "rows": item_lines(spec.stages[1].body[0]),
    "schema": "PixelShuffle" in json_schema()["$defs"],
    "located": located,
}))
'''


def _python_blocks(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def plugged(tmp_path_factory) -> dict:
    """The checks' findings on a copy of skdsl with the page's op file added."""
    page = PAGE.read_text(encoding="utf-8")
    op_file, import_line = _python_blocks(page[page.index("## Adding an op"):])[:2]
    copy = tmp_path_factory.mktemp("plugin")
    shutil.copytree(ROOT / "skdsl", copy / "skdsl",
                    ignore=shutil.ignore_patterns("__pycache__", "specs"))
    (copy / "skdsl" / "ops" / "shuffle_pixels.py").write_text(op_file, encoding="utf-8")
    registry = copy / "skdsl" / "ops" / "__init__.py"
    text = registry.read_text(encoding="utf-8")
    families = re.search(r"^from \. import conv[^\n#]*", text, re.M)
    assert families, "skdsl/ops/__init__.py no longer imports its families in one line"
    registry.write_text(text.replace(families[0], import_line.strip()), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    result = subprocess.run([sys.executable, "-P", "-c", CHECKS], cwd=copy, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    findings = json.loads(result.stdout.strip().splitlines()[-1])
    assert findings["file"] == str(copy / "skdsl" / "__init__.py")  # the copy, not the checkout
    return findings


def test_the_keyword_and_its_spec_model_come_from_the_one_file(plugged):
    assert plugged["keyword"] and plugged["schema"]
    assert plugged["example"]


def test_counts_and_the_module_agree(plugged):
    assert plugged["params"] == plugged["exact_params"]
    assert plugged["mult_adds"] == plugged["exact_mult_adds"]
    assert plugged["module"] == "PixelShuffle"


def test_a_mistake_is_located_at_the_factor(plugged):
    assert plugged["located"] == ["SK301", 5, 28]  # the 3 of `pixelshuffle 3`


def test_feature_info_and_the_report_follow(plugged):
    assert [entry["num_chs"] for entry in plugged["feature_info"]] == [32, 8]
    assert plugged["rows"] == ["pixel shuffle, ×2"]
