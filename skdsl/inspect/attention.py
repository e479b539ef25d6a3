"""The paper's scale experiment (section 4.4): do SK units attend more to the larger kernel when
the object grows?

Each image is shown at every scale s (1.0×, 1.5×, 2.0× by default), by one of two protocols:

    zoom     the paper's: crop the central 1/s of the image and resize it back (any data source)
    render   synthetic data only: draw the same object s× larger (SyntheticShapes.render), from a
             base scale b = (the source's largest object scale) / max(s), so every drawn object
             stays within the sizes the network was trained on

For every SK unit, image and scale the recorder gives the softmax weights N×M×C; the *mean
attention difference* of an image is the weight of the branch with the largest receptive field
minus that of the smallest, averaged over channels. Over the images it reports, per unit and
scale: the mean difference with its standard deviation (Fig. 3c), the paired change from the
first scale with its standard error, per class (Fig. 4), and the larger kernel's attention per
channel (Fig. 3, left); and the network's top-1 at each scale, since a zoomed image the network
cannot classify says little about its receptive fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.errors import declare_settings
from ..core.resources import guard_memory, out_of_memory_is_an_error
from ..train import data as D
from ..train.runner import open_data
from .record import AttentionRecorder
from .units import InspectError, SKUnit, find_units, sk_units

declare_settings("data", "batch_size", "memory_budget")

PROTOCOLS = ("zoom", "render")
DEFAULT_SCALES = (1.0, 1.5, 2.0)
LARGEST_SCALE = 8.0  # a zoom beyond keeps under 1/8 of the side: a few pixels of a small image


class ScaleRequestError(InspectError, ValueError):
    """Scales, an image count or a batch size the experiment cannot use."""

    code = "SK642"


class ProtocolError(InspectError, ValueError):
    """A protocol this data source cannot follow."""

    code = "SK643"


ImagesAt = Callable[[Tensor, float], tuple[Tensor, Tensor]]  # (indices, scale) -> images, labels


def check_scales(scales) -> tuple[float, ...]:
    """The scales as floats, each from 1 to 8, distinct; the first is the reference."""
    scales = tuple(float(s) for s in scales)
    if not scales or any(not 1 <= s <= LARGEST_SCALE for s in scales) or \
            len(set(scales)) != len(scales):
        shown = ", ".join(f"{s:g}" for s in scales) or "none"
        raise ScaleRequestError(
            f"scales {shown}: the experiment enlarges objects, so it takes distinct scales "
            f"from 1 to {LARGEST_SCALE:g}", hint="the paper's: 1.0,1.5,2.0 (the first is the "
                                                 "reference the changes are measured from)")
    return scales


def zoom(images: Tensor, scale: float) -> Tensor:
    """Enlarge the centre s×: crop the central 1/s of each side and resize back (N×C×H×W)."""
    height, width = images.shape[-2:]
    crop = (max(1, round(height / scale)), max(1, round(width / scale)))
    if crop == (height, width):
        return images
    return F.interpolate(D.center_crop(images, crop), size=(height, width), mode="bilinear",
                         align_corners=False)  # N×C×H×W


def zoomed(split: D.Split) -> ImagesAt:
    """The zoom protocol on a validation split: its images as evaluation sees them, zoomed."""
    def images_at(indices: Tensor, scale: float) -> tuple[Tensor, Tensor]:
        pairs = [split[int(i)] for i in indices]
        images = torch.stack([image for image, _ in pairs])  # N×C×H×W, normalised
        # Normalising is an affine map per channel, and bilinear weights sum to 1: zooming
        # the normalised image equals normalising the zoomed one.
        return zoom(images, scale), torch.tensor([label for _, label in pairs])
    return images_at


def rendered(split: D.Split, scales: tuple[float, ...]) -> tuple[ImagesAt, float]:
    """The render protocol: each synthetic object drawn at base × s; and the base scale."""
    shapes, transform = split.images, split.transform
    if not isinstance(shapes, D.SyntheticShapes):
        raise ProtocolError("the render protocol draws objects larger, which only the synthetic "
                            "data source can do", hint="use the synthetic source, or the zoom "
                                                       "protocol (which any source can follow)")
    base = shapes.scale_range[1] / max(scales)

    def images_at(indices: Tensor, scale: float) -> tuple[Tensor, Tensor]:
        images, labels = shapes.render(indices, scale=base * scale)
        return D.normalize(images, transform.mean, transform.std), labels  # N×3×H×W
    return images_at, base


def evenly_spaced(length: int, limit: int | None) -> Tensor:
    """`limit` indices spread over a split (sorted by class in an image folder), or all."""
    if length < 1:
        raise ScaleRequestError("the data source's validation split holds no images")
    if limit is None or limit >= length:
        return torch.arange(length)
    if limit < 1:
        raise ScaleRequestError(f"a limit of {limit} images: take at least one")
    return torch.linspace(0, length - 1, limit).round().long().unique()


@dataclass
class AttentionStudy:
    """What the experiment measured: per unit, an S×N difference and S×C larger-kernel weights."""

    units: tuple[SKUnit, ...]
    scales: tuple[float, ...]
    classes: int
    labels: Tensor                                   # N
    correct: Tensor                                  # S×N bool: top-1 right
    differences: dict[str, Tensor] = field(default_factory=dict)     # name -> S×N
    larger_attention: dict[str, Tensor] = field(default_factory=dict)  # name -> S×C, mean

    def accuracy(self) -> list[float]:
        return self.correct.double().mean(dim=1).tolist()

    def summary(self, unit: SKUnit) -> dict:
        """One unit's figures: the mean difference ± std per scale; the paired change from the
        first scale ± its standard error and how often it is positive, over all images and over
        those recognised at every scale; the mean difference per class (None for a class
        without images); the larger kernel's mean weight per channel."""
        difference = self.differences[unit.name].double()  # S×N
        change = difference - difference[0]  # S×N: paired, image by image
        recognised = self.correct.all(dim=0)  # N: classified right at every scale
        per_class = [difference[:, self.labels == c].mean(dim=1).tolist()
                     if bool((self.labels == c).any()) else None for c in range(self.classes)]
        return {**unit.to_json(),
                "difference": {"mean": difference.mean(dim=1).tolist(),
                               "std": _std(difference)},
                "change": _paired(change),
                "change_recognised": {**_paired(change[:, recognised]),
                                      "images": int(recognised.sum())},
                "per_class": per_class,
                "larger_attention": self.larger_attention[unit.name].tolist()}


def _std(values: Tensor) -> list[float]:
    """The standard deviation over images (dim 1) per scale; 0 for fewer than two images."""
    return (values.std(dim=1) if values.shape[1] > 1 else torch.zeros(len(values))).tolist()


def _paired(change: Tensor) -> dict:
    """The mean of S×N paired changes per scale, its standard error, and how often it is > 0
    (None for no images: JSON has no NaN)."""
    images = change.shape[1]
    if images == 0:
        return {key: [None] * len(change) for key in ("mean", "stderr", "positive")}
    return {"mean": change.mean(dim=1).tolist(),
            "stderr": [s / math.sqrt(images) for s in _std(change)],
            "positive": (change > 0).double().mean(dim=1).tolist()}


@torch.no_grad()
def scale_experiment(model: nn.Module, units: tuple[SKUnit, ...], images_at: ImagesAt,
                     indices: Tensor, scales: tuple[float, ...], classes: int,
                     batch_size: int = 64) -> AttentionStudy:
    """Show every image at every scale to the model (in eval mode) and record its SK units."""
    if batch_size < 1:
        raise ScaleRequestError(f"a batch of {batch_size} images: take at least one")
    model.eval()
    device = next(model.parameters()).device
    differences = {unit.name: [[] for _ in scales] for unit in units}
    larger = {unit.name: torch.zeros(len(scales), unit.channels, dtype=torch.float64)
              for unit in units}
    labels, correct = [], [[] for _ in scales]
    with AttentionRecorder(model, units) as recorder:
        for start in range(0, len(indices), batch_size):
            batch = indices[start:start + batch_size]
            for s, scale in enumerate(scales):
                images, truth = images_at(batch, scale)
                logits = model(images.to(device))
                correct[s].append(logits.argmax(dim=1).cpu() == truth)
                for name, weights in recorder.take().items():  # N×M×C, smallest field first
                    differences[name][s].append((weights[:, -1] - weights[:, 0]).mean(dim=1))
                    larger[name][s] += weights[:, -1].double().sum(dim=0)
            labels.append(truth)
    return AttentionStudy(
        units, scales, classes, torch.cat(labels), torch.stack([torch.cat(c) for c in correct]),
        {name: torch.stack([torch.cat(per_scale) for per_scale in d])
         for name, d in differences.items()},
        {name: total / len(indices) for name, total in larger.items()})


# -- the experiment on a trained checkpoint -------------------------------------------------------


class DataSourceNeededError(InspectError):
    """Weights that do not say what data they were trained on, and no data source given."""

    code = "SK644"


@dataclass(frozen=True)
class AttentionRequest:
    """`skdsl inspect attention`'s settings; None data: the checkpoint's own source and seed."""

    spec: str
    checkpoint: str
    data: str | None = None
    overrides: dict | None = None
    scales: tuple[float, ...] = DEFAULT_SCALES
    units: tuple[str, ...] | None = None
    protocol: str = "zoom"
    limit: int | None = None
    batch_size: int = 64
    allow_imports_outside: bool = False  # `use` may read files outside the spec's folder
    memory_budget: int | None = None  # bytes the forward passes may use; None: what is free


def inspect_attention(request: AttentionRequest) -> dict:
    """Run the scale experiment on a checkpoint (or converted weights): every figure, as JSON.
    Batches that would not fit the memory budget are refused before the first (SK621), and an
    allocation that fails anyway is SK611."""
    if request.protocol not in PROTOCOLS:
        raise ProtocolError(f"no protocol '{request.protocol}'",
                            hint=f"use one of: {', '.join(PROTOCOLS)}")
    scales = check_scales(request.scales)
    model, spec, trained = load_trained(request)
    units = find_units(sk_units(model.graph), list(request.units) if request.units else None)
    data = request.data or trained.get("data")
    if data is None:
        raise DataSourceNeededError(
            f"'{request.checkpoint}' holds weights alone, which do not say what data they "
            f"were trained on", hint="name their data source ({data}), such as imagefolder:DIR "
                                     "for converted ImageNet weights")
    source = open_data(data, spec, trained.get("seed") or 0)
    if request.protocol == "zoom":
        images_at, base = zoomed(source.val), None
    else:
        images_at, base = rendered(source.val, scales)
    indices = evenly_spaced(len(source.val), request.limit)
    batch = min(max(1, request.batch_size), len(indices))  # below 1: scale_experiment's SK642
    guard_memory(spec, batch, budget=request.memory_budget, task="inference",
                 doing="inspecting", device=next(model.parameters()).device,
                 precision_setting=False)
    with out_of_memory_is_an_error(f"inspecting {spec.name} at {{batch_size}} {batch}",
                                   "{batch_size}"):
        study = scale_experiment(model, units, images_at, indices, scales, source.classes,
                                 request.batch_size)
    return {"spec": spec.name, "checkpoint": str(request.checkpoint), "data": data,
            "protocol": request.protocol, "scales": list(scales), "base_scale": base,
            "images": len(indices), "classes": source.classes, "accuracy": study.accuracy(),
            "units": [study.summary(unit) for unit in units]}


def load_trained(request: AttentionRequest) -> tuple[nn.Module, object, dict]:
    """The compiled spec with the checkpoint's weights, and the training settings (empty for
    converted weights or a bare state dict), read weights-only as `skdsl eval` reads them."""
    from ..nn import state_io
    from ..nn.compiler import compile as compile_network
    from ..train.specs import load_spec

    state, saved = state_io.read_weights(request.checkpoint, state_io.CHECKPOINTS)
    trained = dict(saved["config"]) if saved else {}
    spec = load_spec(request.spec, request.overrides, trained.get("classes"),
                     request.allow_imports_outside)
    if saved is not None:
        state_io.check_spec(saved, request.checkpoint, state_io.spec_fingerprint(spec)[1])
    model = compile_network(spec)
    state_io.load_weights(model, state, request.checkpoint, spec.name)
    if torch.cuda.is_available():
        model = model.cuda()
    return model, spec, trained


__all__ = ["PROTOCOLS", "DEFAULT_SCALES", "ScaleRequestError", "ProtocolError",
           "DataSourceNeededError", "check_scales", "zoom", "zoomed", "rendered", "evenly_spaced",
           "AttentionStudy", "scale_experiment", "AttentionRequest", "inspect_attention",
           "load_trained"]
