"""The imagefolder pipeline's speed (decode + augment), against plain PIL + DataLoader.

    python benchmarks/data_speed.py [--images 192] [--batch 32] [--epochs 2]

Writes a folder of JPEGs (224×224 at quality 90: photographs' size after the usual ImageNet
preprocessing) to a temporary directory, then times one training epoch of images per second
through:

    skdsl       data.open_source("imagefolder:DIR") + data.make_loader, as `skdsl train` runs
                it: decode with Pillow, random-resized crop to 224 and flip, normalise
    baseline    a plain Dataset: PIL.Image.open, PIL's crop and resize (bilinear), flip, to a
                tensor and normalise, in a torch DataLoader

with 0, 1 and 2 loader workers. Candidates alternate within each repeat and the ratio is the
median over repeats of skdsl's img/s ÷ the baseline's in the same repeat. Also times the
synthetic source at 32×32 (what `skdsl train specs/sknet_tiny.sk --data synthetic` reads) and one
training step of sknet_tiny on one thread, to say whether the model or the data bounds that run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from skdsl.train import data as D  # noqa: E402


def write_folder(root: Path, images: int, side: int = 224) -> None:
    """`images` JPEGs in two classes, smooth gradients and noise (JPEG sizes like photographs')."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", images), ("val", 8)):
        for index in range(count):
            folder = root / split / f"class{index % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            ramp = torch.linspace(0, 1, side)
            base = torch.stack([ramp[None, :].expand(side, side), ramp[:, None].expand(side, side),
                                torch.full((side, side), index / count)])
            noisy = (base + 0.15 * torch.randn(3, side, side, generator=generator)).clamp(0, 1)
            pixels = (noisy * 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
            Image.fromarray(pixels).save(folder / f"{index:05d}.jpg", quality=90)


class PillowBaseline(torch.utils.data.Dataset):
    """What a user writes without torchvision: PIL decode, crop, resize and flip; then a tensor."""

    def __init__(self, items, size: int = 224, scale=(0.08, 1.0)):
        self.items, self.size, self.scale = items, size, scale

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        import math
        import random

        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        width, height = image.size
        area = width * height * random.uniform(*self.scale)
        aspect = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
        crop_w = min(width, round(math.sqrt(area * aspect)))
        crop_h = min(height, round(math.sqrt(area / aspect)))
        left, top = random.randint(0, width - crop_w), random.randint(0, height - crop_h)
        image = image.resize((self.size, self.size), Image.BILINEAR,
                             box=(left, top, left + crop_w, top + crop_h))
        if random.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        tensor = pixels.view(self.size, self.size, 3).permute(2, 0, 1).float() / 255
        return D.normalize(tensor, D.IMAGENET_MEAN, D.IMAGENET_STD), label


def skdsl_loader(root: Path, batch: int, workers: int):
    source = D.open_source(D.parse_source(f"imagefolder:{root}"), (3, 224, 224), 2, seed=0)
    sampler = D.EpochSampler(source.train, 0, 1, seed=0)
    return D.make_loader(source.train, batch, sampler, workers, pin_memory=False, drop_last=True)


def baseline_loader(root: Path, batch: int, workers: int):
    source = D.open_source(D.parse_source(f"imagefolder:{root}"), (3, 224, 224), 2, seed=0)
    dataset = PillowBaseline(source.train.images.items)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=workers > 0)


def images_per_second(loader) -> float:
    start, count = time.perf_counter(), 0
    for images, _ in loader:
        count += len(images)
    return count / (time.perf_counter() - start)


def pipeline_table(root: Path, batch: int, repeats: int) -> None:
    print(f"\nimagefolder at 224×224 (decode + random-resized crop + flip + normalise), "
          f"batch {batch}, img/s")
    print(f"  {'workers':>7}{'skdsl':>10}{'baseline':>10}{'skdsl ÷ baseline':>18}")
    for workers in (0, 1, 2):
        loaders = {"skdsl": skdsl_loader(root, batch, workers),
                   "baseline": baseline_loader(root, batch, workers)}
        for loader in loaders.values():
            images_per_second(loader)  # warm-up: worker start, file cache
        speeds = {name: [] for name in loaders}
        for repeat in range(repeats):
            for name in (list(loaders) if repeat % 2 == 0 else list(loaders)[::-1]):
                speeds[name].append(images_per_second(loaders[name]))
        ratio = statistics.median(s / b for s, b in zip(speeds["skdsl"], speeds["baseline"]))
        print(f"  {workers:>7}{statistics.median(speeds['skdsl']):>10.1f}"
              f"{statistics.median(speeds['baseline']):>10.1f}{ratio:>18.2f}", flush=True)


def model_or_data() -> None:
    """The README's run: synthetic 32×32 images against sknet_tiny's training step, 1 thread."""
    import skdsl

    torch.set_num_threads(1)
    source = D.open_source(D.parse_source("synthetic:train=1024,val=8"), (3, 32, 32), 10, seed=0)
    sampler = D.EpochSampler(source.train, 0, 1, seed=0)
    loader = D.make_loader(source.train, 128, sampler, 0, pin_memory=False, drop_last=True)
    data_speed = images_per_second(loader)
    model = skdsl.compile(skdsl.load(str(ROOT / "specs" / "sknet_tiny.sk"))).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, labels = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    steps, start = 4, None
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # the first step warms up
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model_speed = steps * 128 / (time.perf_counter() - start)
    bound = "the model" if model_speed < data_speed else "the data"
    print(f"\nskdsl train specs/sknet_tiny.sk --data synthetic, one thread: synthetic images "
          f"{data_speed:.0f} img/s, training steps {model_speed:.0f} img/s: {bound} bounds it "
          f"(together about {1 / (1 / data_speed + 1 / model_speed):.0f} img/s without workers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the loader's work, not the main process's threads, is timed
    with tempfile.TemporaryDirectory() as folder:
        write_folder(Path(folder), args.images)
        pipeline_table(Path(folder), args.batch, args.repeats)
    model_or_data()


if __name__ == "__main__":
    main()
