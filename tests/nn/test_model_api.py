"""The compiled network as a PyTorch user and a timm user expect it: a module tree whose parts
run, can be replaced and hooked, traces with torch.fx, torch.export and torch.compile, and
speaks timm's model API."""

from pathlib import Path

import pytest
import torch
from torch import nn

import skdsl
from skdsl.nn import compiler

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "specs" / "sknet_tiny.sk"  # stages conv1..conv4 (24, 64, 128, 256 channels), head

# Two branches on different inputs, the second sharing the first's layers and weights.
SIAMESE = """network siamese:
    input 3x16x16
    stage stem: conv 3x3, 8
    stage s:
        x = conv 3x3, 8
        y = conv 3x3, 8
        branch a from x:
            conv 3x3, 8
            conv 1x1, 8, act none
        branch b from y shares a
        add b, a
    stage head:
        avgpool global
        fc 4
"""

CHAIN = """network chain:
    input 3x16x16
    stage a: conv 3x3, 8, act none
    stage b:
        act relu
        conv 3x3, 8
"""

HEADLESS = """network headless:
    input 3x16x16
    stage stem: conv 3x3, 8, stride 2
    stage body: conv 3x3, 16, stride 2
"""


def tiny(**options):
    torch.manual_seed(0)
    return skdsl.compile(skdsl.load(TINY)) if not options else compiler.compile(
        skdsl.load(TINY), **options)


def images(size=32):
    torch.manual_seed(1)
    return torch.randn(2, 3, size, size)


def containers(model):
    return {name: module for name, module in model.named_modules()
            if isinstance(module, compiler._Container)}


# -- the module tree ----------------------------------------------------------------------------

def test_a_swapped_head_changes_the_output_and_is_trained_and_saved():
    model, x = tiny().eval(), images()
    before = model(x)
    old = model.head.fc
    model.head.fc = nn.Linear(256, 5)  # a plain Linear: the fc's input arrives flattened
    out = model(x)
    assert out.shape == (2, 5) and model.num_classes == 5
    torch.testing.assert_close(out, model.head.fc(model.forward_head(
        model.forward_features(x), pre_logits=True)))
    parameters = {id(p) for p in model.parameters()}
    assert id(model.head.fc.weight) in parameters and id(old.weight) not in parameters
    assert model.state_dict()["head.fc.weight"].shape == (5, 256)
    assert before.shape == (2, 10)  # the old head gave 10 classes


def test_replacing_a_leaf_inside_a_block_takes_effect():
    model, x = tiny().eval(), images()
    before = model(x)
    model.conv2.block1.sk.select = compiler.L.Select(2, 32)  # the same op: the same output
    torch.testing.assert_close(model(x), before)
    model.set_submodule("conv2.block1.act", nn.Sigmoid())
    assert not torch.allclose(model(x), before)


@pytest.mark.parametrize("change", ["new name", "none", "delete", "add_module"])
def test_a_change_the_graph_cannot_call_is_refused_at_once(change):
    model = tiny()
    with pytest.raises(compiler.ModuleTreeError) as caught:
        if change == "new name":
            model.head.classifier = nn.Linear(256, 5)
        elif change == "none":
            model.head.fc = None
        elif change == "delete":
            del model.conv2
        else:
            model.conv3.add_module("extra", nn.ReLU())
    assert isinstance(caught.value, AttributeError) and caught.value.code == "SK391"
    assert list(model.head._modules) == ["pool", "fc"] and "conv2" in model._modules
    assert "extra" not in model.conv3._modules


def test_the_refusal_names_the_parts_that_exist():
    model = tiny()
    with pytest.raises(compiler.ModuleTreeError) as caught:
        model.head.fcc = nn.Linear(256, 5)
    assert caught.value.render() == (
        "error SK391: head.fcc is not a part of the network: its graph would never call a "
        "module assigned there\n  = hint: did you mean 'fc'?")


def test_stages_and_blocks_run_alone_and_in_a_sequential():
    model, x = tiny().eval(), images()
    body = nn.Sequential(*list(model.children())[:-1])
    features = model.forward_features(x)
    torch.testing.assert_close(body(x), features)
    stem = model.conv1(x)
    torch.testing.assert_close(model.conv2(stem), model.features(x, stages="conv2")["conv2"])
    with pytest.raises(compiler.ModelArgumentError, match="takes 1 tensor"):
        model.conv2(stem, stem)


def test_hooks_fire_on_every_container_forward_and_backward():
    model, x = tiny().train(), images().requires_grad_()
    reference = tiny(inplace=False).train()
    reference.load_state_dict(model.state_dict())
    seen = {"forward": [], "backward": []}
    for name, module in containers(model).items():
        module.register_forward_hook(lambda *_, name=name: seen["forward"].append(name))
        module.register_full_backward_hook(lambda *_, name=name: seen["backward"].append(name))
    model(x).square().sum().backward()
    reference(x).square().sum().backward()
    levels = {"", "conv2", "conv2.block1", "conv2.block1.sk", "conv2.block1.sk.branch2"}
    assert levels <= set(containers(model))
    assert sorted(seen["forward"]) == sorted(seen["backward"]) == sorted(containers(model))
    for (key, a), b in zip(reference.named_parameters(), model.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0, msg=key)


def test_repr_names_stages_blocks_and_shapes():
    text = repr(tiny())
    assert "(conv3): Stage(\n    out=128×8×8" in text
    assert "(block2): Block(\n      sk_unit, out=128×8×8" in text
    assert "(sk): Layer(" in text and "CompiledNetwork(\n  sknet_tiny, out=10" in text


def test_a_shared_branch_runs_its_twin_and_features_tell_the_calls_apart():
    torch.manual_seed(0)
    model = skdsl.compile(skdsl.parse(SIAMESE)).eval()
    x = images(16)
    assert "b" not in model.s._modules  # the weights live once, under s.a
    found = model.features(x, ["s.y", "s.a", "s.b", "s.b.conv1.conv"])
    torch.testing.assert_close(found["s.b"], model.s.a(found["s.y"]))
    assert not torch.allclose(found["s.a"], found["s.b"])
    with torch.no_grad():
        torch.testing.assert_close(found["s.b.conv1.conv"], model.s.a.conv1.conv(found["s.y"]))


def test_a_backward_hook_on_a_shared_branch_fires_for_both_uses():
    torch.manual_seed(0)
    model = skdsl.compile(skdsl.parse(SIAMESE)).train()
    calls = []
    model.s.a.register_full_backward_hook(lambda *_: calls.append(1))
    model(images(16)).sum().backward()
    assert len(calls) == 2


# -- tracing and compiling ----------------------------------------------------------------------

@pytest.mark.parametrize("source", ["tiny", "siamese"])
def test_fx_trace_equals_eager(source):
    torch.manual_seed(0)
    model = (tiny() if source == "tiny" else skdsl.compile(skdsl.parse(SIAMESE))).eval()
    x = images(32 if source == "tiny" else 16)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    called = [node.target for node in traced.graph.nodes if node.op == "call_module"]
    if source == "siamese":  # the shared branch's layers run twice
        assert called.count("s.a.conv1.conv") == 2
    else:
        assert "conv2.block1.sk.logits" in called


def test_torch_export_runs_the_network():
    model, x = tiny().eval(), images()
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-6)


def test_torch_compile_takes_the_tree_in_one_graph():
    model, x = tiny().train(), images()
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # a graph break raises
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x), model.eval()(x))


# -- timm's model API -----------------------------------------------------------------------------

def test_forward_features_then_forward_head_is_forward():
    model, x = tiny().eval(), images()
    features = model.forward_features(x)
    assert features.shape == (2, 256, 4, 4)
    torch.testing.assert_close(model.forward_head(features), model(x))
    pre_logits = model.forward_head(features, pre_logits=True)
    assert pre_logits.shape == (2, model.num_features) == (2, 256)
    torch.testing.assert_close(model.get_classifier()(pre_logits), model(x))


def test_feature_info_matches_the_stage_outputs_without_a_forward_pass():
    model, x = tiny().eval(), images()
    info = model.feature_info
    assert [entry["module"] for entry in info] == ["conv1", "conv2", "conv3", "conv4"]
    found = model.features(x)
    assert list(found) == [entry["module"] for entry in info]
    for entry in info:
        out = found[entry["module"]]
        assert out.shape[1] == entry["num_chs"]
        assert x.shape[-1] // out.shape[-1] == entry["reduction"]
    assert [entry["reduction"] for entry in info] == [2, 2, 4, 8]


def test_features_by_stage_name_and_by_part():
    model, x = tiny().eval(), images()
    found = model.features(x, stages=("conv3", "conv4"))
    assert list(found) == ["conv3", "conv4"]
    torch.testing.assert_close(found["conv4"], model.forward_features(x))
    parts = model.features(x, ["conv2", "conv2.block1.sk", "conv2.block1.sk.select"])
    torch.testing.assert_close(parts["conv2.block1.sk"], parts["conv2.block1.sk.select"])
    assert parts["conv2"].shape == (2, 64, 16, 16)


def test_features_refuse_unknown_names_with_a_suggestion():
    model = tiny()
    with pytest.raises(compiler.UnknownPartError) as caught:
        model.features(images(), stages=["conv5"])
    assert isinstance(caught.value, KeyError) and caught.value.code == "SK390"
    assert "did you mean" in caught.value.render()
    with pytest.raises(KeyError, match="conv2.block9"):
        model.features(images(), ["conv2.block9"])


def test_reset_classifier_makes_a_fresh_head_or_none():
    model, x = tiny().eval(), images()
    parameters = sum(p.numel() for p in model.parameters())
    model.reset_classifier(3)
    fc = model.get_classifier()
    assert model(x).shape == (2, 3) and model.num_classes == 3
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.3)
    assert torch.count_nonzero(fc.bias) == 0
    assert sum(p.numel() for p in model.parameters()) == parameters - 7 * 257
    model.reset_classifier(0)
    assert model.num_classes == 0
    torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x),
                                                            pre_logits=True))
    with pytest.raises(compiler.ModelArgumentError):
        model.reset_classifier(-1)


def test_a_network_without_classifier_says_so():
    model = skdsl.compile(skdsl.parse(HEADLESS))
    assert model.num_classes == 0 and model.num_features == 16
    with pytest.raises(compiler.NoClassifierError) as caught:
        model.get_classifier()
    assert caught.value.code == "SK392" and "body.conv.act is a act" in caught.value.render()
    torch.testing.assert_close(model.forward_features(images(16)), model(images(16)))
    assert [entry["reduction"] for entry in model.feature_info] == [2, 4]


def test_features_only_gives_the_stage_outputs_as_a_list():
    model = tiny(features_only=True, out_indices=(1, 2, 3)).eval()
    outputs = model(images())
    assert [tuple(out.shape) for out in outputs] == [(2, 64, 16, 16), (2, 128, 8, 8),
                                                     (2, 256, 4, 4)]
    assert [entry["num_chs"] for entry in model.feature_info] == [64, 128, 256]
    assert not any(key.startswith("head.") for key in model.state_dict())
    full = tiny().eval()
    full.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(outputs[-1], full.forward_features(images()))


def test_features_only_outputs_survive_the_next_stage_in_place():
    # Stage a ends in a BN that stage b's ReLU would overwrite in place.
    torch.manual_seed(0)
    full = skdsl.compile(skdsl.parse(CHAIN)).eval()
    assert full.b.act.inplace
    x = images(16)
    expected = full.features(x, stages=["a", "b"])
    first, second = full.as_features((0, 1))(x)
    assert not full.b.act.inplace
    assert torch.any(first < 0)  # the ReLU after it did not run on it
    torch.testing.assert_close(first, expected["a"], rtol=0, atol=0)
    torch.testing.assert_close(second, expected["b"], rtol=0, atol=0)


@pytest.mark.parametrize("indices", [(4,), (), ("conv2",)])
def test_features_only_refuses_indices_it_does_not_have(indices):
    with pytest.raises(compiler.ModelArgumentError, match="do not index"):
        tiny().as_features(indices)


def test_pretrained_cfg_defaults_to_none_and_default_cfg_is_its_alias():
    model = tiny()
    assert model.pretrained_cfg is None and model.default_cfg is None
    model.default_cfg = {"input_size": (3, 32, 32), "interpolation": "bilinear"}
    assert model.pretrained_cfg["interpolation"] == "bilinear"


@pytest.mark.parametrize("name", skdsl.list_models())
def test_feature_info_equals_the_measured_feature_maps_of_every_zoo_network(name):
    """The features_only outputs of a forward pass at the spec's input size, on the meta device:
    torch infers every shape and computes no value. Attention-92's mask branches downsample and
    upsample again: its reductions once went 4, 32, 1024, ... for maps at 4, 4, 8, 16, 32."""
    with torch.device("meta"):
        model = skdsl.create_model(name).eval()  # BN in training refuses a batch of one at 1×1
        image = torch.empty(1, *model.pretrained_cfg["input_size"])
        with torch.no_grad():
            maps = model.as_features()(image)
    height = image.shape[2]
    assert len(maps) == len(model.feature_info)
    for entry, found in zip(model.feature_info, maps):
        assert found.shape[1] == entry["num_chs"], entry
        map_height = found.shape[2]
        if height % map_height == 0:
            assert entry["reduction"] == height // map_height, entry
        else:  # nominal, as timm: a 299-pixel Inception's 8×8 map is reduction 32 (299 / 8 = 37.4)
            assert entry["reduction"] / 2 < height / map_height < entry["reduction"] * 2, entry
