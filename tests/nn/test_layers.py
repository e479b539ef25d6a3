"""The non-convolution layers against naive references."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from skdsl.nn import layers as L


def naive_select(logits, branches):
    """Eq. 5-6 written the obvious way: stack, softmax over the branch axis, weighted sum."""
    stacked = torch.stack(branches, dim=1)  # N×M×C×H×W
    count, channels = stacked.shape[1], stacked.shape[2]
    weights = logits.reshape(-1, count, channels, 1, 1).softmax(dim=1)
    return (stacked * weights).sum(dim=1)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_select_matches_naive_reference(count):
    torch.manual_seed(count)
    branches = [torch.randn(2, 8, 5, 5) for _ in range(count)]
    logits = torch.randn(2, count * 8, 1, 1)
    out = L.Select(count, 8)(logits, *branches)
    torch.testing.assert_close(out, naive_select(logits, branches))


def test_select_weights_sum_to_one_per_channel():
    branch = torch.randn(1, 4, 3, 3)
    out = L.Select(3, 4)(torch.randn(1, 12, 1, 1), branch, branch, branch)
    torch.testing.assert_close(out, branch)


def test_select_keeps_channels_last():
    branches = [torch.randn(2, 8, 6, 6).to(memory_format=torch.channels_last) for _ in range(2)]
    logits = torch.randn(2, 16, 1, 1).to(memory_format=torch.channels_last)
    out = L.Select(2, 8)(logits, *branches)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, naive_select(logits, branches))


def test_select_has_no_flops():
    branches = [torch.randn(1, 8, 4, 4) for _ in range(3)]
    with FlopCounterMode(display=False) as counter:
        L.Select(3, 8)(torch.randn(1, 24, 1, 1), *branches)
    assert counter.get_total_flops() == 0


def test_select_backpropagates_to_logits_and_branches():
    branches = [torch.randn(1, 4, 2, 2, requires_grad=True) for _ in range(2)]
    logits = torch.randn(1, 8, 1, 1, requires_grad=True)
    L.Select(2, 4)(logits, *branches).square().sum().backward()
    assert all(t.grad is not None for t in (logits, *branches))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_channel_shuffle_matches_view_transpose_reshape(memory_format):
    x = torch.randn(2, 12, 3, 4).to(memory_format=memory_format)
    reference = x.reshape(2, 3, 4, 3, 4).transpose(1, 2).reshape(2, 12, 3, 4)
    out = L.ChannelShuffle(3)(x)
    torch.testing.assert_close(out, reference)
    assert out.is_contiguous(memory_format=memory_format)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert L.ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_channel_split_gives_the_sizes_in_order():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    parts = L.ChannelSplit((1, 2, 3))(x)
    assert [p.flatten().tolist() for p in parts] == [[0], [1, 2], [3, 4, 5]]


def test_concat_joins_channels():
    a, b = torch.zeros(1, 2, 3, 3), torch.ones(1, 5, 3, 3)
    assert L.Concat()(a, b).shape == (1, 7, 3, 3)


def test_add_and_multiply_take_any_number_of_inputs():
    a, b, c = torch.full((1, 2, 2, 2), 2.0), torch.full((1, 2, 2, 2), 3.0), torch.full((1, 2, 1, 1), 4.0)
    assert L.Add()(a, b, a).unique().tolist() == [7.0]
    assert L.Multiply()(a, b, c).unique().tolist() == [24.0]
    assert L.Add()(a) is a


def test_multiply_broadcasts_a_channel_gate():
    x, gate = torch.randn(2, 4, 3, 3), torch.rand(2, 4, 1, 1)
    torch.testing.assert_close(L.Multiply()(x, gate), x * gate)


@pytest.mark.parametrize("mode, reference", [
    ("avg", lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 1)),
    ("max", lambda x: torch.nn.functional.adaptive_max_pool2d(x, 1)),
])
def test_global_pool_keeps_one_by_one(mode, reference):
    x = torch.randn(2, 5, 4, 3)
    out = L.GlobalPool(mode)(x)
    assert out.shape == (2, 5, 1, 1)
    torch.testing.assert_close(out, reference(x))


def test_global_pool_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        L.GlobalPool("median")


def test_flatten_linear_flattens_and_counts_only_its_linear_parameters():
    layer = L.FlattenLinear(4 * 3 * 3, 10)
    assert sum(p.numel() for p in layer.parameters()) == 36 * 10 + 10
    assert layer(torch.randn(2, 4, 3, 3)).shape == (2, 10)
    assert not list(layer.children())
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(1, 4, 3, 3))
    assert counter.get_total_flops() == 2 * 36 * 10


def test_flatten_linear_without_bias():
    layer = L.FlattenLinear(6, 3, bias=False)
    assert layer.bias is None and layer(torch.randn(2, 6)).shape == (2, 3)


@pytest.mark.parametrize("name", sorted(L.ACTIVATIONS))
def test_make_activation_builds_a_fresh_module(name):
    x = torch.randn(2, 3)
    first = L.make_activation(name)
    assert first is not L.make_activation(name)
    assert first(x).shape == x.shape


def test_make_activation_matches_torch():
    x = torch.linspace(-8, 8, 33)
    torch.testing.assert_close(L.make_activation("hardswish")(x), torch.nn.functional.hardswish(x))
    torch.testing.assert_close(L.make_activation("relu6")(x), x.clamp(0, 6))


def test_make_activation_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        L.make_activation("swish")


# -- the polyphase lowering of dilated convolutions --------------------------------------------

@pytest.mark.parametrize("stride, size", [(1, 8), (2, 8), (2, 7), (4, 12)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_polyphase_dilated_conv_matches_the_direct_one(stride, size, memory_format):
    torch.manual_seed(stride)
    direct = L.DilatedConv2d(8, 16, 3, stride, padding=2, dilation=2, groups=4, bias=True,
                             lowering="direct")
    lowered = L.DilatedConv2d(8, 16, 3, stride, padding=2, dilation=2, groups=4, bias=True,
                              lowering="polyphase")
    lowered.load_state_dict(direct.state_dict())
    x = torch.randn(2, 8, size, size).to(memory_format=memory_format)
    assert lowered.polyphase_applies(tuple(x.shape))
    inputs = [x.clone().requires_grad_() for _ in range(2)]
    outputs = [conv(x_) for conv, x_ in zip((direct, lowered), inputs)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    assert outputs[1].is_contiguous(memory_format=memory_format)
    for out in outputs:
        out.square().sum().backward()
    torch.testing.assert_close(inputs[1].grad, inputs[0].grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lowered.weight.grad, direct.weight.grad, rtol=1e-4, atol=1e-4)


def test_polyphase_counts_the_dilated_convolutions_flops():
    counts = []
    for lowering in ("direct", "polyphase"):
        conv = L.DilatedConv2d(8, 8, 3, 1, padding=2, dilation=2, groups=2, lowering=lowering)
        with FlopCounterMode(display=False) as counter:
            conv(torch.randn(1, 8, 6, 6))
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == 2 * 8 * 4 * 9 * 36


@pytest.mark.parametrize("shape, options", [
    ((1, 4, 7, 8), dict(stride=1, padding=2, dilation=2)),  # odd height: unequal sub-grids
    ((1, 4, 8, 8), dict(stride=1, padding=1, dilation=2)),  # padding not a multiple of d
    ((1, 4, 8, 8), dict(stride=3, padding=2, dilation=2)),  # stride not a multiple of d
])
def test_polyphase_falls_back_where_it_does_not_apply(shape, options):
    conv = L.DilatedConv2d(4, 4, 3, lowering="polyphase", **options)
    reference = torch.nn.Conv2d(4, 4, 3, **options)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(shape)
    assert not conv.polyphase_applies(shape)
    torch.testing.assert_close(conv(x), reference(x))


def test_polyphase_auto_follows_the_device_rule(monkeypatch):
    conv = L.DilatedConv2d(4, 4, 3, 2, padding=2, dilation=2)
    calls = []
    monkeypatch.setattr(L, "_polyphase", lambda x, *conv: calls.append(x) or x)
    monkeypatch.setitem(L.POLYPHASE, "cpu", frozenset())
    conv(torch.randn(1, 4, 8, 8))
    assert not calls
    monkeypatch.setitem(L.POLYPHASE, "cpu", frozenset({"strided"}))
    conv(torch.randn(1, 4, 8, 8))
    assert len(calls) == 1
    with pytest.raises(ValueError, match="unknown lowering"):
        L.DilatedConv2d(4, 4, 3, lowering="fast")


# -- in place -----------------------------------------------------------------------------------

def test_add_in_place_accumulates_into_its_first_input():
    a, b = torch.ones(1, 2, 2, 2), torch.full((1, 2, 2, 2), 2.0)
    out = L.Add(inplace=True)(a, b)
    assert out is a and out.unique().tolist() == [3.0]
    assert L.Add()(torch.ones(1), torch.ones(1)).item() == 2.0


def test_add_in_place_keeps_a_promoted_dtype():
    a, b = torch.ones(2, dtype=torch.bfloat16), torch.ones(2)
    out = L.Add(inplace=True)(a, b)
    assert out.dtype == torch.float32 and a.tolist() == [1.0, 1.0]


def test_folded_batch_norm_passes_its_input_on():
    x = torch.randn(2, 3)
    folded = L.FoldedBatchNorm("stem.conv")
    assert folded(x) is x and "folded into stem.conv" in repr(folded)
