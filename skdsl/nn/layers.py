"""The non-convolution ops of a compiled network, as small explicit torch modules.

Each module takes resolved numbers, never a config object, and keeps to elementwise and data
movement ops: no matmul, bmm or einsum, so a FLOP counter sees only convolutions and linear layers.
Shapes in comments are per batch: N images, C channels, H×W pixels, M kernel branches.

Two convolution helpers sit here too: `DilatedConv2d`, an `nn.Conv2d` that may run a dilated
convolution as an ordinary one on the polyphase sub-grids of its input (same weights, same
multiply-adds), and `FoldedBatchNorm`, what a BN becomes once `compiler.fuse_bn` has folded it
into the convolution before it.

torch.fx traces every module here. The two choices that read a tensor's dtype or device (an
in-place sum under autocast, the polyphase lowering) are plain functions marked `torch.fx.wrap`,
which a symbolic trace records as one call instead of running on a symbolic tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import spec as S

# The activation modules, by the name a spec uses (spec.ACTIVATIONS names their classes).
ACTIVATIONS: dict[str, type[nn.Module]] = {name: getattr(nn, module)
                                           for name, module in S.ACTIVATIONS.items()}


def make_activation(name: str) -> nn.Module:
    """The activation module called `name` (one of ACTIVATIONS), not in place: the compiler
    switches `inplace` on where its input is read by nothing else (see compiler.py)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Add(nn.Module):
    """Elementwise sum of one or more tensors of one shape.

    With `inplace` (set by the compiler only where the first input is read by nothing else and
    autograd saved it nowhere) the sum accumulates into the first input, as torchvision's
    `out += identity`: one full-size allocation fewer per residual unit.
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, *inputs: Tensor) -> Tensor:
        return elementwise_sum(inputs, self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


@torch.fx.wrap  # one opaque call for torch.fx: its dtype test cannot run on a symbolic tensor
def elementwise_sum(inputs: tuple[Tensor, ...], inplace: bool) -> Tensor:
    """The sum of `inputs`, accumulated into the first one when `inplace` (see `Add`)."""
    out = inputs[0]
    rest = inputs[1:]
    # The compiler checked the shapes; under autocast a sum may still promote the dtype.
    if inplace and rest and all(other.dtype == out.dtype for other in rest):
        for other in rest:
            out = out.add_(other)
        return out
    for other in rest:
        out = out + other
    return out


class Multiply(nn.Module):
    """Elementwise product of one or more tensors, broadcasting (C×H×W times a C×1×1 gate)."""

    def forward(self, *inputs: Tensor) -> Tensor:
        out = inputs[0]
        for other in inputs[1:]:
            out = out * other
        return out


class Scale(nn.Module):
    """Multiply by a constant factor (Inception-ResNet's residual scaling); no parameters."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor  # same shape

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class Concat(nn.Module):
    """Concatenation of feature maps along the channel dimension."""

    def forward(self, *inputs: Tensor) -> Tensor:
        return torch.cat(inputs, dim=1)  # N×ΣC×H×W


class ChannelSplit(nn.Module):
    """Split a feature map into consecutive channel groups of the given sizes."""

    def __init__(self, sizes: tuple[int, ...]):
        super().__init__()
        self.sizes = tuple(sizes)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return torch.split(x, self.sizes, dim=1)  # views: no copy, memory format kept

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: view as g×(C/g) channels, transpose, flatten back."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        per_group = channels // self.groups
        # A reshape would copy into NCHW; writing into empty_like keeps channels_last inputs so.
        out = torch.empty_like(x)  # N×C×H×W
        shuffled = x.unflatten(1, (self.groups, per_group)).transpose(1, 2)  # N×C/g×g×H×W
        out.unflatten(1, (per_group, self.groups)).copy_(shuffled)
        return out

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class _Reduce(nn.Module):
    """Average or max over fixed dimensions, kept as size-1 dimensions; subclasses name them."""

    dims: tuple[int, ...]
    where: str

    def __init__(self, mode: str):
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"unknown {self.where} pooling mode '{mode}'; known: avg, max")
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "avg":
            return x.mean(dim=self.dims, keepdim=True)
        return x.amax(dim=self.dims, keepdim=True)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class GlobalPool(_Reduce):
    """Global average or max pooling to a C×1×1 map."""

    dims, where = (2, 3), "global"


class ChannelPool(_Reduce):
    """Average or max over the channels to a 1×H×W map (CBAM's spatial attention input)."""

    dims, where = (1,), "channel"


class FlattenLinear(nn.Linear):
    """A fully connected layer on the input flattened to N×features (the Linear's own weights)."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # N×F
        return F.linear(x, self.weight, self.bias)  # N×out_features


class Select(nn.Module):
    """The SK unit's Select (SKNet, section 3.1, Eq. 5-6): softmax over M branches, weighted sum.

    `groups` > 1 reads the logits group-major, as ResNeSt's split attention writes them (timm's
    RadixSoftmax): the fc's group g holds the logits of every branch for channel group g."""

    def __init__(self, branches: int, channels: int, groups: int = 1):
        super().__init__()
        self.branches = branches
        self.channels = channels
        self.groups = groups

    def forward(self, logits: Tensor, *branches: Tensor) -> Tensor:
        if self.groups > 1:  # G×M×(C/G) -> M×G×(C/G): branch-major, as below
            logits = logits.reshape(-1, self.groups, self.branches, self.channels // self.groups)
            logits = logits.transpose(1, 2)
        # Path-major logits (as Caffe and timm): all C channels of branch 1, then of branch 2 ...
        logits = logits.reshape(-1, self.branches, self.channels, 1, 1)  # N×M×C×1×1
        weights = logits.softmax(dim=1)  # N×M×C×1×1: a_c + b_c + ... = 1
        # Weighted sum branch by branch: no stack, so the branches' memory format carries over.
        # The sum accumulates into the fresh product (autograd saved the product's operands,
        # never the product), so the unit allocates one full-size tensor, not M.
        out = branches[0] * weights[:, 0]  # N×C×H×W
        for index in range(1, self.branches):
            out = out.addcmul_(branches[index], weights[:, index])  # N×C×H×W
        return out

    def extra_repr(self) -> str:
        layout = f", groups={self.groups} (group-major logits)" if self.groups > 1 else ""
        return f"branches={self.branches}, channels={self.channels}{layout}"


class ChannelConv(nn.Module):
    """ECA's 1-D convolution along the channels at every pixel (ops/eca.py); with `hidden`,
    timm's ECA-MLP (a conv 1→N of width 1, ReLU, then the k-wide conv N→1). One module with
    the weights of conv1d's layout (timm's EcaModule's `conv` is `weight`, its `conv2` is
    `weight2`), not a parent of Conv1d modules: a compiled network's leaves are its graph's ops."""

    def __init__(self, kernel: int, circular: bool, hidden: int, bias: bool):
        super().__init__()
        self.padding = (kernel - 1) // 2
        self.circular = circular
        self.hidden = hidden
        first = (hidden, 1, 1) if hidden else (1, 1, kernel)
        self.weight = nn.Parameter(torch.empty(first))
        self.bias = nn.Parameter(torch.empty(first[0])) if bias else None
        if hidden:
            self.weight2 = nn.Parameter(torch.empty(1, hidden, kernel))
            self.bias2 = nn.Parameter(torch.empty(1)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Conv1d's own initialisation, weight by weight."""
        for weight, bias in self._convs():
            nn.init.kaiming_uniform_(weight, a=5 ** 0.5)
            if bias is not None:
                bound = weight[0].numel() ** -0.5
                nn.init.uniform_(bias, -bound, bound)

    def _convs(self) -> list[tuple[Tensor, Tensor | None]]:
        convs = [(self.weight, self.bias)]
        return convs + [(self.weight2, self.bias2)] if self.hidden else convs

    def forward(self, x: Tensor) -> Tensor:
        moved = x.movedim(1, -1)
        y = moved.reshape(-1, 1, moved.shape[-1])  # each pixel's C channels, a sequence
        if self.hidden:
            y = F.relu(F.conv1d(y, self.weight, self.bias))
        weight, bias = self._convs()[-1]
        if self.circular:  # timm's CecaModule pads with F.pad, then convolves without padding
            y = F.conv1d(F.pad(y, (self.padding, self.padding), mode="circular"), weight, bias)
        else:
            y = F.conv1d(y, weight, bias, padding=self.padding)
        return y.reshape(moved.shape).movedim(-1, 1)

    def extra_repr(self) -> str:
        kernel = self._convs()[-1][0].shape[-1]
        text = f"kernel={kernel}" + (", circular" if self.circular else "")
        return text + (f", hidden={self.hidden}" if self.hidden else "")


class AttentionPool(nn.Module):
    """GCNet's context modelling (ops/context.py): a softmax over the H·W positions of a 1×H×W
    logit map weighs every channel's pixels into one value, C×H×W -> C×1×1."""

    def forward(self, logits: Tensor, x: Tensor) -> Tensor:
        batch, channels = x.shape[:2]
        weights = logits.reshape(batch, 1, -1, 1).softmax(dim=2)  # N×1×HW×1
        context = x.reshape(batch, 1, channels, -1) @ weights  # N×1×C×1: one matmul
        return context.reshape(batch, channels, 1, 1)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an N×C×H×W map (timm's LayerNorm2d)."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.movedim(1, -1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)


# Which dilated convolutions run as ordinary ones on polyphase sub-grids, by device type:
# "stride1" (d² sub-grids batched) and "strided" (stride a multiple of d: one sub-grid). The rule
# is what `benchmarks/run.py` measured (docs/performance.md). On this project's CPU (oneDNN,
# one thread, SKNet-50's shapes) the strided lowering took 0.4-0.55× the direct convolution's
# forward+backward time and the stride-1 lowering 1.2-2×, so the CPU lowers strided ones only.
# A device type not listed runs every convolution as written until it has been measured.
POLYPHASE: dict[str, frozenset[str]] = {"cpu": frozenset({"strided"})}


@torch.fx.wrap  # one opaque call for torch.fx: the choice reads the input's device and size
def dilated_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
                   padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                   lowering: str) -> Tensor:
    """`DilatedConv2d`'s convolution (zero padding): direct, or on polyphase sub-grids."""
    if lowering == "auto":
        kind = "stride1" if stride[0] == 1 else "strided"
        wanted = kind in POLYPHASE.get(x.device.type, ())
    else:
        wanted = lowering == "polyphase"
    if wanted and _polyphase_applies(tuple(x.shape), stride, padding, dilation):
        return _polyphase(x, weight, bias, stride[0], padding, dilation[0], groups)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _polyphase_applies(shape: tuple[int, ...], stride: tuple[int, int],
                       padding: tuple[int, int], dilation: tuple[int, int]) -> bool:
    (d, d_w), (s, s_w) = dilation, stride
    if len(shape) != 4 or d != d_w or s != s_w or d < 2 or any(p % d for p in padding):
        return False
    if s == 1:
        return shape[2] % d == 0 and shape[3] % d == 0
    return s % d == 0


def _polyphase(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int,
               padding: tuple[int, int], d: int, groups: int) -> Tensor:
    padding = (padding[0] // d, padding[1] // d)
    layout = (torch.channels_last if not x.is_contiguous()
              and x.is_contiguous(memory_format=torch.channels_last)
              else torch.contiguous_format)
    if stride > 1:  # stride d·k reads sub-grid (0, 0) only: one strided copy, in x's layout
        grid = x[:, :, ::d, ::d].contiguous(memory_format=layout)
        return F.conv2d(grid, weight, bias, stride // d, padding, 1, groups)
    n, channels, height, width = x.shape
    # N×C×H×W -> d²N×C×(H/d)×(W/d): image n's sub-grid (s, t) is image (s·d + t)·N + n.
    grids = torch.empty((d * d * n, channels, height // d, width // d), dtype=x.dtype,
                        device=x.device, memory_format=layout)
    grids.unflatten(0, (d, d, n)).copy_(
        x.unflatten(2, (height // d, d)).unflatten(4, (width // d, d))
        .permute(3, 5, 0, 1, 2, 4))  # d×d×N×C×(H/d)×(W/d)
    y = F.conv2d(grids, weight, bias, 1, padding, 1, groups)
    out_channels, out_height, out_width = y.shape[1], y.shape[2] * d, y.shape[3] * d
    out = torch.empty((n, out_channels, out_height, out_width), dtype=y.dtype,
                      device=y.device, memory_format=layout)
    out.unflatten(2, (out_height // d, d)).unflatten(4, (out_width // d, d)).copy_(
        y.unflatten(0, (d, d, n)).permute(2, 3, 4, 0, 5, 1))  # N×C×(H/d)×d×(W/d)×d
    return out


class DilatedConv2d(nn.Conv2d):
    """A dilated convolution that can run as an undilated one on its input's polyphase sub-grids.

    With dilation d, padding p = d·q and stride 1, output pixel (d·i + s, d·j + t) reads only
    input pixels congruent to (s, t) modulo d, so that sub-grid of the output is the undilated
    kernel applied, with padding q, to the input's sub-grid x[:, :, s::d, t::d]. The d² sub-grids
    travel as one batch of d²·N images through one ordinary convolution. With stride d·k only
    sub-grid (0, 0) is read, and the ordinary convolution takes stride k. The parameters, their
    names and the multiply-adds a FLOP counter sees are the dilated convolution's.

    `lowering`: "auto" (by device type and stride, from POLYPHASE), "direct" or "polyphase".
    Shapes the lowering cannot take (unequal sub-grids, a padding that is not a multiple of d)
    run directly.
    """

    def __init__(self, *args, lowering: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        if lowering not in ("auto", "direct", "polyphase"):
            raise ValueError(f"unknown lowering '{lowering}'; known: auto, direct, polyphase")
        self.lowering = lowering

    def forward(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        return dilated_conv2d(x, self.weight, self.bias, self.stride, self.padding,
                              self.dilation, self.groups, self.lowering)

    def polyphase_applies(self, shape: tuple[int, ...]) -> bool:
        """Whether the lowering gives this input's output exactly (sizes, not values, decide)."""
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return False
        return _polyphase_applies(shape, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.lowering == "auto" else f"{text}, lowering={self.lowering}"


class FoldedBatchNorm(nn.Identity):
    """A batch norm that `compiler.fuse_bn` folded into the convolution `into`: it passes its
    input on, and keeps the node's name so module names still equal graph node names."""

    def __init__(self, into: str):
        super().__init__()
        self.into = into

    def extra_repr(self) -> str:
        return f"folded into {self.into}"


def initialise(model: nn.Module) -> None:
    """The paper's initialisation: He for convolutions, N(0, 0.01) for linear, BN to identity."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)


__all__ = [
    "initialise", "ACTIVATIONS", "make_activation", "elementwise_sum", "dilated_conv2d", "Add",
    "Multiply", "Scale", "Concat", "ChannelSplit",
    "ChannelShuffle", "GlobalPool", "ChannelPool", "FlattenLinear", "Select", "ChannelConv",
    "AttentionPool", "ChannelLayerNorm", "POLYPHASE",
    "DilatedConv2d", "FoldedBatchNorm",
]
