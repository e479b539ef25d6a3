"""Compiled networks agree with their graphs: modules, parameters, FLOPs, shapes and values."""

import pytest

from skdsl.base.errors import SpecError
import torch
from torch.utils.flop_counter import FlopCounterMode

from skdsl.nn import compiler
from skdsl.core import graph as G, spec as S
from skdsl.nn import layers as L

INPUT = (3, 32, 32)


# -- building specs ---------------------------------------------------------------------------

def network(stages: dict, input_shape=INPUT) -> S.Network:
    return S.Network(name="test", input=input_shape,
                     stages=[S.Stage(name=name, body=body) for name, body in stages.items()])


def conv(name, out, kernel=3, **options) -> S.Conv:
    return S.Conv(name=name, kernel=(kernel, kernel), out_channels=out, **options)


def sk(name, out, kernels, stride=1, attention=True) -> S.SelectiveKernel:
    """An SK convolution with 3×3 branches of growing dilation (the paper's K3, K5, K7)."""
    branches = [S.KernelBranch(kernel=(3, 3), dilation=d, groups=8) for d in range(1, kernels + 1)]
    return S.SelectiveKernel(name=name, out_channels=out, stride=stride, branches=branches,
                             attention=attention, reduction_ratio=4, min_attention_width=8)


def head(classes=10) -> list:
    return [S.GlobalPool(name="pool"), S.Linear(name="fc", out_features=classes)]


def sk_unit(name, middle, out, stride=1, kernels=2, se=False) -> S.Block:
    """ResNeXt-style bottleneck with an SK convolution (the paper's SK unit), optionally SE."""
    body = [conv("conv1", middle, 1), sk("sk", middle, kernels, stride),
            conv("conv2", out, 1, act="none")]
    if se:
        body.append(S.SqueezeExcite(name="se", reduction_ratio=4))
    return S.Block(name=name, template="sk_unit", body=[S.Residual(body=body)])


def shuffle_down(name, out) -> S.Block:
    """ShuffleNetV2's down-sampling unit: two stride-2 branches, concatenated and shuffled."""
    half = out // 2
    project = S.Branch(name="project", body=[
        conv("dw", None, groups="depthwise", stride=2, act="none"), conv("pw", half, 1)])
    main = S.Branch(name="main", body=[
        conv("pw1", half, 1), conv("dw", None, groups="depthwise", stride=2, act="none"),
        conv("pw2", half, 1)])
    return S.Block(name=name, template="shuffle_down", body=[
        project, main, S.Merge(name="concat", kind="concat", inputs=["project", "main"]),
        S.ChannelShuffle(name="shuffle", groups=2)])


def shuffle_basic(name, channels) -> S.Block:
    """ShuffleNetV2's basic unit: split, one half through the branch, concat, shuffle."""
    half = channels // 2
    main = S.Branch(name="main", source="right", body=[
        conv("pw1", half, 1), conv("dw", None, groups="depthwise", act="none"),
        conv("pw2", half, 1)])
    return S.Block(name=name, template="shuffle_basic", body=[
        S.ChannelSplit(name="split", outputs=["left", "right"]), main,
        S.Merge(name="concat", kind="concat", inputs=["left", "main"]),
        S.ChannelShuffle(name="shuffle", groups=2)])


def conv_zoo() -> S.Network:
    return network({
        "stem": [conv("c1", 16, stride=2), conv("grouped", 32, groups=4, dilation=2),
                 conv("dw", None, groups="depthwise", stride=2, act="hardswish"),
                 S.Conv(name="tall", kernel=(3, 1), out_channels=24, padding=(1, 0), bias=True,
                        norm=False, act="relu6"),
                 conv("pw", 24, 1, groups=2, act="none"), S.BatchNorm(name="bn"),
                 *[S.Activation(name=f, function=f)
                   for f in ("silu", "gelu", "tanh", "sigmoid", "hardsigmoid", "none")]],
        "head": head(),
    })


def sk_net(kernels=2, attention=True) -> S.Network:
    return network({
        "stem": [conv("c1", 16)],
        "stage": [sk("sk", 32, kernels, stride=2, attention=attention)],
        "head": head(),
    })


def resnet() -> S.Network:
    shortcut = [S.Pool(name="pool", mode="avg", kernel=(2, 2), stride=2, padding=(0, 0)),
                conv("proj", 64, 1, act="none")]
    explicit = S.Residual(body=[conv("a", 64, stride=2), conv("b", 64, act="none")],
                          shortcut=shortcut, act="silu")
    return network({
        "stem": [conv("c1", 16)],
        "conv2": [sk_unit("block1", 16, 32, stride=2),  # projection: 16 -> 32 channels, stride 2
                  sk_unit("block2", 16, 32, kernels=3, se=True)],  # identity shortcut
        "conv3": [S.Block(name="block1", template="plain", body=[explicit])],
        "head": head(),
    })


def shufflenet() -> S.Network:
    mixer = S.Block(name="mix", template="mix", body=[
        S.ChannelSplit(name="split", outputs=["a", "b", "c"], sizes=[8, 8, 16]),
        S.Merge(name="concat", kind="concat", inputs=["c", "a", "b", "a"]),  # a read twice
        S.Merge(name="twice", kind="add", inputs=["input", "input"]),
        S.Merge(name="scale", kind="mul", inputs=["input", "input"])])
    return network({
        "stem": [conv("c1", 16)],
        "stage2": [shuffle_down("unit1", 32), shuffle_basic("unit2", 32), mixer],
        "head": head(),
    })


def pooling_net() -> S.Network:
    return network({
        "stem": [conv("c1", 16),
                 S.Pool(name="maxpool", mode="max", kernel=(3, 3), stride=2, padding=(0, 0),
                        ceil_mode=True),
                 S.Pool(name="avgpool", mode="avg", kernel=(3, 3), stride=1),
                 S.Pool(name="down", mode="avg", kernel=(2, 2), stride=2, padding=(0, 0)),
                 conv("c2", 8, stride=2)],
        # fc straight on the 8×4×4 map: it must flatten
        "head": [S.Dropout(name="drop1", p=0.2), S.Linear(name="fc1", out_features=20),
                 S.Activation(name="act", function="relu"), S.Dropout(name="drop2", p=0.5),
                 S.Linear(name="fc2", out_features=10, bias=False)],
    })


def max_head_net() -> S.Network:
    return network({"stem": [conv("c1", 8, 5, stride=4)],
                    "head": [S.GlobalPool(name="pool", mode="max"),
                             S.Linear(name="fc", out_features=5)]})


NETWORKS = {
    "conv_zoo": conv_zoo, "sk1": lambda: sk_net(1), "sk2": lambda: sk_net(2),
    "sk3": lambda: sk_net(3), "sk2_plain": lambda: sk_net(2, attention=False),
    "sk3_plain": lambda: sk_net(3, attention=False), "resnet": resnet,
    "shufflenet": shufflenet, "pooling": pooling_net, "max_head": max_head_net,
}


# -- what the graph says --------------------------------------------------------------------

def graph_parameters(graph: G.LoweredGraph) -> int:
    total = 0
    for node in graph.nodes.values():
        if node["op"] == "conv2d":
            kh, kw = node["kernel"]
            weights = node["out_channels"] * node["in_channels"] // node["groups"] * kh * kw
            total += weights + (node["out_channels"] if node["bias"] else 0)
        elif node["op"] == "batchnorm":
            total += 2 * node["channels"]
        elif node["op"] == "linear":
            weights = node["in_features"] * node["out_features"]
            total += weights + (node["out_features"] if node["bias"] else 0)
    return total


def graph_multiply_adds(graph: G.LoweredGraph) -> int:
    total = 0
    for node in graph.nodes.values():
        if node["op"] == "conv2d":
            kh, kw = node["kernel"]
            _, height, width = node["out_shapes"][0]
            total += (node["out_channels"] * node["in_channels"] // node["groups"] * kh * kw
                      * height * width)
        elif node["op"] == "linear":
            total += node["in_features"] * node["out_features"]
    return total


def leaf_names(model: torch.nn.Module) -> set[str]:
    return {name for name, module in model.named_modules() if not list(module.children())}


def compiled(name: str):
    spec = NETWORKS[name]()
    graph = G.lower_table(spec)
    model = compiler.compile(graph).eval()
    return model, graph


# -- the checks -----------------------------------------------------------------------------

@pytest.fixture(params=sorted(NETWORKS))
def case(request):
    torch.manual_seed(0)
    return compiled(request.param)


def test_leaf_modules_are_the_graph_nodes(case):
    model, graph = case
    assert leaf_names(model) == set(graph) - {"input"}
    modules = dict(model.named_modules())
    assert all(name in modules for name in graph if name != "input")


def test_parameter_count_matches_graph(case):
    model, graph = case
    assert sum(p.numel() for p in model.parameters()) == graph_parameters(graph)


def test_flops_are_the_graph_multiply_adds(case):
    model, graph = case
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *graph.graph["input"]))
    assert counter.get_total_flops() / 2 == graph_multiply_adds(graph)


def test_output_shape_matches_graph(case):
    model, graph = case
    with torch.no_grad():
        out = model(torch.randn(2, *graph.graph["input"]))
    assert out.shape == (2, *G.output_shape(graph))


def test_every_slot_but_the_outputs_is_freed_once_in_every_container(case):
    model, _ = case
    containers = [m for m in model.modules() if isinstance(m, compiler._Container)]
    assert len(containers) > 1
    for container in containers:
        plan = container._plan
        freed = [slot for step in plan.steps for slot in step.frees]
        used = {slot for step in plan.steps for slot in (*step.reads, *step.writes)}
        assert len(freed) == len(set(freed))
        assert not set(plan.outputs) & set(freed)
        assert used - set(plan.outputs) == set(freed)  # the inputs too, after their last read


@pytest.mark.parametrize("name", ["resnet", "shufflenet", "sk3"])
def test_channels_last_input_gives_the_same_output(name):
    torch.manual_seed(0)
    model, graph = compiled(name)
    x = torch.randn(2, *graph.graph["input"])
    with torch.no_grad():
        expected = model(x)
        from_channels_last = model(x.to(memory_format=torch.channels_last))
        model.to(memory_format=torch.channels_last)
        all_channels_last = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(from_channels_last, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(all_channels_last, expected, rtol=1e-4, atol=1e-5)


def test_module_types_follow_the_ops():
    model, graph = compiled("resnet")
    modules = dict(model.named_modules())
    assert isinstance(modules["conv2.block1.sk.select"], L.Select)
    assert isinstance(modules["conv2.block1.shortcut.conv"], torch.nn.Conv2d)
    assert isinstance(modules["conv2.block2.se.scale"], L.Multiply)
    assert isinstance(modules["conv3.block1.act"], torch.nn.SiLU)
    assert isinstance(modules["head.fc"], L.FlattenLinear)
    assert type(modules["conv2"]) is compiler.Stage
    assert type(modules["conv2.block1"]) is compiler.Block
    assert type(modules["conv2.block1.sk"]) is compiler.Layer
    assert type(modules["conv3.block1.shortcut"]) is compiler.Branch
    conv = modules["stem.c1.conv"]
    assert (conv.kernel_size, conv.padding, conv.bias) == ((3, 3), (1, 1), None)


def test_conv_attributes_reach_the_module():
    model, _ = compiled("conv_zoo")
    modules = dict(model.named_modules())
    grouped, dw, tall = (modules[f"stem.{n}.conv"] for n in ("grouped", "dw", "tall"))
    assert (grouped.groups, grouped.dilation, grouped.padding) == (4, (2, 2), (2, 2))
    assert (dw.groups, dw.in_channels, dw.out_channels, dw.stride) == (32, 32, 32, (2, 2))
    assert tall.kernel_size == (3, 1) and tall.bias is not None


def test_select_is_bypassed_without_attention():
    _, graph = compiled("sk2_plain")
    assert not any(node["op"] == "select" for node in graph.nodes.values())
    assert graph.nodes["stage.sk.fuse"]["op"] == "add"


def test_compile_accepts_a_network_and_an_input_shape():
    model = compiler.compile(pooling_net(), input_shape=(3, 64, 64)).eval()
    assert model.graph.graph["input"] == (3, 64, 64)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_compile_refuses_another_input_for_a_lowered_graph():
    with pytest.raises(ValueError, match="lowered for input"):
        compiler.compile(G.lower(pooling_net()), input_shape=(3, 64, 64))


def test_graph_is_kept_but_not_a_submodule():
    model, graph = compiled("sk2")
    assert model.graph is graph
    assert "graph" not in dict(model.named_children())


def test_features_returns_requested_node_outputs():
    model, graph = compiled("shufflenet")
    names = ["stage2.unit2.split", "stem.c1.act", "input", "head.fc"]
    x = torch.randn(2, *graph.graph["input"])
    with torch.no_grad():
        found = model.features(x, names)
        output = model(x)
    assert list(found) == names
    left, right = found["stage2.unit2.split"]
    assert left.shape == right.shape == (2, 16, 16, 16)
    assert found["stem.c1.act"].shape == (2, 16, 32, 32)
    assert found["input"] is x
    torch.testing.assert_close(found["head.fc"], output)


def test_features_rejects_unknown_names():
    model, _ = compiled("sk2")
    with pytest.raises(KeyError, match="stem.nope"):
        model.features(torch.randn(1, *INPUT), ["stem.nope"])


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    model = compiler.compile(network({
        "stem": [conv("c1", 64, bias=True)],
        "head": [S.GlobalPool(name="pool"), S.Linear(name="fc", out_features=1000)]}))
    modules = dict(model.named_modules())
    conv_layer, bn, fc = modules["stem.c1.conv"], modules["stem.c1.bn"], modules["head.fc"]
    fan_out = 64 * 3 * 3
    assert conv_layer.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    for zero in (conv_layer.bias, fc.bias, bn.bias):
        assert torch.count_nonzero(zero) == 0
    assert torch.all(bn.weight == 1)


def test_training_backpropagates_to_every_parameter():
    torch.manual_seed(0)
    model, graph = compiled("resnet")
    model.train()
    model(torch.randn(2, *graph.graph["input"])).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_state_dict_keys_are_node_names():
    model, graph = compiled("sk2")
    keys = set(model.state_dict())
    assert "stage.sk.logits.weight" in keys
    assert "stage.sk.branch2.bn.running_mean" in keys
    assert {key.rsplit(".", 1)[0] for key in keys} <= set(graph)


@pytest.mark.parametrize("name", ["resnet", "shufflenet"])
def test_torch_compile_traces_the_whole_graph(name):
    torch.manual_seed(0)
    model, graph = compiled(name)
    x = torch.randn(2, *graph.graph["input"])
    traced = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


def test_clashing_node_paths_are_refused():
    # The pool is the node stage.x while the branch x puts its conv at stage.x.c.conv.
    clash = network({"stage": [
        S.Pool(name="x", mode="max", kernel=(2, 2), stride=2),
        S.Branch(name="x", body=[conv("c", 8)])]})
    with pytest.raises(SpecError, match="both named 'stage.x'"):
        compiler.compile(clash)


@pytest.mark.parametrize("stage", ["graph", "features", "train"])
def test_stage_named_like_a_root_attribute_is_refused(stage):
    with pytest.raises(ValueError, match=f"'{stage}' is reserved"):
        network({stage: [conv("c1", 8)]})


# -- in place, BN folding, polyphase, torch.compile ---------------------------------------------

def _twins(name: str):
    """The same network and weights compiled with and without in-place steps."""
    torch.manual_seed(0)
    graph = G.lower_table(NETWORKS[name]())
    plain = compiler.compile(graph, inplace=False)
    inplace = compiler.CompiledNetwork(graph)
    inplace.load_state_dict(plain.state_dict())
    return plain, inplace, graph


def test_inplace_covers_activations_and_residual_sums_after_fresh_outputs():
    _, model, _ = _twins("resnet")
    modules = dict(model.named_modules())
    assert modules["stem.c1.act"].inplace  # after BN
    assert modules["conv2.block1.sk.branch1.act"].inplace  # its output feeds fuse and select
    assert modules["conv2.block1.add"].inplace and modules["conv2.block1.act"].inplace
    # The SE unit's gate input comes from a sigmoid, which reads its own output in backward.
    assert not getattr(modules["conv2.block2.se.gate"], "inplace", False)
    assert all(not getattr(m, "inplace", False) for m in compiler.compile(
        G.lower(NETWORKS["resnet"]()), inplace=False).modules())


@pytest.mark.parametrize("name", ["resnet", "shufflenet", "sk3", "conv_zoo"])
def test_inplace_changes_no_output_and_no_gradient(name):
    plain, inplace, graph = _twins(name)
    x = torch.randn(2, *graph.graph["input"])
    for train in (True, False):
        plain.train(train), inplace.train(train)
        for model in (plain, inplace):
            model.zero_grad()
            model(x).square().sum().backward()
        torch.testing.assert_close(inplace(x), plain(x), rtol=0, atol=0)
        for (key, a), b in zip(plain.named_parameters(), inplace.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0, msg=key)


def test_features_are_not_overwritten_by_later_inplace_steps():
    plain, inplace, graph = _twins("resnet")
    names = ["stem.c1.bn", "conv2.block1.conv2.bn", "conv2.block1.add", "head.fc"]
    x = torch.randn(2, *graph.graph["input"])
    with torch.no_grad():
        expected, found = plain.eval().features(x, names), inplace.eval().features(x, names)
    for name in names:
        torch.testing.assert_close(found[name], expected[name], rtol=0, atol=0)


def _trained_statistics(model, graph):
    model.train()
    with torch.no_grad():  # BN statistics far from the identity, so folding has work to do
        for _ in range(2):
            model(torch.randn(4, *graph.graph["input"]) * 3 + 1)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet", "sk3", "conv_zoo", "pooling"])
def test_fuse_bn_keeps_outputs_names_and_flops(name):
    model, graph = compiled(name)
    model = _trained_statistics(model, graph)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fused = compiler.fuse_bn(model)
    x = torch.randn(3, *graph.graph["input"])
    with torch.no_grad():
        expected, out = model(x), fused(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert leaf_names(fused) == set(graph) - {"input"}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fused(torch.randn(1, *graph.graph["input"]))
    assert counter.get_total_flops() / 2 == graph_multiply_adds(graph)
    folded = [m for m in fused.modules() if isinstance(m, L.FoldedBatchNorm)]
    assert folded and not fused.training
    removed = sum(graph.nodes[m.into]["out_channels"] for m in folded)
    assert sum(p.numel() for p in fused.parameters()) == graph_parameters(graph) - removed
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_fuse_bn_leaves_a_batch_norm_after_anything_but_a_lone_conv():
    model, graph = compiled("conv_zoo")  # stem.bn follows the pointwise conv's own BN-free output
    fused = compiler.fuse_bn(_trained_statistics(model, graph))
    modules = dict(fused.named_modules())
    assert isinstance(modules["stem.c1.bn"], L.FoldedBatchNorm)
    assert modules["stem.c1.bn"].into == "stem.c1.conv"
    assert modules["stem.c1.conv"].bias is not None
    # `tall` has norm=False; the standalone `bn` layer reads an act's output, not a conv's.
    assert isinstance(modules["stem.bn"], torch.nn.BatchNorm2d)


def test_polyphase_lowering_keeps_outputs_and_flops(monkeypatch):
    model, graph = compiled("sk3")
    x = torch.randn(2, *graph.graph["input"])
    dilated = [m for m in model.modules() if isinstance(m, L.DilatedConv2d)]
    assert dilated and all(m.dilation[0] > 1 for m in dilated)
    with torch.no_grad():
        expected = model(x)
        for module in dilated:
            module.lowering = "polyphase"
        out = model(x)
        with FlopCounterMode(display=False) as counter:
            model(x[:1])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert counter.get_total_flops() / 2 == graph_multiply_adds(graph)


@pytest.mark.parametrize("train", [False, True])
def test_sk_network_compiles_without_graph_breaks(train):
    # A small SKNet with a strided SK unit (the polyphase path on CPU) and in-place steps.
    torch.manual_seed(0)
    model = compiler.compile(network({
        "stem": [conv("c1", 16)],
        "conv2": [sk_unit("block1", 16, 32, stride=2, kernels=2),
                  sk_unit("block2", 16, 32, kernels=3)],
        "head": head(),
    }, input_shape=(3, 16, 16)))
    model.train(train)
    x = torch.randn(2, 3, 16, 16)
    with torch.set_grad_enabled(train):
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_features_of_a_fused_model_are_not_overwritten():
    model, graph = compiled("resnet")
    fused = compiler.fuse_bn(_trained_statistics(model, graph))
    names = ["stem.c1.conv", "stem.c1.bn", "stem.c1.act"]
    x = torch.randn(2, *graph.graph["input"])
    with torch.no_grad():
        found = fused.features(x, names)
        expected = model.features(x, names)
    assert torch.any(found["stem.c1.conv"] < 0)  # before the ReLU that ran in place after it
    torch.testing.assert_close(found["stem.c1.act"], expected["stem.c1.act"], rtol=1e-5,
                               atol=1e-5)
