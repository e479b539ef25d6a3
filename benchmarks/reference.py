"""An independent, straightforward plain-PyTorch SKNet, written from the paper (not from skdsl).

SKNet-50 is Table 1's right column: a ResNeXt-50 whose 3×3 grouped convolution is an SK
convolution (section 3.1) with M=2 branches (3×3, and 3×3 with dilation 2 for the 5×5 field),
G=32 groups, r=16, L=32:

    Split:  U_m = ReLU(BN(conv_m(X)))                          m = 1..M
    Fuse:   U = Σ U_m,  s = global average pool of U,  z = ReLU(BN(W s))      (Eq. 1-4)
    Select: a_m = softmax over m of (A_m z),  V = Σ a_m · U_m                  (Eq. 5-6)

It is written the way a reader of the paper writes it, as in most public re-implementations:
the branches are stacked into one N×M×C×H×W tensor, each branch has its own fc A_m (d → C),
the logits are stacked, softmaxed over the branch axis, and the weighted sum is a product and
a sum over that axis. ReLUs are in place, as in torchvision's ResNet.

`load_compiled_weights` copies a compiled skdsl model's weights in (the compiled model keeps
one 1×1 conv d → M·C for all A_m, path-major, which is the A_m stacked), so both compute the
same function; `benchmarks/run.py` checks that before it times anything.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_bn(in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
            groups: int = 1, dilation: int = 1, relu: bool = True) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups,
                        bias=False),
              nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SKConv(nn.Module):
    """Split, Fuse, Select (Fig. 1 of the paper)."""

    def __init__(self, channels: int, stride: int = 1, M: int = 2, G: int = 32, r: int = 16,
                 L: int = 32):
        super().__init__()
        d = max(channels // r, L)
        self.M = M
        self.channels = channels
        # Split: branch m is a 3×3 grouped conv with dilation m (kernel fields 3×3, 5×5, ...).
        self.convs = nn.ModuleList(
            conv_bn(channels, channels, 3, stride, G, dilation=m) for m in range(1, M + 1))
        # Fuse: z = ReLU(BN(W s)), W ∈ R^{d×C}.
        self.fc = conv_bn(channels, d, 1)
        # Select: one matrix A_m ∈ R^{C×d} per branch.
        self.fcs = nn.ModuleList(nn.Conv2d(d, channels, 1, bias=False) for _ in range(M))

    def forward(self, x: Tensor) -> Tensor:
        feats = torch.stack([conv(x) for conv in self.convs], dim=1)  # N×M×C×H×W
        u = feats.sum(dim=1)  # N×C×H×W
        s = u.mean(dim=(2, 3), keepdim=True)  # N×C×1×1
        z = self.fc(s)  # N×d×1×1
        logits = torch.stack([fc(z) for fc in self.fcs], dim=1)  # N×M×C×1×1
        attention = logits.softmax(dim=1)
        return (feats * attention).sum(dim=1)  # N×C×H×W


class SKUnit(nn.Module):
    """The bottleneck: 1×1 reduce, SK convolution (with the stride), 1×1 expand, shortcut."""

    def __init__(self, in_channels: int, width: int, out_channels: int, stride: int = 1, **sk):
        super().__init__()
        self.conv1 = conv_bn(in_channels, width, 1)
        self.sk = SKConv(width, stride, **sk)
        self.conv3 = conv_bn(width, out_channels, 1, relu=False)
        self.shortcut = (conv_bn(in_channels, out_channels, 1, stride, relu=False)
                         if stride != 1 or in_channels != out_channels else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.sk(self.conv1(x)))
        return self.relu(out + self.shortcut(x))


class SKNet(nn.Module):
    """SKNet with ResNeXt's layout: a 7×7 stem, max pool, four stages of SK units, fc."""

    def __init__(self, depths=(3, 4, 6, 3), widths=(128, 256, 512, 1024),
                 outs=(256, 512, 1024, 2048), stem: int = 64, classes: int = 1000, **sk):
        super().__init__()
        self.stem = conv_bn(3, stem, 7, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, channels = [], stem
        for index, (depth, width, out) in enumerate(zip(depths, widths, outs)):
            units = []
            for unit in range(depth):
                stride = 2 if unit == 0 and index > 0 else 1
                units.append(SKUnit(channels, width, out, stride, **sk))
                channels = out
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.maxpool(self.stem(x)))
        return self.fc(torch.flatten(x.mean(dim=(2, 3)), 1))


def sknet50(**options) -> SKNet:
    return SKNet(**options)


def compiled_name(name: str) -> str | None:
    """The compiled skdsl model's name for a reference weight (None for the A_m, stacked apart)."""
    parts = name.split(".")
    if parts[0] == "stem":
        return "conv1.conv." + {"0": "conv", "1": "bn"}[parts[1]] + "." + ".".join(parts[2:])
    if parts[0] == "fc":
        return "head." + name
    # stages.S.U.<module>...
    stage, unit, rest = int(parts[1]), int(parts[2]), parts[3:]
    prefix = f"conv{stage + 2}.block{unit + 1}."
    layer = {"0": "conv", "1": "bn"}
    if rest[0] in ("conv1", "shortcut"):
        return prefix + f"{rest[0]}.{layer[rest[1]]}." + ".".join(rest[2:])
    if rest[0] == "conv3":
        return prefix + f"conv2.{layer[rest[1]]}." + ".".join(rest[2:])
    # sk.convs.m.k... / sk.fc.k... / sk.fcs.m.weight
    if rest[1] == "convs":
        return prefix + f"sk.branch{int(rest[2]) + 1}.{layer[rest[3]]}." + ".".join(rest[4:])
    if rest[1] == "fc":
        return prefix + f"sk.reduce.{layer[rest[2]]}." + ".".join(rest[3:])
    return None


@torch.no_grad()
def load_compiled_weights(reference: SKNet, compiled_state: dict[str, Tensor]) -> None:
    """Copy a compiled skdsl SKNet's state dict into `reference` (every entry, checked)."""
    used = set()
    for name, tensor in reference.state_dict().items():
        target = compiled_name(name)
        if target is None:  # stages.S.U.sk.fcs.m.weight: rows m·C … (m+1)·C of the logits conv
            parts = name.split(".")
            stage, unit, branch = int(parts[1]), int(parts[2]), int(parts[5])
            target = f"conv{stage + 2}.block{unit + 1}.sk.logits.weight"
            rows = tensor.shape[0]
            tensor.copy_(compiled_state[target][branch * rows:(branch + 1) * rows])
        else:
            tensor.copy_(compiled_state[target])
        used.add(target)
    unused = set(compiled_state) - used
    if unused:
        raise ValueError(f"compiled weights without a reference place: {sorted(unused)[:5]}")


__all__ = ["SKNet", "SKUnit", "SKConv", "sknet50", "load_compiled_weights", "compiled_name"]
