"""skdsl/nn/weights.py: timm state dicts mapped onto compiled specs, key for key, or a named error.

CI has no timm: tests/data/timm_keys/*.json hold the keys, shapes and dtypes of timm's
resnext50_32x4d, seresnext50_32x4d, skresnext50_32x4d and skresnet18/34/50/50d state dicts
(written by `benchmarks/timm_equality.py --write-manifests`), and the tests build fake state
dicts of random tensors from them. Outputs are compared with tests/timm_reference.py's
independent SK-ResNets under timm's names in every run, and with timm's own models where timm is
importable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest
import torch

import skdsl
from skdsl.nn import weights
from skdsl.commands import main
from skdsl.nn.weights import WeightsError

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "timm_keys"
# timm model -> the title of its family, and its name as the keys alone tell it (without
# shapes: no cardinality × width, and skresnet50's split SK has the keys of skresnext50's)
FAMILY_OF = {
    "resnext50_32x4d": ("ResNeXt", "resnext50"),
    "seresnext50_32x4d": ("SE-ResNeXt", "seresnext50"),
    "skresnext50_32x4d": ("SK-ResNeXt", "skresnext50"),
    "skresnet18": ("SK-ResNet", "skresnet18"),
    "skresnet34": ("SK-ResNet", "skresnet34"),
    "skresnet50": ("SK-ResNet", "skresnext50"),
    "skresnet50d": ("SK-ResNet-D", "skresnet50d"),
    # the tiered stem (t) shows in its widths only: keys alone read as the deep stem's d
    "ecaresnet26t": ("ECA-ResNet-D", "ecaresnet26d"),
    "ecaresnet50d": ("ECA-ResNet-D", "ecaresnet50d"),
    "seresnext26d_32x4d": ("SE-ResNeXt-D", "seresnext26d"),
    "resnest14d": ("ResNeSt-D", "resnest14d"),
    "resnest26d": ("ResNeSt-D", "resnest26d"),
    "resnest50d": ("ResNeSt-D", "resnest50d"),
}
MODELS = sorted(FAMILY_OF)


def manifest(model: str) -> dict:
    return json.loads((MANIFESTS / f"{model}.json").read_text(encoding="utf-8"))


def spec_path(model: str) -> str:
    return str(ROOT / manifest(model)["spec"])


@pytest.fixture(scope="module")
def compiled():
    """The compiled module of each manifest's spec, built once."""
    cache: dict[str, torch.nn.Module] = {}

    def get(model: str) -> torch.nn.Module:
        if model not in cache:
            cache[model] = skdsl.compile(skdsl.load(spec_path(model)))
        return cache[model]

    return get


def fake_state_dict(model: str, seed: int = 0, shared: bool = False) -> dict[str, torch.Tensor]:
    """Random tensors of the manifest's keys, shapes and dtypes. `shared`: float tensors are
    slices of one storage, at distinct offsets (a file of a few MB instead of 100 MB)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = manifest(model)["tensors"]
    base = None
    if shared:
        largest = max(torch.Size(t["shape"]).numel() for t in tensors.values())
        base = torch.randn(largest + len(tensors), generator=generator)
    state = {}
    for index, (key, info) in enumerate(tensors.items()):
        shape, dtype = torch.Size(info["shape"]), getattr(torch, info["dtype"])
        if not dtype.is_floating_point:
            state[key] = torch.randint(0, 10_000, shape, generator=generator, dtype=dtype)
        elif shared:
            state[key] = base[index:index + shape.numel()].view(shape)
        else:
            state[key] = torch.randn(shape, generator=generator, dtype=dtype)
    return state


def run(capsys, *argv):
    """`skdsl weights ...` -> (status, stdout, stderr), through the command line's `main`."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def convert_cli(capsys, tmp_path, model: str, state, name: str = "in.pth", spec=None):
    source, output = tmp_path / name, tmp_path / "out.pt"
    torch.save(state, source)
    status, out, err = run(capsys, "weights", "convert", "--from", "timm",
                           spec or spec_path(model), str(source), str(output))
    return status, out, err, output


# -- the rule tables ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_the_manifests_are_timm_models_of_the_spec_size(model):
    data = manifest(model)
    assert data["model"] == model and data["source"].startswith("timm ")
    parameters = sum(torch.Size(t["shape"]).numel() for t in data["tensors"].values()
                     if not t["buffer"])
    assert parameters == skdsl.analyze(skdsl.load(spec_path(model))).params


@pytest.mark.parametrize("model", MODELS)
def test_the_family_and_the_model_are_recognised(model):
    title, from_keys = FAMILY_OF[model]
    state = fake_state_dict(model, shared=True)
    family = weights.detect_family(state)
    assert family.title == title
    assert family.model_name(state) == model  # depth from the units, _32x4d and d from shapes
    keys = list(state)
    assert weights.detect_family(keys).model_name(keys) == from_keys


@pytest.mark.parametrize("model", MODELS)
def test_every_source_tensor_lands_on_exactly_one_target_of_equal_shape(model, compiled):
    source = manifest(model)["tensors"]
    module = compiled(model)
    target = module.state_dict()
    mapping = weights.plan(fake_state_dict(model), target)
    assert mapping.fits, mapping
    links = mapping.links
    assert sorted(links) == sorted(source)                         # every source key maps
    targets = [t for link in links.values() for t in link.targets]
    assert len(set(targets)) == len(targets)                       # onto distinct targets
    assert set(targets) == set(target)                             # covering every target
    buffers = {name for name, _ in module.named_buffers()}
    for key, link in links.items():
        shapes = [list(target[t].shape) for t in link.targets]
        if link.axis is None:
            assert shapes == [source[key]["shape"]], key
        elif not source[key]["shape"]:  # a split BN's batch counter, copied to each branch
            assert all(shape == [] for shape in shapes), key
        else:  # ResNeSt's radix conv and BN: the branches' tensors stacked along the axis
            joined = list(shapes[0])
            joined[link.axis] = sum(shape[link.axis] for shape in shapes)
            assert len(shapes) > 1 and joined == source[key]["shape"], key
        for destination in link.targets:
            assert (destination in buffers) == source[key]["buffer"], key
            assert key.rsplit(".", 1)[1] == destination.rsplit(".", 1)[1], key  # weight->weight
    statistics = [k for k in target if k.endswith(("running_mean", "running_var",
                                                   "num_batches_tracked"))]
    assert statistics and all(k in targets for k in statistics)


@pytest.mark.parametrize("source, target", [
    ("layer2.0.conv2.paths.1.conv.weight", "conv3.block1.sk.branch2.conv.weight"),
    ("layer2.0.conv2.paths.0.bn.num_batches_tracked",
     "conv3.block1.sk.branch1.bn.num_batches_tracked"),
    ("layer1.2.conv2.attn.fc_reduce.weight", "conv2.block3.sk.reduce.conv.weight"),
    ("layer4.0.conv2.attn.bn.running_var", "conv5.block1.sk.reduce.bn.running_var"),
    ("layer3.5.conv2.attn.fc_select.weight", "conv4.block6.sk.logits.weight"),
    ("layer4.2.conv3.bn.running_mean", "conv5.block3.conv2.bn.running_mean"),
    ("layer1.0.conv1.conv.weight", "conv2.block1.conv1.conv.weight"),
    ("conv1.weight", "conv1.conv.conv.weight"),
    ("bn1.running_var", "conv1.conv.bn.running_var"),
    ("layer3.0.downsample.0.weight", "conv4.block1.shortcut.conv.weight"),
    ("layer3.0.downsample.1.bias", "conv4.block1.shortcut.bn.bias"),
    ("fc.weight", "head.fc.weight"),
])
def test_sk_resnext_keys_map_to_the_paper_s_names(source, target):
    family = weights.detect_family(manifest("skresnext50_32x4d")["tensors"])
    assert weights.map_keys(family, [source])[source] == target


@pytest.mark.parametrize("model, source, target", [
    ("resnext50_32x4d", "layer1.0.conv2.weight", "conv2.block1.conv2.conv.weight"),
    ("resnext50_32x4d", "layer4.2.bn3.weight", "conv5.block3.conv3.bn.weight"),
    ("seresnext50_32x4d", "layer2.3.se.fc1.weight", "conv3.block4.se.reduce.weight"),
    ("seresnext50_32x4d", "layer2.3.se.fc2.bias", "conv3.block4.se.expand.bias"),
])
def test_resnext_and_se_keys_map_to_the_paper_s_names(model, source, target):
    family = weights.detect_family(manifest(model)["tensors"])
    assert weights.map_keys(family, [source])[source] == target


@pytest.mark.parametrize("model, source, target", [
    # SelectiveKernelBasic: conv1 is the SK convolution, conv2 the unit's only conv layer
    ("skresnet18", "layer1.1.conv1.paths.1.conv.weight", "conv2.block2.sk.branch2.conv.weight"),
    ("skresnet18", "layer3.0.conv1.attn.fc_select.weight", "conv4.block1.sk.logits.weight"),
    ("skresnet34", "layer2.3.conv1.attn.bn.bias", "conv3.block4.sk.reduce.bn.bias"),
    ("skresnet34", "layer2.3.conv2.bn.running_var", "conv3.block4.conv.bn.running_var"),
    ("skresnet34", "layer4.0.downsample.0.weight", "conv5.block1.shortcut.conv.weight"),
    # SelectiveKernelBottleneck with split input: skresnext's keys
    ("skresnet50", "layer2.0.conv2.paths.0.conv.weight", "conv3.block1.sk.branch1.conv.weight"),
    ("skresnet50", "layer2.0.conv3.conv.weight", "conv3.block1.conv2.conv.weight"),
    # ResNet-D: the deep stem (0, 3, 6 convs; 1, 4 and bn1 BNs) and avg-down shortcuts
    ("skresnet50d", "conv1.0.weight", "conv1.conv1.conv.weight"),
    ("skresnet50d", "conv1.1.running_mean", "conv1.conv1.bn.running_mean"),
    ("skresnet50d", "conv1.3.weight", "conv1.conv2.conv.weight"),
    ("skresnet50d", "conv1.4.weight", "conv1.conv2.bn.weight"),
    ("skresnet50d", "conv1.6.weight", "conv1.conv3.conv.weight"),
    ("skresnet50d", "bn1.bias", "conv1.conv3.bn.bias"),
    ("skresnet50d", "layer1.0.downsample.1.weight", "conv2.block1.shortcut.conv.conv.weight"),
    ("skresnet50d", "layer4.0.downsample.2.num_batches_tracked",
     "conv5.block1.shortcut.conv.bn.num_batches_tracked"),
])
def test_sk_resnet_keys_map_to_the_spec_s_names(model, source, target):
    family = weights.detect_family(fake_state_dict(model, shared=True))
    assert weights.map_keys(family, [source])[source] == target


def test_a_split_sk_is_told_from_a_grouped_one_by_its_branch_shapes():
    """skresnet50 and skresnext50_32x4d have the same keys: a branch conv reading 1/M of the SK's
    channels (split input) or 1/G (groups) tells them apart, in source and spec alike."""
    split = fake_state_dict("skresnet50", shared=True)
    grouped = fake_state_dict("skresnext50_32x4d", shared=True)
    assert sorted(split) == sorted(grouped)
    assert weights.detect_family(split).block == "sk_bottleneck"
    assert weights.detect_family(grouped).block == "sk_unit"
    assert weights.splits_input({"conv2.block1.sk.branch1.conv.weight": torch.zeros(64, 32, 3, 3),
                                 "conv2.block1.sk.branch2.conv.weight": torch.zeros(64, 32, 3, 3)})
    assert not weights.splits_input({"c.sk.branch1.conv.weight": torch.zeros(128, 4, 3, 3),
                                     "c.sk.branch2.conv.weight": torch.zeros(128, 4, 3, 3)})
    assert weights.splits_input(["c.sk.branch1.conv.weight"]) is None  # keys alone


def test_a_rule_matches_whole_keys_and_counts_from_one():
    rule = weights.Rule("layer{s}.{b}.conv{i:conv_index}.{p:tensor}",
                        "conv{s+1}.block{b+1}.c{i}.{p}")
    assert rule.apply("layer4.10.conv3.running_mean") == "conv5.block11.c3.running_mean"
    assert rule.apply("layer4.10.conv3.weight.extra") is None
    assert rule.apply("layer4.x.conv3.weight") is None
    assert rule.apply("xlayer4.1.conv3.weight") is None
    with pytest.raises(ValueError, match="unknown fields"):
        weights.Rule("layer{s}.weight", "conv{t+1}.weight")


def test_the_values_land_unchanged(compiled):
    source = fake_state_dict("skresnext50_32x4d", seed=1)
    target = compiled("skresnext50_32x4d").state_dict()
    converted = weights.convert_state_dict(source, target)
    assert list(converted) == list(target)
    mapping = weights.plan(source, target)
    for key, destination in mapping.pairs.items():
        assert torch.equal(converted[destination], source[key]), key


def test_docs_weights_md_lists_every_rule():
    page = (ROOT / "docs" / "weights.md").read_text(encoding="utf-8")
    for family in weights.FAMILIES["timm"]:
        for rule in family.rules:
            assert f"| `{rule.source}` | `{rule.target}` |" in page, rule


# -- the command ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_convert_writes_a_state_dict_that_loads_into_the_compiled_spec(model, compiled, capsys,
                                                                       tmp_path):
    state = fake_state_dict(model, shared=True)
    status, out, err, output = convert_cli(capsys, tmp_path, model, state)
    assert status == 0, err
    assert out.startswith(f"ok: timm {model} ") and str(output) in out
    loaded = torch.load(output, weights_only=True)
    module = compiled(model)
    assert list(loaded) == list(module.state_dict())
    module.load_state_dict(loaded)  # strict: every key, every shape
    assert torch.equal(module.state_dict()["head.fc.weight"], state["fc.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pth", "out.pt"]  # no temp file


def test_a_training_checkpoint_and_a_dataparallel_prefix_are_accepted(capsys, tmp_path):
    state = fake_state_dict("resnext50_32x4d", shared=True)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    status, _, err, output = convert_cli(capsys, tmp_path, "resnext50_32x4d", wrapped)
    assert status == 0, err
    assert torch.equal(torch.load(output, weights_only=True)["conv1.conv.conv.weight"],
                       state["conv1.weight"])


def _assert_refused(status, err, output, code, *names):
    assert status == 2
    assert f"error {code}:" in err
    for name in names:
        assert name in err, name
    assert "Traceback" not in err
    assert not output.exists() or output.read_bytes() == b"old"


def test_a_missing_tensor_is_named_and_nothing_is_written(capsys, tmp_path):
    state = fake_state_dict("skresnext50_32x4d", shared=True)
    del state["layer3.1.conv2.attn.bn.running_var"]
    (tmp_path / "out.pt").write_bytes(b"old")  # an earlier output is left as it was
    status, _, err, output = convert_cli(capsys, tmp_path, "skresnext50_32x4d", state)
    _assert_refused(status, err, output, "SK524", "conv4.block2.sk.reduce.bn.running_var",
                    "filled by no tensor")


def test_an_extra_tensor_is_named(capsys, tmp_path):
    state = fake_state_dict("seresnext50_32x4d", shared=True)
    state["layer1.0.se.gate.weight"] = torch.zeros(3)
    state["head.weight"] = torch.zeros(3)
    status, _, err, output = convert_cli(capsys, tmp_path, "seresnext50_32x4d", state)
    _assert_refused(status, err, output, "SK524", "layer1.0.se.gate.weight", "head.weight",
                    "mapped by no SE-ResNeXt rule")


def test_a_tensor_of_another_shape_is_named_with_both_shapes(capsys, tmp_path):
    state = fake_state_dict("resnext50_32x4d", shared=True)
    state["fc.weight"] = torch.zeros(10, 2048)
    state["fc.bias"] = torch.zeros(10)
    status, _, err, output = convert_cli(capsys, tmp_path, "resnext50_32x4d", state)
    _assert_refused(status, err, output, "SK525", "fc.weight (10×2048) -> head.fc.weight "
                    "(1000×2048)", "fc.bias (10) -> head.fc.bias (1000)", "2 shapes differ")


def test_a_conv_bias_the_spec_lacks_is_named(capsys, tmp_path):
    state = fake_state_dict("resnext50_32x4d", shared=True)
    state["layer2.1.conv2.bias"] = torch.zeros(256)
    status, _, err, output = convert_cli(capsys, tmp_path, "resnext50_32x4d", state)
    _assert_refused(status, err, output, "SK524",
                    "layer2.1.conv2.bias -> conv3.block2.conv2.conv.bias")


def test_weights_of_another_family_name_the_family_the_spec_needs(capsys, tmp_path):
    state = fake_state_dict("seresnext50_32x4d", shared=True)
    status, _, err, output = convert_cli(capsys, tmp_path, "seresnext50_32x4d", state,
                                         spec=spec_path("skresnext50_32x4d"))
    _assert_refused(status, err, output, "SK524", "timm seresnext50_32x4d weights do not fit spec "
                    "'sknet50'", "sk_unit", "skresnext*", "conv2.block1.se.reduce.weight")


def test_weights_of_no_known_family_are_refused(capsys, tmp_path):
    state = {"encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 3)}
    status, _, err, output = convert_cli(capsys, tmp_path, "resnext50_32x4d", state)
    _assert_refused(status, err, output, "SK523", "encoder.blocks.0.attn.qkv.weight",
                    "skdsl converts timm's ResNeXt (resnext*), SE-ResNeXt (seresnext*), "
                    "SK-ResNeXt (skresnext*), SK-ResNet (skresnet18, skresnet34, skresnet50), "
                    "SK-ResNet-D (skresnet50d)")


@pytest.mark.parametrize("weights_of, spec_of, words", [
    ("skresnet18", "resnext50_32x4d", ["timm skresnet18 weights do not fit", "SK-ResNet",
                                       "use a spec of sk_basic blocks"]),
    ("skresnet50", "skresnet50d", ["timm skresnet50 weights do not fit spec 'skresnet50d'",
                                   "conv1.conv1.conv.weight", "convert timm's skresnet50d"]),
    ("skresnet50d", "skresnet50", ["timm skresnet50d weights do not fit spec 'skresnet50'",
                                   "conv1.0.weight -> conv1.conv1.conv.weight",
                                   "conv2.block1.shortcut.conv.weight",
                                   "convert timm's skresnet50 weights"]),
])
def test_sk_resnet_weights_of_another_spec_are_named_as_timm_names_them(weights_of, spec_of,
                                                                        words, capsys, tmp_path):
    state = fake_state_dict(weights_of, shared=True)
    status, _, err, output = convert_cli(capsys, tmp_path, weights_of, state,
                                         spec=spec_path(spec_of))
    _assert_refused(status, err, output, "SK524", *words)
    assert not re.search(r"\bresnext26", err)  # seresnext26d_32x4d may be listed as a hint


def test_split_sk_weights_on_a_grouped_sk_spec_name_both_kinds(capsys, tmp_path):
    state = fake_state_dict("skresnet50", shared=True)
    status, _, err, output = convert_cli(capsys, tmp_path, "skresnet50", state,
                                         spec=spec_path("skresnext50_32x4d"))
    _assert_refused(status, err, output, "SK525", "timm skresnet50 weights do not fit spec "
                    "'sknet50'",
                    "(64×32×3×3) -> conv2.block1.sk.branch1.conv.weight (128×4×3×3)",
                    "built of sk_unit blocks and these weights are SK-ResNet: convert timm's "
                    "skresnext* weights")


def _resnet18_state() -> dict[str, torch.Tensor]:
    """timm's resnet18 keys (BasicBlock: conv1/bn1, conv2/bn2; no SK), tensors of one element."""
    state = {"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}
    norms = ["bn1"]
    for stage in range(1, 5):
        for unit in range(2):
            state[f"layer{stage}.{unit}.conv1.weight"] = torch.zeros(1)
            state[f"layer{stage}.{unit}.conv2.weight"] = torch.zeros(1)
            norms += [f"layer{stage}.{unit}.bn1", f"layer{stage}.{unit}.bn2"]
        if stage > 1:
            state[f"layer{stage}.0.downsample.0.weight"] = torch.zeros(1)
            norms.append(f"layer{stage}.0.downsample.1")
    for norm in norms:
        state.update({f"{norm}.{tensor}": torch.zeros(1) for tensor in weights.WORDS["tensor"]})
    return state


def test_weights_that_only_share_keys_with_a_family_get_no_made_up_name(capsys, tmp_path):
    """timm's resnet18 maps key for key under ResNeXt's rules, but no unit has a conv3: it is
    no ResNeXt, and no depth or cardinality is made up for it (it was 'resnext26_1x64d')."""
    status, _, err, output = convert_cli(capsys, tmp_path, "skresnet18", _resnet18_state())
    _assert_refused(status, err, output, "SK524", "timm ResNeXt-like weights, of no family "
                    "skdsl knows, do not fit spec 'skresnet18' key for key",
                    "built of sk_basic blocks: convert timm's skresnet18, skresnet34 weights")
    assert not re.search(r"\bresnext26", err)  # seresnext26d_32x4d may be listed as a hint


@pytest.mark.parametrize("payload, code, words", [
    ([torch.zeros(2)], "SK522", "holds list, not a state dict"),
    ({}, "SK522", "an empty dict"),
    ({"conv1.weight": torch.zeros(2), "epoch": 3}, "SK522", "'epoch'"),
])
def test_a_file_without_a_state_dict_is_refused(payload, code, words, capsys, tmp_path):
    status, _, err, output = convert_cli(capsys, tmp_path, "resnext50_32x4d", payload)
    _assert_refused(status, err, output, code, words)


def test_a_missing_unreadable_or_pickled_input_is_refused(capsys, tmp_path):
    output = tmp_path / "out.pt"
    spec = spec_path("resnext50_32x4d")
    status, _, err = run(capsys, "weights", "convert", "--from", "timm", spec,
                         str(tmp_path / "nope.pth"), str(output))
    _assert_refused(status, err, output, "SK520", "nope.pth")

    (tmp_path / "junk.pth").write_bytes(b"not a zip file at all")
    status, _, err = run(capsys, "weights", "convert", "--from", "timm", spec,
                         str(tmp_path / "junk.pth"), str(output))
    _assert_refused(status, err, output, "SK521", "junk.pth")

    torch.save({"conv1.weight": torch.zeros(2), "extra": argparse.Namespace(a=1)},
               tmp_path / "objects.pth")
    status, _, err = run(capsys, "weights", "convert", "--from", "timm", spec,
                         str(tmp_path / "objects.pth"), str(output))
    _assert_refused(status, err, output, "SK521", "never unpickles")


def test_an_unwritable_output_is_refused(capsys, tmp_path):
    state = fake_state_dict("resnext50_32x4d", shared=True)
    torch.save(state, tmp_path / "in.pth")
    output = tmp_path / "no" / "such" / "dir" / "out.pt"
    status, _, err = run(capsys, "weights", "convert", "--from", "timm",
                         spec_path("resnext50_32x4d"), str(tmp_path / "in.pth"), str(output))
    _assert_refused(status, err, output, "SK526", "cannot write")


def test_an_unknown_source_library_is_a_usage_error(capsys, tmp_path):
    status, _, err = run(capsys, "weights", "convert", "--from", "keras",
                         spec_path("resnext50_32x4d"), "in.pth", str(tmp_path / "out.pt"))
    assert status == 2 and "keras" in err


def test_convert_state_dict_raises_a_weights_error_with_a_code(compiled):
    source = fake_state_dict("resnext50_32x4d")
    del source["fc.bias"]
    with pytest.raises(WeightsError) as raised:
        weights.convert_state_dict(source, compiled("resnext50_32x4d").state_dict())
    assert raised.value.code == "SK524" and "head.fc.bias" in raised.value.message


# -- output equality, where timm is installed -----------------------------------------------------


@torch.no_grad()
def _randomise(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if name.endswith("num_batches_tracked"):
            continue
        values = torch.rand(tensor.shape, generator=generator)
        if name.endswith("running_var"):
            tensor.copy_(values * 1.5 + 0.5)
        elif tensor.dim() == 1 and name.endswith("weight"):  # BN scales: activations stay O(1)
            tensor.copy_(values * 0.5 + 0.5)
        elif tensor.dim() == 1:
            tensor.copy_((values - 0.5) * 0.2)
        else:
            tensor.copy_((values - 0.5) * (24.0 / tensor[0].numel()) ** 0.5)


def _assert_same_outputs(reference: torch.nn.Module, module: torch.nn.Module, size: int) -> None:
    image = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(image), module(image)
    scale = expected.abs().max().item()
    assert scale > 0.1  # a real signal, not zeros on both sides
    assert (expected - got).abs().max().item() < 1e-5 * max(1.0, scale)


@pytest.mark.parametrize("model", MODELS)
def test_the_converted_spec_computes_what_timm_computes(model):
    timm = pytest.importorskip("timm")
    reference = timm.create_model(model, pretrained=False).eval()
    _randomise(reference)
    module = skdsl.compile(skdsl.load(spec_path(model)), (3, 64, 64)).eval()
    module.load_state_dict(weights.convert_state_dict(reference.state_dict(),
                                                      module.state_dict()))
    _assert_same_outputs(reference, module, 64)


@pytest.mark.parametrize("model", ["skresnet18", "skresnet34", "skresnet50", "skresnet50d",
                                   "ecaresnet26t", "seresnext26d_32x4d", "resnest14d"])
def test_converted_networks_compute_what_an_independent_timm_layout_computes(model, capsys,
                                                                            tmp_path):
    """Without timm: tests/timm_reference.py builds timm's SK-ResNets, ECA/SE ResNet-Ds and
    ResNeSt-Ds under timm's names from their architecture (with timm 1.0.31 installed it equals
    timm's models to the bit, at 64 and 97 px, the 50-layer ones included); its random weights
    go through `skdsl weights convert` into the compiled spec, and the two compute the same
    (97 px: the average-pool shortcut's ceil-mode windows overhang)."""
    from timm_reference import SKResNet

    reference = SKResNet(model).eval()
    _randomise(reference)
    status, _, err, output = convert_cli(capsys, tmp_path, model, reference.state_dict())
    assert status == 0, err
    module = skdsl.compile(skdsl.load(spec_path(model)), (3, 97, 97)).eval()
    module.load_state_dict(torch.load(output, weights_only=True))
    _assert_same_outputs(reference, module, 97)


def test_skip_head_leaves_the_classifier_out_for_fine_tuning(compiled, capsys, tmp_path):
    """A 10-class timm head would not fit the 1000-class spec (SK525); skipped, the rest fits
    and loads into the spec with the head left at its initialisation."""
    from skdsl.nn import state_io

    state = fake_state_dict("resnext50_32x4d", shared=True)
    state["fc.weight"], state["fc.bias"] = torch.zeros(10, 2048), torch.zeros(10)
    source, output = tmp_path / "in.pth", tmp_path / "out.pt"
    torch.save(state, source)
    status, out, err = run(capsys, "weights", "convert", "--from", "timm",
                           spec_path("resnext50_32x4d"), str(source), str(output), "--skip-head")
    assert status == 0, err
    assert "(head left out)" in out
    converted = torch.load(output, weights_only=True)
    assert "head.fc.weight" not in converted and len(converted) == len(state) - 2
    module = compiled("resnext50_32x4d")
    left = state_io.load_weights(module, converted, output, "resnext50_32x4d",
                                 leave_out=state_io.head_keys(module))
    assert left == ["head.fc.weight", "head.fc.bias"]


# -- --classes ------------------------------------------------------------------------------------


def _ten_classes() -> dict[str, torch.Tensor]:
    state = fake_state_dict("resnext50_32x4d", shared=True)
    state["fc.weight"], state["fc.bias"] = torch.randn(10, 2048), torch.randn(10)
    return state


def test_a_head_of_another_class_count_names_both_and_the_ways_out(capsys, tmp_path):
    status, _, err, output = convert_cli(capsys, tmp_path, "resnext50_32x4d", _ten_classes())
    _assert_refused(status, err, output, "SK525", "hint: the weights' classifier has 10 classes "
                    "and spec 'resnext50_32x4d' has 1000: convert with --classes 10, or leave "
                    "the head out with --skip-head")


def test_classes_compiles_the_spec_with_the_weights_head(capsys, tmp_path):
    state = _ten_classes()
    torch.save(state, tmp_path / "in.pth")
    status, out, err = run(capsys, "weights", "convert", "--from", "timm",
                           spec_path("resnext50_32x4d"), str(tmp_path / "in.pth"),
                           str(tmp_path / "out.pt"), "--classes", "10")
    assert status == 0, err
    assert "320 tensors, 23,000,394 parameters" in out
    converted = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(converted["head.fc.weight"], state["fc.weight"])
    status, _, err = run(capsys, "weights", "convert", "--from", "timm",
                         spec_path("resnext50_32x4d"), str(tmp_path / "in.pth"),
                         str(tmp_path / "out2.pt"), "--classes", "0")
    assert status == 2 and "error SK510: --classes 0: must be at least 1" in err


# -- safetensors ----------------------------------------------------------------------------------


def test_a_safetensors_file_is_read_by_its_content_and_written_by_its_name(compiled, capsys,
                                                                          tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file, save_file

    state = fake_state_dict("skresnet18")
    for name in ("model.safetensors", "model.pth"):  # a safetensors file of any name
        save_file(state, tmp_path / name)
        output = tmp_path / "out.safetensors"
        status, out, err = run(capsys, "weights", "convert", "--from", "timm",
                               spec_path("skresnet18"), str(tmp_path / name), str(output))
        assert status == 0, err
        assert out.rstrip().endswith(f"written to {output} (safetensors)")
        converted = load_file(output)
        assert sorted(converted) == sorted(compiled("skresnet18").state_dict())  # no key order
        assert torch.equal(converted["conv2.block1.sk.branch2.conv.weight"],
                           state["layer1.0.conv1.paths.1.conv.weight"])


def test_a_truncated_safetensors_file_is_named_as_one(capsys, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "cut.safetensors")
    data = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:len(data) // 2])
    output = tmp_path / "out.pt"
    status, _, err = run(capsys, "weights", "convert", "--from", "timm",
                         spec_path("skresnet18"), str(tmp_path / "cut.safetensors"), str(output))
    _assert_refused(status, err, output, "SK521", "cut.safetensors' is a truncated or corrupt "
                    "safetensors file (")


def test_without_the_safetensors_package_its_files_are_refused_with_the_install(monkeypatch,
                                                                               capsys, tmp_path):
    (tmp_path / "in.safetensors").write_bytes((20).to_bytes(8, "little") + b'{"a":{}}' + b" " * 12)
    monkeypatch.setitem(sys.modules, "safetensors", None)  # `import safetensors` fails
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    spec = spec_path("skresnet18")
    for source, output in (("in.safetensors", "out.pt"), ("missing.pth", "out.safetensors")):
        status, _, err = run(capsys, "weights", "convert", "--from", "timm", spec,
                             str(tmp_path / source), str(tmp_path / output))
        _assert_refused(status, err, tmp_path / output, "SK529", "needs the safetensors "
                        "package, which is not installed", "hint: pip install 'skdsl[safetensors]'")
        assert "in.safetensors' is a safetensors file: reading it" in err or \
            "writing '" in err and "out.safetensors' as safetensors" in err


def test_weights_without_a_classifier_are_told_to_leave_the_head_out(capsys, tmp_path):
    state = fake_state_dict("resnext50_32x4d", shared=True)
    del state["fc.weight"], state["fc.bias"]  # timm's num_classes=0
    status, _, err, output = convert_cli(capsys, tmp_path, "resnext50_32x4d", state)
    _assert_refused(status, err, output, "SK524", "head.fc.weight", "hint: the weights have no "
                    "classifier (a model made with num_classes=0): leave the head of spec "
                    "'resnext50_32x4d' out with --skip-head")
