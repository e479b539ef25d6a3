"""Measuring a device for the latency model (skdsl/core/latency.py): `skdsl latency calibrate`
times the ops the compiler emits, and `skdsl latency check` times whole networks.

The shapes are real ones: every distinct node configuration of the shipped specs (the model
zoo, ImageNet and CIFAR), grouped by op class. Each class times up to `per_class` of them,
spread evenly over their work (from the smallest to the largest), so that its fitted line
spans the shapes networks have; what it timed is kept as a lookup table too. A timing is the
median of repeated calls after warm-up, of the op's own module (the one the compiler builds),
in eval mode, without gradients, on random inputs of the calibration's batch and dtype. The
compiled network's own cost per node (its Python dispatch) and the slowdown of ops among others
come from a small reference network (sknet_tiny, not one of the ImageNet networks the accuracy
is measured on) timed at two input sizes.
"""

from __future__ import annotations

import datetime
import statistics
import time
from typing import Callable

import torch

from ..core import latency as T
from ..core.graph import lower_table
from ..core.resources import guard_memory
from ..lang import zoo
from ..base.machine import cpu_name
from .compiler import compile as compile_network

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
REFERENCE = "sknet_tiny"  # the network that measures the per-node dispatch
REFERENCE_SIZES = (32, 64, 128, 224)


def current_device(kind: str = "cpu", threads: int = 1, batch: int = 1,
                   dtype: str = "fp32") -> T.Device:
    """This machine as a calibration names it (the thread count as torch will run)."""
    name = torch.cuda.get_device_name() if kind == "cuda" else cpu_name()
    return T.Device(kind, name, threads, batch, dtype, torch.__version__)


def shipped_configurations() -> dict[str, dict[str, object]]:
    """op class -> {config key -> a node of that configuration}, over every shipped spec."""
    classes: dict[str, dict[str, object]] = {}
    for name in zoo.list_models():
        graph = lower_table(zoo.load(name))
        for node in graph.nodes.values():
            if node.op != "input":
                classes.setdefault(T.node_class(node), {}).setdefault(T.config_key(node), node)
    return classes


def spread(nodes: list, count: int) -> list:
    """Up to `count` of `nodes`, evenly spaced by work from the least to the most (one: the
    middle one)."""
    ordered = sorted(nodes, key=lambda node: (T.node_work(node), T.config_key(node)))
    if len(ordered) <= count:
        return ordered
    if count == 1:
        return [ordered[len(ordered) // 2]]
    step = (len(ordered) - 1) / (count - 1)
    return [ordered[round(index * step)] for index in range(count)]


def time_call(call: Callable[[], object], device: T.Device, minimum: float = 0.02,
              repeats: int = 20) -> float:
    """The median seconds of `call` after two warm-up calls: at least 3 calls and `minimum`
    seconds in all, at most `repeats` calls."""
    for _ in range(2):
        call()
    samples: list[float] = []
    while len(samples) < 3 or (sum(samples) < minimum and len(samples) < repeats):
        _synchronise(device)
        start = time.perf_counter()
        call()
        _synchronise(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _synchronise(device: T.Device) -> None:
    if device.kind == "cuda":
        torch.cuda.synchronize()


def time_node(node, device: T.Device) -> float:
    """Seconds of one call of the node's own module on random inputs of its shapes."""
    target, dtype = _where(device)
    module = node.attrs.module().to(target, dtype).eval()
    generator = torch.Generator(device="cpu").manual_seed(0)
    inputs = [torch.randn(device.batch, *shape, generator=generator).to(target, dtype)
              for shape in node.in_shapes]
    with torch.no_grad():
        return time_call(lambda: module(*inputs), device)


def _where(device: T.Device) -> tuple[str, torch.dtype]:
    return ("cuda" if device.kind == "cuda" else "cpu"), DTYPES[device.dtype]


def fit(samples: list[tuple[float, ...]]) -> tuple[tuple[float, ...], float]:
    """The non-negative line time = a + b·mult_adds + c·elements + d·weights through
    (mult_adds, elements, weights, seconds) samples, least squares on relative error (each
    sample weighed by 1/time, so that small ops count as much as large ones), and its median
    relative error on them."""
    features = [(1.0, *work) for *work, _ in samples]
    active = [index for index in range(len(features[0])) if any(row[index] for row in features)]
    while True:
        coefficients = _least_squares(features, [s for *_, s in samples], active)
        negative = [index for index in active if coefficients[index] < 0]
        if not negative:
            break
        active.remove(negative[0])
    line = tuple(coefficients)
    errors = [abs(sum(c * f for c, f in zip(line, row)) - s) / s
              for row, (*_, s) in zip(features, samples)]
    return line, statistics.median(errors)


def _least_squares(features, seconds, active) -> list[float]:
    coefficients = [0.0] * len(features[0])
    if not active:
        return coefficients
    rows = torch.tensor([[row[i] / s for i in active] for row, s in zip(features, seconds)],
                        dtype=torch.float64)
    ones = torch.ones(len(seconds), 1, dtype=torch.float64)
    solution = torch.linalg.lstsq(rows, ones).solution.flatten().tolist()
    for index, value in zip(active, solution):
        coefficients[index] = value
    return coefficients


def calibrate(device: T.Device, per_class: int = 12,
              progress: Callable[[str, int, int], None] | None = None) -> T.Calibration:
    """Time the shipped specs' ops on `device` and fit each class: a calibration."""
    if device.kind == "cpu":
        torch.set_num_threads(device.threads)
    configurations = shipped_configurations()
    classes: dict[str, T.ClassModel] = {}
    samples_all: list[tuple[str, float, float, float]] = []
    for index, (name, nodes) in enumerate(sorted(configurations.items()), start=1):
        if progress is not None:
            progress(name, index, len(configurations))
        measured, samples = {}, []
        for node in spread(list(nodes.values()), per_class):
            seconds = time_node(node, device)
            measured[T.config_key(node)] = seconds
            samples.append((*T.batch_work(node, device.batch), seconds))
            samples_all.append((node.op, *samples[-1]))
        line, error = fit(samples)
        classes[name] = T.ClassModel(line, measured, error)
    peak = max(m / s for op, m, _, _, s in samples_all if op == "conv2d")
    itemsize = T.BYTES[device.dtype]
    bandwidth = max(e * itemsize / s for op, _, e, _, s in samples_all
                    if op in ("add", "act", "batchnorm"))
    partial = T.Calibration(device, classes, peak, bandwidth,
                            min(s for *_, s in samples_all), 0.0, 1.0,
                            stream_bandwidth(device),
                            datetime.datetime.now(datetime.timezone.utc).isoformat(
                                timespec="seconds"))
    return _with_dispatch(partial)


def _with_dispatch(calibration: T.Calibration) -> T.Calibration:
    """The calibration with `in_network` and `per_node`, fitted to the reference network at
    several input sizes (the same nodes; at 32×32 dispatch dominates, at 224×224 the ops):
    measured ≈ in_network · (its ops' times) + per_node · nodes, least squares."""
    spec = zoo.load(REFERENCE)
    rows, measured = [], []
    for size in REFERENCE_SIZES:
        shape = (spec.input[0], size, size)
        predicted = T.predict(lower_table(spec, shape), calibration)  # in_network 1, per_node 0
        rows.append((predicted.total, float(len(predicted.nodes))))
        measured.append(time_network(spec, calibration.device, shape)["total"])
    matrix = torch.tensor(rows, dtype=torch.float64) / torch.tensor(measured)[:, None]
    factor, per_node = torch.linalg.lstsq(matrix, torch.ones(len(rows), 1, dtype=torch.float64)
                                          ).solution.flatten().tolist()
    return T.Calibration(calibration.device, calibration.classes, calibration.peak_mult_adds,
                         calibration.bandwidth, calibration.dispatch, max(0.0, per_node),
                         max(0.5, factor), calibration.stream_bandwidth, calibration.created)


def stream_bandwidth(device: T.Device, megabytes: int = 256) -> float:
    """Bytes per second a copy of a buffer larger than any cache moves (read and write)."""
    target, dtype = _where(device)
    source = torch.ones(megabytes * 2**20 // T.BYTES[device.dtype], dtype=dtype, device=target)
    destination = torch.empty_like(source)
    seconds = time_call(lambda: destination.copy_(source), device, minimum=0.2)
    return 2 * source.numel() * source.element_size() / seconds


def time_network(spec, device: T.Device, input_shape=None,
                 stages: bool = True) -> dict[str, float]:
    """Seconds of one forward pass of the compiled `spec` (eval, no gradients) on a batch of
    `device.batch` random images: "total", and with `stages` each stage's (timed by hooks
    around the stage modules, in separate passes so that the total carries no hook cost)."""
    if device.kind == "cpu":
        torch.set_num_threads(device.threads)
    guard_memory(spec, device.batch, device.dtype, input_shape=input_shape, task="inference",
                 doing="timing", device=device.kind, precision_setting=False)
    target, dtype = _where(device)
    model = compile_network(spec, input_shape).to(target, dtype).eval()
    images = torch.randn(device.batch, *(input_shape or spec.input)).to(target, dtype)
    with torch.no_grad():
        times = {"total": time_call(lambda: model(images), device, minimum=0.3)}
        if stages:
            times.update(_stage_times(model, images, device))
    return times


def _stage_times(model, images, device: T.Device) -> dict[str, float]:
    started: dict[str, float] = {}
    spent: dict[str, list[float]] = {}

    def before(name):
        def hook(module, inputs):
            _synchronise(device)
            started[name] = time.perf_counter()
        return hook

    def after(name):
        def hook(module, inputs, output):
            _synchronise(device)
            spent.setdefault(name, []).append(time.perf_counter() - started[name])
        return hook

    handles = []
    for name, stage in model.named_children():
        handles += [stage.register_forward_pre_hook(before(name)),
                    stage.register_forward_hook(after(name))]
    try:
        for _ in range(5):
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return {f"stage {name}": statistics.median(values[2:] or values)
            for name, values in spent.items()}


__all__ = ["current_device", "shipped_configurations", "spread", "time_call", "time_node",
           "fit", "calibrate", "time_network", "DTYPES"]
