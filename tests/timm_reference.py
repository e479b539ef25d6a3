"""An independent plain-PyTorch SK-ResNet with timm's module names (timm/models/sknet.py's
skresnet18/34/50/50d as that file describes them), so that CI, which has no timm, can check
that `skdsl weights convert --from timm` and the specs compute what timm's models compute.

Written from the architecture, not from timm's code: the SK convolution's paths (3×3 with
dilation 1 and 2, each on its half of the input channels when split), the attention (sum of the
paths, global average, 1×1 reduce + BN + ReLU, 1×1 select to M·C, softmax over the paths), the
basic and bottleneck units, the deep stem and the average-pool shortcut of the `d` variant.
"""

from __future__ import annotations

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


ARCHITECTURES = {  # name: (unit, units per stage, deep stem and average-pool shortcuts)
    "skresnet18": (Basic, (2, 2, 2, 2), False),
    "skresnet34": (Basic, (3, 4, 6, 3), False),
    "skresnet50": (Bottleneck, (3, 4, 6, 3), False),
    "skresnet50d": (Bottleneck, (3, 4, 6, 3), True),
}


class SKResNet(nn.Module):
    def __init__(self, name: str, classes: int = 1000):
        super().__init__()
        unit, depths, deep = ARCHITECTURES[name]
        if deep:
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 64, 3, 1, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for index, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths), start=1):
            units = []
            for position in range(depth):
                stride = 2 if index > 1 and position == 0 else 1
                units.append(unit(cin, planes, stride, deep))
                cin = planes * unit.expansion
            setattr(self, f"layer{index}", nn.Sequential(*units))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
        return self.fc(x.mean((2, 3)))
