"""Print the Select weights of every SK unit (section 3.1, Eq. 5-6): a softmax over M branches.

Each `*.select` module is called as select(logits, branch_1, ..., branch_M), with path-major
logits N×(M·C)×1×1: reshaped to N×M×C, a softmax over M gives the weights a_c, b_c, ...
"""

from pathlib import Path

import torch

import skdsl

torch.manual_seed(0)  # the same initial weights on every run
spec = skdsl.load(Path(__file__).resolve().parent / "tiny_sk.sk", overrides={"M": 3})
model = skdsl.compile(spec).eval()
weights = {}  # unit name -> N×M×C softmax weights


def keep_weights(unit):
    def hook(module, inputs, output):
        logits = inputs[0].reshape(-1, module.branches, module.channels)  # N×M×C
        weights[unit] = logits.softmax(dim=1)
    return hook


for name, module in model.named_modules():
    if name.endswith(".select"):
        module.register_forward_hook(keep_weights(name.removesuffix(".select")))

images = torch.randn(2, *spec.input)  # two random 3×32×32 images
with torch.no_grad():
    model(images)
    # Without hooks: the outputs of named graph nodes, here one unit's raw logits.
    logits = model.features(images, ["conv2.block1.sk.logits"])["conv2.block1.sk.logits"]
assert torch.allclose(logits.reshape(2, 3, -1).softmax(1), weights["conv2.block1.sk"])
for unit, w in weights.items():  # mean over images and channels; the shares sum to 1
    shares = w.mean(dim=(0, 2)).tolist()
    print(f"{unit:<16}", ", ".join(f"D={m + 1}: {s:.3f}" for m, s in enumerate(shares)))
