"""skdsl/lang/zoo.py: the registry of shipped networks, name resolution, create_model, pretrained_cfg."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import skdsl
from skdsl.lang import zoo
from skdsl.commands import main

ROOT = Path(__file__).resolve().parents[2]
TINY = "network tiny:\n    input 3x8x8\n    classes 3\n    stage s:\n        avgpool global\n" \
       "        fc classes\n"


# -- the registry --------------------------------------------------------------------------------


def test_every_shipped_spec_is_registered_once_under_its_network_name():
    registered = {entry.spec: name for name, entry in zoo.registry().models.items()}
    shipped = {str(p.relative_to(zoo.SPECS_DIR)) for p in zoo.SPECS_DIR.rglob("*.sk")}
    assert set(registered) == shipped and len(registered) == len(zoo.registry().models)
    for spec, name in registered.items():
        assert skdsl.load(zoo.SPECS_DIR / spec).name == name, spec


def test_list_models_matches_shell_patterns():
    assert skdsl.list_models("sknet*") == ["sknet101", "sknet26", "sknet29", "sknet50",
                                           "sknet50_sk_pair", "sknet50_sk_triple",
                                           "sknet50_sum_pair", "sknet50_sum_single",
                                           "sknet50_sum_triple", "sknet_tiny"]
    assert skdsl.list_models("*29*") == ["resnext29_16x32d", "resnext29_16x64d",
                                         "resnext29_8x64d", "senet29", "sknet29"]
    assert skdsl.list_models("SHUFFLENET_V2_X1_0") == ["shufflenet_v2_x1_0"]
    assert skdsl.list_models("nothing*") == []
    assert len(skdsl.list_models()) == len(zoo.registry().models) == 51


# -- resolving what the user typed ---------------------------------------------------------------


def test_a_zoo_name_a_shipped_path_and_a_file_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the source tree, as from an installed wheel
    sknet50 = zoo.SPECS_DIR / "sknet50.sk"
    assert zoo.resolve("sknet50") == sknet50
    assert zoo.resolve("specs/sknet50.sk") == sknet50
    assert zoo.resolve("cifar/sknet29.sk") == zoo.SPECS_DIR / "cifar" / "sknet29.sk"
    assert zoo.resolve("shufflenet_v2_x0_5") == zoo.SPECS_DIR / "shufflenetv2" / "x0_5.sk"
    assert skdsl.load("specs/sknet50.sk").name == "sknet50"


def test_a_file_wins_over_a_zoo_name_and_a_folder_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sknet50").write_text(TINY)
    assert zoo.resolve("sknet50") == Path("sknet50")
    assert skdsl.load("sknet50").name == "tiny"
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "sknet26.sk").write_text(TINY)
    assert skdsl.load("specs/sknet26.sk").name == "tiny"
    (tmp_path / "sknet101").mkdir()  # a run's --out folder
    assert skdsl.load("sknet101").name == "sknet101"


def test_an_unknown_name_is_sk110_with_the_closest_zoo_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(skdsl.SpecError) as error:
        skdsl.load("sknet5")
    assert error.value.render() == ("error SK110: no such file or zoo model: 'sknet5'\n"
                                    "  = hint: did you mean 'sknet50', 'sknet29' or 'sknet26'?")
    with pytest.raises(skdsl.SpecError, match="no such file or zoo model") as error:
        skdsl.load("zzzz")
    assert "skdsl.list_models()" in error.value.hint
    with pytest.raises(skdsl.SpecError, match="no such file: 'specs/sknet5.sk'"):
        skdsl.load("specs/sknet5.sk")  # a path keeps the reader's own error


def test_a_name_the_system_cannot_look_up_is_left_to_the_reader():
    with pytest.raises(skdsl.SkdslError) as error:
        skdsl.load("a" * 5000)  # too long for a file name: stat raises, resolve must not
    assert error.value.code != "SK110"


def test_cli_commands_take_a_zoo_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["build", "sknet50"]) == 0
    assert capsys.readouterr().out.startswith("sknet50: 27,479,784 params")
    assert main(["check", "sknet_tiny", "--set", "M=3"]) == 0
    assert main(["build", "sknet5"]) == 2
    assert capsys.readouterr().err.startswith("error SK110: no such file or zoo model")


# -- create_model --------------------------------------------------------------------------------


def _counts(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_create_model_with_num_classes_counts_as_the_overridden_spec():
    import torch

    model = skdsl.create_model("sknet_tiny", num_classes=10 + 3)
    spec = skdsl.load("sknet_tiny", num_classes=13)
    assert spec.classes == 13
    assert _counts(model) == skdsl.analyze(spec).params == 274_722 + 3 * 257
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 13)
    assert model.pretrained_cfg == {
        "architecture": "sknet_tiny", "input_size": (3, 32, 32), "num_classes": 13,
        "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616), "crop_pct": 1.0,
        "interpolation": "bilinear"}


def test_num_classes_sets_the_param_that_the_classes_line_names():
    spec = skdsl.load("sknet29", num_classes=100)
    assert spec.classes == 100 and spec.parameters["num_classes"] == 100
    assert skdsl.analyze(spec).params == 28_256_394 + 90 * 1025  # CIFAR-100: +92,250


def test_num_classes_on_an_imagenet_spec_changes_the_analysis_not_the_file():
    ten = skdsl.analyze(skdsl.load("sknet50", num_classes=10))
    assert ten.params == 27_479_784 - 990 * 2049 and tuple(ten.output) == (10,)
    assert skdsl.load("sknet50").classes == 1000  # the parsed file is not cached edited


def test_create_model_passes_param_overrides():
    small = skdsl.create_model("sknet_tiny", M=3)
    assert _counts(small) == skdsl.analyze(skdsl.load("sknet_tiny", {"M": 3})).params


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True, "10"])
def test_a_bad_num_classes_is_sk550(num_classes):
    with pytest.raises(skdsl.SkdslError, match="expected a positive integer") as error:
        skdsl.load("sknet_tiny", num_classes=num_classes)
    assert error.value.code == "SK550"


def test_num_classes_needs_a_classes_line_that_reaches_the_head(tmp_path):
    backbone = tmp_path / "backbone.sk"
    backbone.write_text("network backbone:\n    input 3x8x8\n    stage s: conv 3x3, 4\n")
    with pytest.raises(skdsl.SpecError, match="declares no `classes`") as error:
        skdsl.create_model(backbone, num_classes=10)
    assert error.value.code == "SK550" and error.value.span.line == 1
    literal = tmp_path / "literal.sk"
    literal.write_text(TINY.replace("fc classes", "fc 3"))
    with pytest.raises(skdsl.SkdslError, match="head does not follow its `classes` line"):
        skdsl.create_model(literal, num_classes=10)


# -- pretrained_cfg ------------------------------------------------------------------------------


def test_pretrained_cfg_follows_the_zoo_and_takes_changes():
    cfg = zoo.pretrained_cfg("inception_v3", (3, 299, 299), 1000, crop_pct=1.0)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["interpolation"] == "bicubic"
    assert cfg["crop_pct"] == 1.0 and cfg["input_size"] == (3, 299, 299)
    assert zoo.pretrained_cfg("sknet50", (3, 224, 224), 1000)["interpolation"] == "bicubic"
    assert zoo.pretrained_cfg("resnext50_32x4d", (3, 224, 224), 1000)["interpolation"] == \
        "bilinear"


def test_a_spec_outside_the_zoo_has_shapes_only(tmp_path):
    path = tmp_path / "mine.sk"
    path.write_text(TINY)
    assert skdsl.create_model(path).pretrained_cfg == {
        "architecture": None, "input_size": (3, 8, 8), "num_classes": 3}
    with pytest.raises(skdsl.SkdslError, match="pretrained_cfg mean: Field required"):
        skdsl.create_model(path, pretrained_cfg={"interpolation": "bicubic"})


@pytest.mark.parametrize("changes, message", [
    ({"crop": 0.9}, "pretrained_cfg has no field 'crop'"),
    ({"interpolation": "lanczos"}, "pretrained_cfg interpolation: Input should be"),
    ({"crop_pct": 1.5}, "pretrained_cfg crop_pct: Input should be less than or equal to 1"),
])
def test_a_bad_pretrained_cfg_is_sk551(changes, message):
    with pytest.raises(skdsl.SkdslError, match=message) as error:
        zoo.pretrained_cfg("sknet50", (3, 224, 224), 1000, **changes)
    assert error.value.code == "SK551"


def test_the_model_zoo_page_examples_run_as_shown(monkeypatch, tmp_path):
    """docs/model-zoo.md's Python session (create_model, pretrained_cfg) runs as a doctest."""
    import doctest
    import re

    page = (ROOT / "docs" / "model-zoo.md").read_text(encoding="utf-8")
    session = re.search(r"^```python\n(>>> .*?)^```", page, re.S | re.M)[1]
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestParser().get_doctest(session, {}, "model-zoo.md", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_the_zoo_imports_no_torch():
    code = ("import sys, skdsl\nskdsl.list_models(); skdsl.load('sknet50', num_classes=10)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
