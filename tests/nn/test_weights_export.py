"""`skdsl weights export`: a spec's weights back under timm's names, the inverse of convert.

The property: for every built-in family, timm -> skdsl -> timm is the identity on the state dict
(the same keys, bitwise-equal tensors of the same dtypes), on fake state dicts made from the
manifests of tests/data/timm_keys (test_weights.py), directly and through a rule file.
"""

from __future__ import annotations

import pytest
import torch

from skdsl.nn import weights
from skdsl.nn.weight_rules import Family, Rule, WeightsError
from test_weights import MODELS, compiled, fake_state_dict, run, spec_path  # noqa: F401

RESNEXT = "resnext50_32x4d"


def _same(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key


@pytest.mark.parametrize("model", MODELS)
def test_timm_to_skdsl_to_timm_is_the_identity(model, compiled):
    source = fake_state_dict(model, seed=3)
    target = compiled(model).state_dict()
    converted = weights.convert_state_dict(source, target)
    family, back = weights.export_state_dict(converted, target)
    assert family == weights.detect_family(source)
    assert family.model_name(back) == model
    _same(back, source)


@pytest.mark.parametrize("model", MODELS)
def test_the_identity_holds_through_a_rule_file(model, compiled, tmp_path):
    """The family, written as a rule file of a library of its own, loaded and used for this
    call alone: the same bijection."""
    source = fake_state_dict(model, seed=4, shared=True)
    target = compiled(model).state_dict()
    path = tmp_path / "mine.toml"
    path.write_text(weights.dump_rules(weights.detect_family(source)).replace(
        "[family]\n", "[family]\norigin = 'mine'\n", 1), encoding="utf-8")
    family = weights.load_rules(path)
    converted = weights.convert_state_dict(source, target, "mine", families=[family])
    used, back = weights.export_state_dict(converted, target, "mine", families=[family])
    assert used is family
    _same(back, source)


def _converted(capsys, tmp_path, model=RESNEXT, *flags) -> tuple[dict, str]:
    """timm's fake weights, converted with the command: (the source, OUT's path)."""
    state = fake_state_dict(model, shared=True)
    torch.save(state, tmp_path / "in.pth")
    status, _, err = run(capsys, "weights", "convert", "--from", "timm", spec_path(model),
                         str(tmp_path / "in.pth"), str(tmp_path / "skdsl.pt"), *flags)
    assert status == 0, err
    return state, str(tmp_path / "skdsl.pt")


def export_cli(capsys, tmp_path, source: str, model=RESNEXT, *flags, name="timm.pt"):
    output = tmp_path / name
    status, out, err = run(capsys, "weights", "export", "--to", "timm", spec_path(model),
                           source, str(output), *flags)
    return status, out, err, output


def test_export_writes_timm_s_state_dict(capsys, tmp_path):
    state, converted = _converted(capsys, tmp_path, "skresnet50d")
    status, out, err, output = export_cli(capsys, tmp_path, converted, "skresnet50d")
    assert status == 0, err
    assert out.startswith("ok: skresnet50d -> timm skresnet50d (SK-ResNet-D): 540 tensors, "
                          "25,822,392 parameters, written to ")
    _same(torch.load(output, weights_only=True), state)


def test_export_reads_a_wrapped_state_dict_and_writes_safetensors(capsys, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    state, converted = _converted(capsys, tmp_path)
    wrapped = tmp_path / "wrapped.pt"
    skdsl_state = torch.load(converted, weights_only=True)
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in skdsl_state.items()}},
               wrapped)
    status, out, err, output = export_cli(capsys, tmp_path, str(wrapped),
                                          name="timm.safetensors")
    assert status == 0, err
    assert out.rstrip().endswith("(safetensors)")
    _same(load_file(output), state)
    status, _, err, output = export_cli(capsys, tmp_path, str(wrapped), RESNEXT, "--format",
                                        "safetensors", name="named.pt")
    assert status == 0, err
    assert output.read_bytes()[8:10] == b'{"'  # safetensors, whatever the name says


def test_export_leaves_out_the_head_and_takes_another_class_count(capsys, tmp_path):
    state = fake_state_dict(RESNEXT, shared=True)
    state["fc.weight"], state["fc.bias"] = torch.randn(10, 2048), torch.randn(10)
    torch.save(state, tmp_path / "in.pth")
    status, _, err = run(capsys, "weights", "convert", "--from", "timm", spec_path(RESNEXT),
                         str(tmp_path / "in.pth"), str(tmp_path / "skdsl.pt"), "--classes", "10")
    assert status == 0, err
    status, _, err, output = export_cli(capsys, tmp_path, str(tmp_path / "skdsl.pt"), RESNEXT,
                                        "--classes", "10")
    assert status == 0, err
    _same(torch.load(output, weights_only=True), state)
    status, out, err, output = export_cli(capsys, tmp_path, str(tmp_path / "skdsl.pt"), RESNEXT,
                                          "--classes", "10", "--skip-head", name="bare.pt")
    assert status == 0 and "(head left out)" in out, err
    _same(torch.load(output, weights_only=True),
          {k: v for k, v in state.items() if not k.startswith("fc.")})


def _assert_refused(status, err, output, code, *words):
    assert status == 2 and f"error {code}:" in err, err
    for word in words:
        assert word in err, word
    assert "Traceback" not in err and not output.exists()


def test_weights_that_are_not_the_spec_s_are_named(capsys, tmp_path):
    _, converted = _converted(capsys, tmp_path)
    state = torch.load(converted, weights_only=True)
    del state["conv3.block2.conv2.bn.running_var"]
    state["conv3.block2.extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "odd.pt")
    status, _, err, output = export_cli(capsys, tmp_path, str(tmp_path / "odd.pt"))
    _assert_refused(status, err, output, "SK524", "these weights are not those of spec "
                    "'resnext50_32x4d'", "in the weights, not in spec 'resnext50_32x4d' (1):\n"
                    "    conv3.block2.extra.weight", "conv3.block2.conv2.bn.running_var")
    status, _, err, output = export_cli(capsys, tmp_path, converted, RESNEXT, "--classes", "10")
    _assert_refused(status, err, output, "SK525", "head.fc.weight (1000×2048), in spec "
                    "'resnext50_32x4d' (10×2048)")


def test_an_unknown_library_or_family_is_refused_with_the_known_ones(capsys, tmp_path):
    _, converted = _converted(capsys, tmp_path)
    output = tmp_path / "timm.pt"
    status, _, err = run(capsys, "weights", "export", "--to", "keras", spec_path(RESNEXT),
                         converted, str(output))
    _assert_refused(status, err, output, "SK523", "--to 'keras': skdsl knows the weights of timm")
    status, _, err, output = export_cli(capsys, tmp_path, converted, RESNEXT, "--family", "nope")
    _assert_refused(status, err, output, "SK523", "--family 'nope': timm has no such family",
                    "resnext, seresnext, skresnext, skresnet-basic, skresnet, skresnet-d")


def test_a_named_family_is_used_instead_of_the_detected_one(capsys, tmp_path):
    """ResNeXt's weights are SE-ResNeXt's without the SE: exported as SE-ResNeXt, they are all
    exported all the same (the family is the user's word), and the name says so."""
    state, converted = _converted(capsys, tmp_path)
    status, out, err, output = export_cli(capsys, tmp_path, converted, RESNEXT, "--family",
                                          "seresnext")
    assert status == 0 and "timm seresnext50_32x4d (SE-ResNeXt)" in out, err
    _same(torch.load(output, weights_only=True), state)


def test_keys_no_rule_exports_are_named_with_what_was_recognised(compiled):
    target = compiled(RESNEXT).state_dict()
    state = dict(weights.convert_state_dict(fake_state_dict(RESNEXT, shared=True), target))
    state["conv2.block1.gate.weight"] = state["conv2.block2.gate.weight"] = torch.zeros(2)
    with pytest.raises(WeightsError) as raised:
        weights.export_state_dict(state, None, spec_name="spec 'x'")
    assert raised.value.code == "SK524"
    assert raised.value.message.startswith(
        "the weights of spec 'x' do not export to timm's ResNeXt key for key\n"
        "  recognised: 320 of their 322 keys, by ResNeXt's rules\n"
        "  in spec 'x', exported by no ResNeXt rule (2):\n"
        "    conv*.block*.gate.weight (2, such as conv2.block1.gate.weight)")


def test_rules_that_do_not_run_backwards_are_refused():
    family = Family("shadow", "Shadow", "b", (Rule("a.{i}", "x.{i}"), Rule("a.1", "y.one")),
                    ("x",), ("shadow*",), origin="lib")
    with pytest.raises(WeightsError) as raised:
        weights.export_state_dict({"x.0": torch.zeros(1), "y.one": torch.zeros(1)}, None,
                                  "lib", [family])
    assert raised.value.code == "SK528"
    assert "y.one -> a.1 -> x.1" in raised.value.message


def test_no_family_exports_a_spec_of_other_names(capsys, tmp_path):
    from skdsl.nn.weights import export_state_dict

    with pytest.raises(WeightsError) as raised:
        export_state_dict({"stage1.unit1.conv.weight": torch.zeros(1)}, None)
    assert raised.value.code == "SK523"
    assert "no rule exports any of their keys" in raised.value.message
    assert "stage1.unit1.conv.weight" in raised.value.message


@pytest.mark.parametrize("action", [["convert", "--from", "timm"], ["export", "--to", "timm"]])
def test_out_dash_is_refused_not_a_file_named_dash(action, tmp_path, monkeypatch, capsys):
    """Found by the CLI fuzzer (seed 207): OUT '-' wrote a file called '-'."""
    from skdsl.commands import main

    monkeypatch.chdir(tmp_path)
    assert main(["weights", *action, spec_path("resnext50_32x4d"), "in.pt", "-"]) == 2
    assert "error SK526: OUT '-'" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()
