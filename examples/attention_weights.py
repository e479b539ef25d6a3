"""Record the Select weights of every SK unit (section 3.1, Eq. 5-6): a softmax over M branches.

`AttentionRecorder` hooks each unit's `*.select` module only while the `with` is open, and
keeps N×M×C weights per unit, named as the paper names units (SK_<stage>_<unit>) and by graph
name, branches ordered by receptive field (3×3 with dilation D is a (2D+1)×(2D+1) field).
`skdsl inspect attention` runs the paper's scale experiment (section 4.4) with it.
"""

from pathlib import Path

import torch

import skdsl
from skdsl.inspect.record import AttentionRecorder

torch.manual_seed(0)  # the same initial weights on every run
spec = skdsl.load(Path(__file__).resolve().parent / "tiny_sk.sk", overrides={"M": 3})
model = skdsl.compile(spec).eval()
images = torch.randn(2, *spec.input)  # two random 3×32×32 images
with torch.no_grad(), AttentionRecorder(model) as recorder:
    model(images)
    # Without hooks: the outputs of named graph nodes, here one unit's raw logits.
    logits = model.features(images, ["conv2.block1.sk.logits"])["conv2.block1.sk.logits"]
assert torch.allclose(logits.reshape(2, 3, -1).softmax(1), recorder.weights("conv2.block1.sk"))
for unit in recorder.units:  # mean over images and channels; the shares sum to 1
    shares = recorder.weights(unit.name).mean(dim=(0, 2)).tolist()
    fields = unit.kernels.split("/")  # '3×3/5×5/7×7'
    print(f"{unit.name} {unit.layer:<16}", ", ".join(f"{f}: {s:.3f}"
                                                     for f, s in zip(fields, shares)))
