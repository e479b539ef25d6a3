"""Training data: the `--data` sources, their transforms (torch ops, no torchvision) and loaders.

    synthetic[:train=N,val=N,scale=LO-HI]   procedural shapes and textures, no download
    cifar10:DIR | cifar100:DIR              CIFAR's python pickled batches
    imagefolder:DIR                         DIR/train/<class>/*.jpg|png, DIR/val/<class>/...

Every random choice of a training transform comes from a generator seeded by (seed, epoch,
index), and the order of an epoch from (seed, epoch) alone: a run resumed from a checkpoint,
with any number of loader workers or processes, sees exactly the images it would have seen.
Images are C×H×W float tensors, normalised by the source's mean and std.
"""

from __future__ import annotations

import io
import itertools
import math
import pickle
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Generator, Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..base import files
from ..base.errors import SkdslError, did_you_mean
from ..base.errors import SettingError
from ..core.settings import DATA_KINDS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class DataError(SkdslError):
    """A data source that cannot be used: a missing directory, a malformed file, a broken image."""

    code = "SK512"


# -- parsing --data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    """A parsed --data value: the kind, and a directory or the synthetic options."""

    kind: str
    path: Path | None = None
    train_size: int = 10_000
    val_size: int = 2_000
    scale_range: tuple[float, float] = (0.35, 0.85)


def parse_source(text: str) -> SourceSpec:
    """'cifar10:data/cifar' -> SourceSpec('cifar10', Path('data/cifar')); checks the directory."""
    kind, _, rest = text.partition(":")
    if kind not in DATA_KINDS:
        raise SettingError(f"{{data}} {text!r}: unknown source '{kind}'", code="SK511",
                           hint=did_you_mean(kind, DATA_KINDS) or
                           f"use one of: {', '.join(DATA_KINDS)}")
    if kind == "synthetic":
        return _synthetic_options(text, rest)
    if not rest:
        raise SettingError(f"{{data}} {text!r}: name the directory, as in {kind}:DIR",
                           code="SK511")
    path = Path(rest).expanduser()
    if not path.is_dir():
        raise SettingError(f"{{data}} {text!r}: no directory '{path}'", code="SK511")
    return SourceSpec(kind, path)


def _synthetic_options(text: str, options: str) -> SourceSpec:
    """'train=2000,val=500,scale=0.3-0.6' -> the synthetic source with those sizes."""
    values: dict = {}
    for item in filter(None, options.split(",")):
        name, _, raw = item.partition("=")
        if name not in ("train", "val", "scale"):
            raise SettingError(f"{{data}} {text!r}: unknown synthetic option '{name}'",
                               code="SK511", hint="the options are train=N, val=N, scale=LO-HI")
        try:
            if name == "scale":
                values["scale_range"] = _scale_range(raw)
            else:
                values[f"{name}_size"] = _count(raw)
        except ValueError:
            raise SettingError(f"{{data}} {text[:80]!r}: bad value in '{item[:40]}'",
                               code="SK511",
                               hint=f"train=N and val=N take counts from 1 to {MAX_SYNTHETIC:,}; "
                                    f"scale=LO-HI two fractions of the image side, "
                                    f"0 < LO <= HI <= 1") from None
    return SourceSpec("synthetic", **values)


# Images per synthetic split: each epoch draws a permutation of them (8 bytes an image), and
# a run of more would never end an epoch.
MAX_SYNTHETIC = 10_000_000


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_SYNTHETIC:
        raise ValueError(text)
    return value


def _scale_range(text: str) -> tuple[float, float]:
    low, high = (float(part) for part in text.split("-"))
    if not 0 < low <= high <= 1:
        raise ValueError(text)
    return low, high


# -- transforms: torch ops on C×H×W tensors, randomness from an explicit generator ---------------


def uniform(generator: Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def random_flip(image: Tensor, generator: Generator) -> Tensor:
    """Mirror left-right with probability 1/2."""
    return image.flip(-1) if uniform(generator) < 0.5 else image


def random_crop_padded(image: Tensor, padding: int, generator: Generator) -> Tensor:
    """CIFAR's augmentation: zero-pad by `padding` on every side, crop back to the original size."""
    height, width = image.shape[-2:]
    padded = F.pad(image, (padding,) * 4)  # C×(H+2p)×(W+2p)
    top = int(torch.randint(0, 2 * padding + 1, (), generator=generator))
    left = int(torch.randint(0, 2 * padding + 1, (), generator=generator))
    return padded[..., top:top + height, left:left + width]


def random_resized_crop(image: Tensor, size: tuple[int, int], scale: tuple[float, float],
                        generator: Generator, ratio=(3 / 4, 4 / 3)) -> Tensor:
    """Inception-style crop: a random area fraction in `scale` and aspect ratio, resized to `size`."""
    height, width = image.shape[-2:]
    for _ in range(10):
        area = height * width * uniform(generator, *scale)
        aspect = math.exp(uniform(generator, math.log(ratio[0]), math.log(ratio[1])))
        crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
            return resize(image[..., top:top + crop_h, left:left + crop_w], size)
    return resize(center_crop(image, (min(height, width),) * 2), size)  # no fit in 10 tries


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with antialiasing (as PIL does when shrinking), to float."""
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear",
                            align_corners=False, antialias=True)
    return resized[0]  # C×H×W


def resize_shorter_side(image: Tensor, shorter: int) -> Tensor:
    height, width = image.shape[-2:]
    factor = shorter / min(height, width)
    return resize(image, (max(shorter, round(height * factor)), max(shorter, round(width * factor))))


def center_crop(image: Tensor, size: tuple[int, int]) -> Tensor:
    height, width = image.shape[-2:]
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    return image[..., top:top + size[0], left:left + size[1]]


def normalize(image: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 (0..255) or float (0..1) -> (x - mean) / std per channel, float32."""
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    mean_t = torch.tensor(mean).view(-1, 1, 1)
    std_t = torch.tensor(std).view(-1, 1, 1)
    return (image - mean_t) / std_t


def sample_generator(seed: int, epoch: int, index: int) -> Generator:
    """The generator of one image's random transform in one epoch: the same in every process."""
    # A tuple of ints hashes the same in every process (PYTHONHASHSEED only salts str and bytes).
    return torch.Generator().manual_seed(hash((seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)


# -- splits: a source's images with a transform --------------------------------------------------
# Readers and transforms are small picklable objects, not closures: loader workers started with
# `spawn` (macOS, Windows) receive the split by pickling.


class Split(Dataset):
    """A list of (image, label) with its transform.

    A training split is indexed by (epoch, index) keys from `EpochSampler`, so each image's random
    transform depends on the epoch; an evaluation split by plain indices, with no randomness.
    """

    def __init__(self, images, transform, seed: int = 0):
        self.images = images  # indexable: images[i] -> (image tensor, label)
        self.transform = transform  # transform(image, generator or None) -> C×H×W float
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> tuple[Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        image, label = self.images[index]
        generator = None if epoch is None else sample_generator(self.seed, epoch, index)
        return self.transform(image, generator), label


@dataclass(frozen=True)
class Normalize:
    """Evaluation on images already of the right size: normalisation only.

    `policy` (training only, such as augment.RandAugment) runs on the 0..1 image just before
    normalisation, after the source's own crop and flip."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    policy: Callable[[Tensor, Generator], Tensor] | None = field(default=None, kw_only=True)

    def __call__(self, image: Tensor, generator: Generator | None) -> Tensor:
        return normalize(image, self.mean, self.std)

    def finish(self, image: Tensor, generator: Generator | None) -> Tensor:
        """A training image (uint8, or float in 0..1) through the policy, then normalised."""
        image = image.float() / 255 if image.dtype == torch.uint8 else image
        if self.policy is not None and generator is not None:
            image = self.policy(image, generator)
        return normalize(image, self.mean, self.std)


@dataclass(frozen=True)
class FlipNormalize(Normalize):
    """Training on synthetic images: a random left-right flip."""

    def __call__(self, image: Tensor, generator: Generator | None) -> Tensor:
        return self.finish(random_flip(image, generator), generator)


@dataclass(frozen=True)
class PadCropFlipNormalize(Normalize):
    """Training on CIFAR: the standard padding-4 random crop and flip."""

    padding: int = 4

    def __call__(self, image: Tensor, generator: Generator | None) -> Tensor:
        image = random_flip(random_crop_padded(image, self.padding, generator), generator)
        return self.finish(image, generator)


@dataclass(frozen=True)
class ResizedCropFlipNormalize(Normalize):
    """Training on photographs: random-resized crop to `size`, flip; uint8 in."""

    size: tuple[int, int] = (224, 224)
    crop_scale: tuple[float, float] = (0.08, 1.0)

    def __call__(self, image: Tensor, generator: Generator | None) -> Tensor:
        image = random_resized_crop(image, self.size, self.crop_scale, generator)
        return self.finish(random_flip(image, generator) / 255, generator)


@dataclass(frozen=True)
class ResizeCenterCropNormalize(Normalize):
    """Evaluation on photographs: shorter side to `size`/0.875 (256 for 224), centre crop."""

    size: tuple[int, int] = (224, 224)

    def __call__(self, image: Tensor, generator: Generator | None) -> Tensor:
        shorter = round(max(self.size) / 0.875)
        image = center_crop(resize_shorter_side(image, shorter), self.size)
        return normalize(image / 255, self.mean, self.std)


@dataclass
class Source:
    """An opened --data source: its training and validation splits."""

    name: str
    classes: int
    train: Split
    val: Split


def open_source(source: SourceSpec, image_shape: tuple[int, int, int], classes: int,
                seed: int, light_augmentation: bool = False, *,
                crop_scale: tuple[float, float] | None = None, policy=None) -> Source:
    """The splits of a source, producing images of `image_shape` (the spec's input C×H×W).

    `classes` (the spec's) sets the synthetic source's class count; the others have their own.
    `crop_scale` is imagefolder's random-resized-crop area range (default 0.08-1, 0.25-1 when
    `light_augmentation`); `policy` augments every training image (augment.RandAugment).
    """
    channels, height, width = image_shape
    if channels != 3:
        raise SettingError(f"the spec's input has {channels} channels; the data sources give "
                           f"RGB images (3 channels)", code="SK511",
                           hint="use `input 3xHxW` in the spec")
    if source.kind == "synthetic":
        return _open_synthetic(source, (height, width), classes, seed, policy)
    if source.kind in ("cifar10", "cifar100"):
        if (height, width) != (32, 32):
            raise SettingError(f"CIFAR images are 32×32, but the spec's input is "
                               f"{height}×{width}", code="SK511",
                               hint="use `input 3x32x32` in the spec")
        return _open_cifar(source, seed, policy)
    # The paper: less aggressive scale augmentation for the light models (ShuffleNetV2 + SK).
    crop_scale = crop_scale or ((0.25, 1.0) if light_augmentation else (0.08, 1.0))
    return _open_imagefolder(source, (height, width), seed, crop_scale, policy)


# -- synthetic: shapes and textures whose class is the pattern and whose size varies -------------


# Signed fields of the patterns, > 0 inside and about the distance to the edge in object units
# (the object spans -1..1). Intersections are a min, unions a max; textures fill a 1.8-wide box
# and scale with it.
def _box(u: Tensor, v: Tensor, half: float = 0.9) -> Tensor:
    return half - torch.maximum(u.abs(), v.abs())


def _radial(u: Tensor, v: Tensor) -> Tensor:
    return torch.sqrt(u * u + v * v)


STRIPES = math.pi * 2.5  # angular frequency: 2.5 stripe periods across the box
PATTERN_FIELDS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "disc": lambda u, v: 1 - _radial(u, v),
    "square": lambda u, v: _box(u, v, 0.85),
    "ring": lambda u, v: torch.minimum(1 - _radial(u, v), _radial(u, v) - 0.6),
    "plus": lambda u, v: torch.minimum(torch.maximum(0.28 - u.abs(), 0.28 - v.abs()), _box(u, v, 1)),
    "diamond": lambda u, v: (1 - u.abs() - v.abs()) * 0.7,
    "triangle": lambda u, v: torch.minimum(0.8 - v, ((v + 1) * 0.55 - u.abs()) * 0.85),  # apex up
    "hstripes": lambda u, v: torch.minimum(_box(u, v), torch.sin(STRIPES * v) / STRIPES),
    "vstripes": lambda u, v: torch.minimum(_box(u, v), torch.sin(STRIPES * u) / STRIPES),
    "checker": lambda u, v: torch.minimum(
        _box(u, v), torch.sin(2 * math.pi * u) * torch.sin(2 * math.pi * v) / 6),
    "frame": lambda u, v: torch.minimum(_box(u, v), -_box(u, v, 0.55)),  # a hollow square
}


def _pattern_field(patterns: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """The field of each image's pattern: N×H×W, each pattern computed on its own images only."""
    functions = list(PATTERN_FIELDS.values())
    unique = patterns.unique().tolist()
    if len(unique) == 1:  # one image, as a loader asks for: no masking
        return functions[unique[0]](u, v)
    fields = torch.empty_like(u)
    for pattern in unique:
        chosen = patterns == pattern
        fields[chosen] = functions[pattern](u[chosen], v[chosen])
    return fields


class SyntheticShapes:
    """Procedural images: the class is a pattern (shape or texture), its size a controlled variable.

    Image `index` of a split is a deterministic function of (seed, split, index): a pattern drawn
    as a soft-edged mask, of diameter `scale` × the shorter image side with `scale` uniform in
    `scale_range`, at a random position where it fits, tilted by up to ±20°, in a foreground colour
    that stands out from the background by at least 0.35 in value, plus a little pixel noise.
    Textures scale with the object, so a larger scale also means coarser stripes and checks.
    Labels cycle through the classes (index % classes), so every class has the same count. Beyond
    the 10 patterns, class c is pattern c % 10 in foreground hue band c // 10.
    """

    PATTERNS = tuple(PATTERN_FIELDS)
    MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __init__(self, size: tuple[int, int], classes: int, length: int, seed: int = 0,
                 split: int = 0, scale_range: tuple[float, float] = (0.35, 0.85)):
        self.size = size
        self.classes = classes
        self.length = length
        self.seed = seed
        self.split = split
        self.scale_range = scale_range

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        images, labels = self.render(torch.tensor([index]))
        return images[0], int(labels[0])

    def render(self, indices: Tensor, scale: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Images N×3×H×W in 0..1 and labels N; `scale` overrides each object's drawn size."""
        labels = indices % self.classes
        draws = torch.stack([self._draws(int(i)) for i in indices])  # N×9, uniform in [0, 1)
        low, high = self.scale_range
        scales = low + (high - low) * draws[:, 0] if scale is None else torch.as_tensor(scale)
        scales = scales.expand(len(indices)).float()
        masks = self._masks(labels % len(self.PATTERNS), scales, draws[:, 1:4])  # N×H×W
        background, foreground = self._colours(labels // len(self.PATTERNS), draws[:, 4:9])
        background, foreground = background[:, :, None, None], foreground[:, :, None, None]
        images = background + masks[:, None] * (foreground - background)  # N×3×H×W
        noise = torch.stack([self._noise(int(i)) for i in indices])  # N×3×H×W
        return (images + noise).clamp(0, 1), labels

    def _generator(self, index: int, stream: int) -> Generator:
        key = hash((self.seed, self.split, index, stream)) & 0x7FFF_FFFF_FFFF_FFFF
        return torch.Generator().manual_seed(key)

    def _draws(self, index: int) -> Tensor:
        return torch.rand(9, generator=self._generator(index, 0))

    def _noise(self, index: int) -> Tensor:
        return 0.03 * torch.randn(3, *self.size, generator=self._generator(index, 1))

    def _masks(self, patterns: Tensor, scales: Tensor, draws: Tensor) -> Tensor:
        """Soft masks N×H×W of each pattern, in object coordinates u, v (the object spans -1..1)."""
        height, width = self.size
        radius = scales * min(height, width) / 2  # N, in pixels
        # The centre keeps the whole object inside the image (when it fits at all).
        centre_y = radius + draws[:, 0] * (height - 2 * radius).clamp(min=0)
        centre_x = radius + draws[:, 1] * (width - 2 * radius).clamp(min=0)
        angle = (draws[:, 2] - 0.5) * math.radians(40)
        y = torch.arange(height).float().view(1, -1, 1) + 0.5  # 1×H×1, pixel centres
        x = torch.arange(width).float().view(1, 1, -1) + 0.5  # 1×1×W
        dy = (y - centre_y.view(-1, 1, 1)) / radius.view(-1, 1, 1)  # N×H×W
        dx = (x - centre_x.view(-1, 1, 1)) / radius.view(-1, 1, 1)
        cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
        u, v = cos * dx + sin * dy, -sin * dx + cos * dy
        inside = _pattern_field(patterns, u, v)  # N×H×W, > 0 inside, in object units
        # A pixel is 1/radius object units: a one-pixel soft edge against aliasing.
        return (0.5 + inside * radius.view(-1, 1, 1)).clamp(0, 1)

    def _colours(self, hue_bands: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]:
        """Background and foreground RGB (N×3) with a value contrast of at least 0.35."""
        bands = max(1, math.ceil(self.classes / len(self.PATTERNS)))
        background = _hsv_to_rgb(draws[:, 0], 0.5 * draws[:, 1], 0.15 + 0.7 * draws[:, 2])
        value = 0.15 + 0.7 * draws[:, 2]
        brighter = value < 0.5
        contrast = 0.35 + 0.3 * draws[:, 3]
        fg_value = torch.where(brighter, value + contrast, value - contrast).clamp(0.05, 1)
        hue = (hue_bands + draws[:, 4]) / bands if bands > 1 else draws[:, 4]
        foreground = _hsv_to_rgb(hue, 0.4 + 0.6 * draws[:, 1], fg_value)
        return background, foreground


def _hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """N hues, saturations and values in 0..1 -> N×3 RGB."""
    offsets = torch.tensor([5.0, 3.0, 1.0])  # R, G, B
    k = (offsets + hue[:, None] * 6) % 6
    ramp = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return value[:, None] - value[:, None] * saturation[:, None] * ramp


def _open_synthetic(source: SourceSpec, size: tuple[int, int], classes: int, seed: int,
                    policy=None) -> Source:
    mean, std = SyntheticShapes.MEAN, SyntheticShapes.STD
    train, val = (SyntheticShapes(size, classes, length, seed, split, source.scale_range)
                  for split, length in enumerate((source.train_size, source.val_size)))
    return Source("synthetic", classes,
                  Split(train, FlipNormalize(mean, std, policy=policy), seed),
                  Split(val, Normalize(mean, std), seed))


# -- CIFAR: the python pickled batches -----------------------------------------------------------

CIFAR_FILES = {
    "cifar10": (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"],
                ["test_batch"], b"labels", 10, "cifar-10-batches-py"),
    "cifar100": (["train"], ["test"], b"fine_labels", 100, "cifar-100-python"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts of bytes, lists and numpy arrays only: a batch file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch "
                                         f"does not")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: bytes, classes: int) -> tuple[Tensor, Tensor]:
    """One batch file -> uint8 images N×3×32×32 and int64 labels N, or a DataError naming it."""
    try:
        data = files.read_bytes(path, files.MAX_DATA_FILE_BYTES)
    except files.FileProblem as problem:
        if problem.kind == "missing":
            raise DataError(f"no CIFAR batch file '{path}'",
                            hint="the directory should hold the python version of CIFAR") from None
        raise DataError(f"cannot read the CIFAR batch '{path}': {problem}") from None
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except ModuleNotFoundError:
        raise DataError(f"reading '{path}' needs numpy: pip install numpy") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, OSError) as error:
        raise DataError(f"'{path}' is not a CIFAR python batch: {error}") from None
    if not isinstance(batch, dict):
        raise DataError(f"'{path}' is not a CIFAR python batch: it holds a "
                        f"{type(batch).__name__}, not a dict")
    data, labels = _get(batch, b"data"), _get(batch, label_key)
    if data is None or labels is None:
        raise DataError(f"'{path}' is not a CIFAR python batch: no "
                        f"{'data' if data is None else label_key.decode()} entry")
    return _cifar_tensors(path, data, labels, classes)


def _get(batch: dict, key: bytes):
    return batch.get(key, batch.get(key.decode()))


def _cifar_tensors(path: Path, data, labels, classes: int) -> tuple[Tensor, Tensor]:
    shape, dtype = getattr(data, "shape", None), str(getattr(data, "dtype", type(data).__name__))
    if shape is None or len(shape) != 2 or shape[1] != 3072 or dtype != "uint8":
        raise DataError(f"'{path}': the data should be a uint8 array of N×3072 (3×32×32 images), "
                        f"not {dtype} of shape {shape}")
    images = torch.tensor(data).view(-1, 3, 32, 32)  # rows hold R, G, B planes of 32×32
    try:
        label_tensor = torch.tensor(list(labels), dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"'{path}': the labels should be a list of integers") from None
    if len(label_tensor) != len(images):
        raise DataError(f"'{path}': {len(images)} images but {len(label_tensor)} labels")
    if len(label_tensor) and not 0 <= int(label_tensor.min()) <= int(label_tensor.max()) < classes:
        raise DataError(f"'{path}': labels must lie in 0..{classes - 1}")
    return images, label_tensor


def _open_cifar(source: SourceSpec, seed: int, policy=None) -> Source:
    train_files, test_files, label_key, classes, folder = CIFAR_FILES[source.kind]
    directory = source.path / folder if (source.path / folder).is_dir() else source.path

    def read(names: list[str]) -> TensorImages:
        parts = [read_cifar_batch(directory / name, label_key, classes) for name in names]
        return TensorImages(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    return Source(source.kind, classes,
                  Split(read(train_files), PadCropFlipNormalize(CIFAR_MEAN, CIFAR_STD,
                                                                policy=policy), seed),
                  Split(read(test_files), Normalize(CIFAR_MEAN, CIFAR_STD), seed))


@dataclass(frozen=True)
class TensorImages:
    """Images held in memory: uint8 N×C×H×W and int64 labels N."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])


# -- imagefolder: DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg, decoded by Pillow ----------


def _open_imagefolder(source: SourceSpec, size: tuple[int, int], seed: int,
                      crop_scale: tuple[float, float], policy=None) -> Source:
    _require_pillow()
    classes = sorted(p.name for p in (source.path / "train").glob("*") if p.is_dir())
    if not classes:
        raise DataError(f"'{source.path / 'train'}' has no class folders",
                        hint="lay out images as DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg")
    train = ImageFiles(_list_images(source.path / "train", classes))
    val = ImageFiles(_list_images(source.path / "val", classes))
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    transform = ResizedCropFlipNormalize(mean, std, size, crop_scale, policy=policy)
    return Source("imagefolder", len(classes), Split(train, transform, seed),
                  Split(val, ResizeCenterCropNormalize(mean, std, size), seed))


def _require_pillow() -> None:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("imagefolder data needs Pillow to decode images", code="SK513",
                        hint="pip install 'skdsl[images]'  (or: pip install pillow)") from None


def _list_images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    if not root.is_dir():
        raise DataError(f"no directory '{root}'",
                        hint="lay out images as DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg")
    unknown = sorted(p.name for p in root.glob("*") if p.is_dir() and p.name not in classes)
    if unknown:
        raise DataError(f"'{root}' has classes that train/ lacks: {', '.join(unknown[:5])}")
    items = [(path, label) for label, name in enumerate(classes)
             for path in sorted((root / name).glob("*")) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise DataError(f"'{root}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return items


@dataclass(frozen=True)
class ImageFiles:
    """Image files decoded on demand: (path, label) pairs."""

    items: list[tuple[Path, int]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.items[index]
        return decode_image(path), label


def decode_image(path: Path) -> Tensor:
    """An image file -> uint8 RGB 3×H×W, or a DataError naming the file."""
    try:  # read whole first: a FIFO or device named like an image is refused, not waited on
        data = files.read_bytes(path, files.MAX_IMAGE_BYTES)
    except files.FileProblem as problem:
        raise DataError(f"cannot read image '{path}': {problem}") from None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            rgb = opened.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot decode image '{path}': {error}") from None
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return pixels.view(rgb.height, rgb.width, 3).permute(2, 0, 1)  # 3×H×W


# -- order and loading ---------------------------------------------------------------------------


class EpochSampler(Sampler):
    """This process's share of an epoch, as (epoch, index) keys for a training `Split`.

    The order is torch's DistributedSampler's: one permutation seeded by seed + epoch, process r of
    W taking every W-th index from r. Whatever W, global batch k holds the same images, which is
    what lets a 2-process run match a 1-process run of the same global batch. `start` skips the
    images already trained on when a run resumes in the middle of an epoch.
    """

    def __init__(self, split: Split, rank: int, world_size: int, seed: int):
        self.shard = DistributedSampler(split, num_replicas=world_size, rank=rank, shuffle=True,
                                        seed=seed, drop_last=True)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.shard.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __iter__(self):
        indices = itertools.islice(iter(self.shard), self.start, None)
        return ((self.epoch, index) for index in indices)

    def __len__(self) -> int:
        return len(self.shard) - self.start


def make_loader(split: Split, batch_size: int, sampler: Sampler, workers: int, pin_memory: bool,
                drop_last: bool) -> DataLoader:
    """A loader of this process's batches; workers ignore Ctrl-C, which the main process handles.

    The loader gets a generator of its own: without one, every new epoch's iterator draws its
    workers' base seed from the global generator, shifting the dropout masks of a run resumed in
    the middle of an epoch against one that never stopped.
    """
    return DataLoader(split, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=drop_last, persistent_workers=workers > 0,
                      worker_init_fn=_ignore_interrupts if workers > 0 else None,
                      generator=torch.Generator().manual_seed(0))


def _ignore_interrupts(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process stops at a step boundary and then
    # shuts the workers down itself, so a worker dying of KeyboardInterrupt would only add noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def shard_indices(length: int, rank: int, world_size: int) -> list[int]:
    """Evaluation: process r takes images r, r + W, ...; no padding, so every image counts once."""
    return list(range(rank, length, world_size))


def batches(loader: DataLoader):
    """The loader's batches; a DataError from a worker is re-raised with its own message."""
    try:
        yield from loader
    except DataError as error:
        raise unwrap_worker_error(error) from None


def unwrap_worker_error(error: Exception) -> Exception:
    """A DataError raised in a loader worker comes back with a traceback in its message: keep the
    last line, the DataError's own message, so the user sees the file and no traceback."""
    if isinstance(error, DataError) and "Traceback" in error.message:
        last = error.message.strip().splitlines()[-1]
        return DataError(last.partition(f"{DataError.__name__}: ")[2] or last)
    return error


__all__ = [
    "DataError", "SourceSpec", "parse_source", "Source", "Split", "open_source",
    "SyntheticShapes", "read_cifar_batch", "decode_image", "EpochSampler", "make_loader", "batches",
    "shard_indices", "random_flip", "random_crop_padded", "random_resized_crop", "resize",
    "resize_shorter_side", "center_crop", "normalize", "sample_generator",
]
