"""Independent plain-PyTorch networks with timm's module names: the SK-ResNets (timm/models/
sknet.py's skresnet18/34/50/50d), the ResNet-Ds with ECA or SE (ecaresnet26t, ecaresnet50d,
seresnext26d_32x4d) and ResNeSt-D (resnest14d/26d/50d), so that CI, which has no timm, can check
that `skdsl weights convert --from timm` and the specs compute what timm's models compute.

Written from the architectures (the papers and timm's configurations), not from timm's code:
the SK convolution's paths (3×3 with dilation 1 and 2, each on its half of the input channels
when split), the attention (sum of the paths, global average, 1×1 reduce + BN + ReLU, 1×1 select
to M·C, softmax over the paths), the basic and bottleneck units, the deep (or tiered) stem and
the average-pool shortcut of the `d` variant; ECA's k-wide conv across the pooled channels
(Wang et al. 2020) and SE's two biased fcs after a bottleneck's last BN; ResNeSt's split
attention (radix alike 3×3 paths computed as one conv of groups radix·G, their sum pooled, fc +
BN + ReLU, fc to radix·C logits in cardinal groups, a softmax over the radix) with the stride on
a 3×3 average pool after it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def make_divisible(value: float, divisor: int) -> int:
    """Round to the nearest multiple of `divisor`, at least `divisor`, never 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBn(nn.Module):
    """timm's ConvNormAct: children `conv` and `bn` (its ReLU holds no state)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, dilation * (kernel - 1) // 2, dilation,
                              bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.act else x


class SelectiveKernel(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, rd_ratio: float, rd_divisor: int):
        super().__init__()
        self.part = cin // 2  # split input: each of the two paths reads its half
        self.paths = nn.ModuleList(ConvBn(self.part, cout, 3, stride, dilation)
                                   for dilation in (1, 2))
        width = make_divisible(cout * rd_ratio, rd_divisor)
        self.attn = nn.Module()
        self.attn.fc_reduce = nn.Conv2d(cout, width, 1, bias=False)
        self.attn.bn = nn.BatchNorm2d(width)
        self.attn.fc_select = nn.Conv2d(width, 2 * cout, 1, bias=False)

    def forward(self, x):
        parts = torch.split(x, self.part, dim=1)
        paths = torch.stack([path(part) for path, part in zip(self.paths, parts)], dim=1)
        summary = paths.sum(1).mean((2, 3), keepdim=True)
        logits = self.attn.fc_select(torch.relu(self.attn.bn(self.attn.fc_reduce(summary))))
        weights = logits.view(x.shape[0], 2, -1, 1, 1).softmax(dim=1)
        return (paths * weights).sum(1)


def shortcut(cin: int, cout: int, stride: int, avg_down: bool) -> nn.Module:
    if cin == cout and stride == 1:
        return nn.Identity()
    project = [nn.Conv2d(cin, cout, 1, 1 if avg_down else stride, bias=False),
               nn.BatchNorm2d(cout)]
    if avg_down:
        pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                else nn.Identity())
        project.insert(0, pool)
    return nn.Sequential(*project)


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, avg_down: bool):
        super().__init__()
        self.conv1 = SelectiveKernel(cin, planes, stride, 1 / 8, 16)
        self.conv2 = ConvBn(planes, planes, 3, act=False)
        self.downsample = shortcut(cin, planes, stride, avg_down)

    def forward(self, x):
        return torch.relu(self.conv2(self.conv1(x)) + self.downsample(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, avg_down: bool):
        super().__init__()
        self.conv1 = ConvBn(cin, planes, 1)
        self.conv2 = SelectiveKernel(planes, planes, stride, 1 / 16, 8)
        self.conv3 = ConvBn(planes, planes * 4, 1, act=False)
        self.downsample = shortcut(cin, planes * 4, stride, avg_down)

    def forward(self, x):
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + self.downsample(x))


class Eca(nn.Module):
    """ECA: a k-wide 1-D conv across the pooled channels (k from C, Eq. 12), a sigmoid gate."""

    def __init__(self, channels: int):
        super().__init__()
        t = int(abs(math.log2(channels) + 1) / 2)
        kernel = max(t if t % 2 else t + 1, 3)
        self.conv = nn.Conv1d(1, 1, kernel, padding=(kernel - 1) // 2, bias=False)

    def forward(self, x):
        y = self.conv(x.mean((2, 3)).unsqueeze(1))  # N×1×C
        return x * torch.sigmoid(y).transpose(1, 2).unsqueeze(-1)


class SqueezeExcite(nn.Module):
    """timm's SE widths: C/16 rounded to a multiple of 8 (never up by a multiple)."""

    def __init__(self, channels: int):
        super().__init__()
        width = max(8, int(channels / 16 + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(channels, width, 1)
        self.fc2 = nn.Conv2d(width, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class AttnBottleneck(nn.Module):
    """timm's ResNet Bottleneck (conv/bn pairs, groups × base width) with `se` after bn3."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, avg_down: bool, attn=None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        width = planes * base_width // 64 * groups
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.se = attn(planes * 4)
        self.downsample = shortcut(cin, planes * 4, stride, avg_down)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.se(self.bn3(self.conv3(y))) + self.downsample(x))


class SplitAttention(nn.Module):
    def __init__(self, channels: int, radix: int = 2):
        super().__init__()
        self.radix = radix
        attn = max(32, int(channels * radix / 4 + 4) // 8 * 8)
        self.conv = nn.Conv2d(channels, channels * radix, 3, 1, 1, groups=radix, bias=False)
        self.bn0 = nn.BatchNorm2d(channels * radix)
        self.fc1, self.bn1 = nn.Conv2d(channels, attn, 1), nn.BatchNorm2d(attn)
        self.fc2 = nn.Conv2d(attn, channels * radix, 1)

    def forward(self, x):
        paths = torch.relu(self.bn0(self.conv(x))).unflatten(1, (self.radix, -1))  # N×R×C×H×W
        z = torch.relu(self.bn1(self.fc1(paths.sum(1).mean((2, 3), keepdim=True))))
        weights = self.fc2(z).view(x.shape[0], self.radix, -1, 1, 1).softmax(1)  # one group
        return (paths * weights).sum(1)


class ResNestBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, avg_down: bool):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = SplitAttention(planes)
        self.avd = nn.AvgPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = shortcut(cin, planes * 4, stride, avg_down)

    def forward(self, x):
        y = self.avd(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(self.bn3(self.conv3(y)) + self.downsample(x))


def _unit(unit, **options):
    def make(cin, planes, stride, avg_down):
        return unit(cin, planes, stride, avg_down, **options)
    make.expansion = unit.expansion
    return make


DEEP, TIERED = (32, 32), (24, 32)  # the deep stem's first two widths (its third is 64)
ARCHITECTURES = {  # name: (unit, units per stage, deep stem widths or None for 7×7)
    "skresnet18": (Basic, (2, 2, 2, 2), None),
    "skresnet34": (Basic, (3, 4, 6, 3), None),
    "skresnet50": (Bottleneck, (3, 4, 6, 3), None),
    "skresnet50d": (Bottleneck, (3, 4, 6, 3), DEEP),
    "ecaresnet26t": (_unit(AttnBottleneck, attn=Eca), (2, 2, 2, 2), TIERED),
    "ecaresnet50d": (_unit(AttnBottleneck, attn=Eca), (3, 4, 6, 3), DEEP),
    "seresnext26d_32x4d": (_unit(AttnBottleneck, attn=SqueezeExcite, groups=32, base_width=4),
                           (2, 2, 2, 2), DEEP),
    "resnest14d": (ResNestBottleneck, (1, 1, 1, 1), DEEP),
    "resnest26d": (ResNestBottleneck, (2, 2, 2, 2), DEEP),
    "resnest50d": (ResNestBottleneck, (3, 4, 6, 3), DEEP),
}


class SKResNet(nn.Module):
    def __init__(self, name: str, classes: int = 1000):
        super().__init__()
        unit, depths, deep = ARCHITECTURES[name]
        if deep:
            first, second = deep
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, first, 3, 2, 1, bias=False), nn.BatchNorm2d(first), nn.ReLU(),
                nn.Conv2d(first, second, 3, 1, 1, bias=False), nn.BatchNorm2d(second), nn.ReLU(),
                nn.Conv2d(second, 64, 3, 1, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for index, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths), start=1):
            units = []
            for position in range(depth):
                stride = 2 if index > 1 and position == 0 else 1
                units.append(unit(cin, planes, stride, deep is not None))
                cin = planes * unit.expansion
            setattr(self, f"layer{index}", nn.Sequential(*units))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
        return self.fc(x.mean((2, 3)))
