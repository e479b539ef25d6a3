"""Train SKNet-tiny on synthetic shapes, evaluate it, then test it on small and on large objects.

    python examples/train_tiny.py          # about a minute on 2 CPU cores
"""

import tempfile
from pathlib import Path

import torch

import skdsl
from skdsl.train import EvalConfig, TrainConfig, evaluate, train
from skdsl.train.data import SyntheticShapes, normalize

spec = Path(__file__).resolve().parent.parent / "specs" / "sknet_tiny.sk"
out = Path(tempfile.mkdtemp()) / "tiny"
train(TrainConfig(str(spec), out=str(out), data="synthetic", epochs=2))  # the cifar recipe
scores = evaluate(EvalConfig(str(spec), checkpoint=str(out / "best.pt")))
print(f"validation: top-1 {100 * scores['top1']:.1f}%, top-5 {100 * scores['top5']:.1f}% "
      f"(chance: 10% and 50%)")

# The object scale is a variable of the synthetic source: render every object small, then large.
model = skdsl.compile(skdsl.load(spec)).eval()
model.load_state_dict(torch.load(out / "best.pt", weights_only=True)["model"])
shapes = SyntheticShapes((32, 32), classes=10, length=400, seed=7, split=2)
for scale in (0.4, 0.8):
    images, labels = shapes.render(torch.arange(400), scale=scale)  # N×3×32×32 in 0..1
    with torch.no_grad():
        predicted = model(normalize(images, shapes.MEAN, shapes.STD)).argmax(dim=1)
    accuracy = (predicted == labels).float().mean().item()
    print(f"objects {scale:.0%} of the image side: top-1 {100 * accuracy:.1f}%")
