"""Latency beside multiply-adds: a network's time on one device, predicted from the lowered graph
and a calibration of that device, without building the network (no torch here).

A calibration (made by `skdsl latency calibrate`, skdsl/nn/calibration.py) holds, for each kind
of op the compiler emits (its *class*: a 3×3 grouped conv of stride 2, a ReLU, a Select ...),
the times it measured on that device for a spread of real shapes, and a straight line fitted to
them over the op's work: time = a + b · multiply-adds + c · elements moved (nn-Meter's
kernel-level view, Zhang et al. 2021, with FBNet's lookup table for shapes measured as such).
A node is predicted, in this order, by

    lookup     its exact configuration was measured: that time
    fit        its class was measured: the class's line at its work
    roofline   neither: max(multiply-adds / the device's peak, bytes / its bandwidth), both
               measured, plus one op's dispatch time; marked as a fallback

and a network adds to each node the time to stream its weights from memory (alone, an op's
weights sat in cache; `stream_bandwidth`, measured on a buffer larger than any cache), scales
it by `in_network` (ops run slower among others than alone) and adds `per_node` (the compiled
network's own dispatch of each node).
Every number is for the device, thread count, batch, dtype and torch version the calibration
names; `check_device` refuses another (SK572) unless told to go on.

Errors: SK570 a calibration file that cannot be read or is not one, SK571 a calibration of
another format version, SK572 a calibration made for another device, thread count, batch,
dtype or torch version.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..base import files
from ..base.errors import SkdslError, declare_settings
from ..base.machine import cpu_name, torch_version
from .graph import as_table, lower_table
from . import spec as S

__all__ = ["LatencyError", "Device", "ClassModel", "Calibration", "NodeTime", "Prediction",
           "FORMAT_VERSION", "node_class", "node_work", "batch_work", "config_key",
           "load_calibration",
           "predict", "host_device", "check_device"]

declare_settings("calibration")

FORMAT_VERSION = 2  # 2: a class's line has a weights term
MAX_CALIBRATION_BYTES = 16_000_000  # 50 classes × 64 shapes: a few hundred kB
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


class LatencyError(SkdslError):
    """A calibration that cannot be used."""

    code = "SK570"


@dataclass(frozen=True)
class Device:
    """What a calibration's times hold for: the machine and how it was run."""

    kind: str      # "cpu" or "cuda"
    name: str      # the CPU model or the GPU's name
    threads: int   # torch's intra-op threads (CPU)
    batch: int
    dtype: str     # "fp32", "bf16", "fp16"
    torch: str     # torch's version

    def text(self) -> str:
        return (f"{self.kind} '{self.name}', {self.threads} thread{'s' * (self.threads != 1)}, "
                f"batch {self.batch}, {self.dtype}, torch {self.torch}")


@dataclass(frozen=True)
class ClassModel:
    """One op class's line over its work, time = a + b · mult_adds + c · elements + d · weights
    (seconds; the first two for the whole batch, weights once a pass), and the configurations
    measured for it (config key -> seconds)."""

    coefficients: tuple[float, float, float, float]
    measured: dict[str, float] = field(default_factory=dict)
    fit_error: float = 0.0  # the median relative error of the line on its own samples

    def time(self, work: tuple[float, float, float]) -> float:
        constant, *rates = self.coefficients
        return constant + sum(rate * amount for rate, amount in zip(rates, work))


@dataclass(frozen=True)
class Calibration:
    device: Device
    classes: dict[str, ClassModel]
    peak_mult_adds: float   # per second, from the calibration's largest convolutions
    bandwidth: float        # bytes per second, from its largest elementwise ops
    dispatch: float         # seconds: the cheapest op measured, the floor of any op's time
    per_node: float         # seconds the compiled network adds per node it runs
    in_network: float = 1.0  # an op's time in a network over its time alone (colder caches)
    stream_bandwidth: float = 0.0  # bytes per second from memory: weights are read cold
    created: str = ""
    version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        data = asdict(self)
        data["classes"] = {name: {"coefficients": list(model.coefficients),
                                  "measured": model.measured, "fit_error": model.fit_error}
                           for name, model in self.classes.items()}
        return data

    def save(self, path: str | Path) -> None:
        """Written atomically, a regular file only (base/files.py); OSError (a FileProblem
        among them) when it cannot be."""
        files.write_text(path, json.dumps(self.to_json(), indent=1) + "\n")


def load_calibration(path: str | Path) -> Calibration:
    """A calibration file, checked: SK570 when it cannot be read or is not one, SK571 when it
    is of another format version."""
    path = Path(path)
    try:
        data = json.loads(files.read_text(path, MAX_CALIBRATION_BYTES))
    except files.FileProblem as problem:
        if problem.kind == "missing":
            raise LatencyError(f"no calibration file '{path}'", code="SK570",
                               hint="make one with `skdsl latency calibrate --out FILE`") from None
        raise LatencyError(f"cannot read the calibration '{path}': {problem.reason}",
                           code="SK570") from None
    except ValueError as error:
        raise LatencyError(f"'{path}' is not a calibration file: {error}", code="SK570",
                           hint="make one with `skdsl latency calibrate --out FILE`") from None
    if not isinstance(data, dict) or "version" not in data:
        raise LatencyError(f"'{path}' is not a calibration file: no format version",
                           code="SK570", hint="make one with `skdsl latency calibrate`")
    if data["version"] != FORMAT_VERSION:
        raise LatencyError(f"'{path}' is a calibration of format {data['version']!r}; this "
                           f"skdsl reads format {FORMAT_VERSION}", code="SK571",
                           hint="calibrate again with this skdsl")
    try:
        classes = {name: ClassModel(tuple(float(v) for v in model["coefficients"]),
                                    {k: float(v) for k, v in model["measured"].items()},
                                    float(model["fit_error"]))
                   for name, model in data["classes"].items()}
        return Calibration(Device(**data["device"]), classes, float(data["peak_mult_adds"]),
                           float(data["bandwidth"]), float(data["dispatch"]),
                           float(data["per_node"]), float(data["in_network"]),
                           float(data["stream_bandwidth"]), str(data.get("created", "")))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise LatencyError(f"'{path}' is a damaged calibration file: {type(error).__name__} "
                           f"{error}", code="SK570", hint="calibrate again") from None


def host_device(calibration: Calibration) -> Device:
    """This machine, run as the calibration says (threads, batch, dtype): what `predict`
    compares the calibration with, without torch (a GPU's name needs torch: the calibration's
    is taken as it is)."""
    device = calibration.device
    name = cpu_name() if device.kind == "cpu" else device.name
    return Device(device.kind, name, device.threads, device.batch, device.dtype, torch_version())


def check_device(calibration: Calibration, device: Device, allow_other: bool = False) -> list[str]:
    """The ways `device` differs from the calibration's; SK572 when any does and
    `allow_other` is false (then they are only returned, to be shown as a warning)."""
    differ = [f"{name} {getattr(calibration.device, name)!r} (here {getattr(device, name)!r})"
              for name in ("kind", "name", "threads", "batch", "dtype", "torch")
              if getattr(calibration.device, name) != getattr(device, name)]
    if differ and not allow_other:
        raise LatencyError(f"the calibration was made for another setting: {'; '.join(differ)}",
                           code="SK572", hint="calibrate this device with `skdsl latency "
                           "calibrate`, or pass --any-device to use it anyway (the times are "
                           "then another machine's)")
    return differ


# -- what a node is, for the calibration -------------------------------------------------------


def node_class(node) -> str:
    """The calibration class of a graph node: its op and what changes how its kernel runs."""
    attrs, op = node.attrs, node.op
    if op == "conv2d":
        kernel = f"{attrs.kernel[0]}x{attrs.kernel[1]}"
        dilated = f" D{attrs.dilation}" if attrs.dilation > 1 else ""
        return f"conv2d {kernel}/{attrs.stride}{dilated} {_grouping(attrs)}"
    if op in ("max_pool", "avg_pool"):
        return f"{op} {attrs.kernel[0]}x{attrs.kernel[1]}/{attrs.stride}"
    if op in ("act", "global_pool", "channel_pool", "upsample"):
        return f"{op} {getattr(attrs, 'function', None) or getattr(attrs, 'mode', '')}"
    return op


def _grouping(conv) -> str:
    """dense, depthwise, or grouped by the channels each group reads (their kernels differ)."""
    if conv.groups == 1:
        return "dense"
    if conv.groups == conv.in_channels:
        return "depthwise"
    width = conv.in_channels // conv.groups
    return "grouped " + ("≤4" if width <= 4 else "≤16" if width <= 16 else ">16")


def node_work(node) -> tuple[int, int, int]:
    """(multiply-adds, elements read and written) of one image through the node, and its
    weights: a convolution of few pixels and many weights (SKNet's conv5, ShuffleNet's last
    1×1) runs further from the peak than its multiply-adds say."""
    params, mult_adds, _ = node.attrs.cost(node)
    elements = sum(map(math.prod, node.in_shapes)) + sum(map(math.prod, node.out_shapes))
    return mult_adds, elements, params


def batch_work(node, batch: int) -> tuple[int, int, int]:
    """`node_work` for a pass of `batch` images: the weights are read once."""
    mult_adds, elements, weights = node_work(node)
    return batch * mult_adds, batch * elements, weights


def config_key(node) -> str:
    """The node's exact configuration: its op record and shapes (equal keys, equal kernels)."""
    return f"{node.attrs!r} {node.in_shapes} -> {node.out_shapes}"


# -- prediction -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeTime:
    seconds: float
    how: str  # "lookup", "fit" or "roofline" (a fallback)


@dataclass(frozen=True)
class Prediction:
    """A network's predicted time on the calibration's device, by node, layer, block and stage."""

    network: str
    device: Device
    nodes: dict[str, NodeTime]
    layers: dict[str, float]
    blocks: dict[str, float]
    stages: dict[str, float]
    total: float  # seconds, per_node included
    fallbacks: tuple[str, ...]  # op classes the calibration lacks, predicted by the roofline

    @property
    def milliseconds(self) -> float:
        return self.total * 1e3


def predict(spec_or_graph, calibration: Calibration, input_shape=None) -> Prediction:
    """The time of one forward pass of `calibration.device.batch` images (eval mode, no
    gradients), node by node; deterministic for a given calibration and graph."""
    if isinstance(spec_or_graph, S.Network):
        graph = lower_table(spec_or_graph, input_shape)
    else:
        graph = as_table(spec_or_graph)
    times: dict[str, NodeTime] = {}
    fallbacks: dict[str, None] = {}
    layers: dict[str, float] = {}
    blocks: dict[str, float] = {}
    stages: dict[str, float] = {}
    for name, node in graph.nodes.items():
        if node.op == "input":
            continue
        own = _node_time(node, calibration)
        if own.how == "roofline":
            fallbacks[node_class(node)] = None
        seconds = (own.seconds + _cold_weights(node, calibration)) * calibration.in_network \
            + calibration.per_node
        times[name] = NodeTime(seconds, own.how)
        for table, key in ((layers, node.layer), (blocks, node.block), (stages, node.stage)):
            if key:
                table[key] = table.get(key, 0.0) + seconds
    return Prediction(graph.graph["network"], calibration.device, times, layers, blocks,
                      stages, sum(t.seconds for t in times.values()), tuple(fallbacks))


def _cold_weights(node, calibration: Calibration) -> float:
    """Alone, an op is timed with its weights in cache; in a network each forward pass reads
    them from memory once (ResNeXt-50's 100 MB of fp32 weights: ~10 ms at 10 GB/s)."""
    if not calibration.stream_bandwidth:
        return 0.0
    weights = node.attrs.cost(node)[0] * BYTES.get(calibration.device.dtype, 4)
    return weights / calibration.stream_bandwidth


def _node_time(node, calibration: Calibration) -> NodeTime:
    batch = calibration.device.batch
    model = calibration.classes.get(node_class(node))
    if model is not None:
        measured = model.measured.get(config_key(node))
        if measured is not None:
            return NodeTime(measured, "lookup")
        return NodeTime(max(model.time(batch_work(node, batch)), calibration.dispatch), "fit")
    mult_adds, elements, _ = node_work(node)
    bytes_moved = batch * elements * BYTES.get(calibration.device.dtype, 4)
    return NodeTime(calibration.dispatch + max(batch * mult_adds / calibration.peak_mult_adds,
                                               bytes_moved / calibration.bandwidth), "roofline")
