"""Memory guards: refuse a network that cannot fit before a single tensor is allocated.

The figures come from the lowered graph, as analysis's do, so nothing here imports torch and
nothing grows with a network's channels or pixels: a 2³¹-channel conv is checked in the time
of a 16-channel one. The model (docs/analysis.md, "Memory estimates and guards"):

    compile    parameters · 4 bytes + BN buffers (running mean and variance, 4 bytes per
               channel each, and an 8-byte batch counter per BN)
    training   parameters, gradients and SGD momentum (4 bytes each per parameter) + BN
               buffers + autocast's low-precision weight copies (2 bytes per parameter in
               bf16 and fp16) + activations: batch · (the input image at 4 bytes + every
               node's output at 4 bytes in fp32, 2 in bf16 and fp16)

    inference  parameters + BN buffers + activations: batch · the most bytes alive at once in
               a forward pass without gradients (the input image at 4 bytes, outputs at 4
               bytes in fp32, 2 in bf16 and fp16): each node's output lives from its node to
               its last reader in execution order, and a running node holds a temporary of
               its output's size besides

The training activation term counts every node's output as saved for backward: an upper
estimate (in-place activations and sums save less). Both are linear in the batch, so the largest
batch that fits is one division. The budget defaults to `available_memory()` (a CUDA device's
free memory when a guard is told the device), shared by the processes torchrun started on this
machine. `skdsl train`, `eval`, `export` and `inspect attention` guard with `guard_memory`
before they allocate a batch, and turn an allocation failure that still happens into SK611
(`is_out_of_memory`, `out_of_memory_is_an_error`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from ..base.errors import SkdslError, declare_settings
from ..base.launch import launch
from . import spec as S
from .analysis import _elements, node_cost
from .graph import LoweredGraph, Node, Placement, Unit, as_table, lower_table

__all__ = ["ResourceError", "MemoryEstimate", "TrainingMemory", "available_memory", "parse_size",
           "parse_budget", "format_size", "parameter_bytes", "estimate_memory",
           "estimate_training_bytes", "guard_compile", "guard_memory", "guard_training",
           "is_out_of_memory", "describe_out_of_memory", "out_of_memory_is_an_error",
           "PRECISION_BYTES", "TASKS"]

declare_settings("memory_budget", "batch_size", "precision", "input_shape")

FLOAT_BYTES = 4  # parameters, gradients, momentum, BN statistics and the input: fp32
COUNTER_BYTES = 8  # BN's num_batches_tracked, an int64
PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}  # one activation element
TASKS = ("training", "inference")


class ResourceError(SkdslError):
    """A network, or a training run, that would not fit in memory; or an unreadable size."""

    code = "SK620"


# -- how much there is ----------------------------------------------------------------------------


def available_memory() -> int:
    """Bytes this process may still allocate: /proc/meminfo's MemAvailable, bounded by the
    headroom of every cgroup (v2 or v1) memory limit over it and by an address-space limit
    (`ulimit -v`). Without /proc (macOS, Windows), the free physical pages; without those
    either, sys.maxsize (no known bound)."""
    memory = _meminfo_available(Path("/proc/meminfo"))
    if memory is None:
        memory = _free_pages()
    candidates = [memory, _cgroup_headroom(Path("/proc/self/cgroup"), Path("/sys/fs/cgroup")),
                  _address_space_limit()]
    return min((value for value in candidates if value is not None), default=sys.maxsize)


def _meminfo_available(path: Path) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB$", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


# A v1 "no limit" is a page-rounded 2⁶³−1; anything this large bounds nothing.
_UNLIMITED = 1 << 60
_FILES = {"v2": ("memory.max", "memory.current", "inactive_file"),
          "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}


def _cgroup_headroom(membership: Path, root: Path) -> int | None:
    """The least room left under any memory limit of this process's cgroups and their
    ancestors, or None when none is set. `membership` is /proc/self/cgroup, `root` the
    cgroup mount (v2 at the root, or under unified/ beside v1's memory/)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
            version = "v2"
        elif "memory" in controllers.split(","):
            base, version = root / "memory", "v1"
        else:
            continue
        # In a container the path names the host's cgroup, mounted as the root here.
        folder = base / path.lstrip("/")
        folders = [folder, *folder.parents] if folder.is_dir() else [base]
        for each in folders:
            room = _room(each, *_FILES[version])
            if room is not None:
                rooms.append(room)
            if each == base:
                break
    return min(rooms, default=None)


def _room(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    """Limit minus usage in one cgroup folder; inactive page cache counts as free (the
    kernel reclaims it before it refuses an allocation)."""
    limit, usage = _read_int(folder / limit_file), _read_int(folder / usage_file)
    if limit is None or limit >= _UNLIMITED or usage is None:
        return None
    inactive = 0
    try:
        match = re.search(rf"^{inactive_key} (\d+)$", (folder / "memory.stat").read_text(),
                          re.MULTILINE)
        inactive = int(match.group(1)) if match else 0
    except OSError:
        pass
    return max(0, limit - max(0, usage - inactive))


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # v2 writes "max" for no limit


def _address_space_limit() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def _free_pages() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


# -- sizes in text ----------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 10**3, "m": 1 << 20, "mib": 1 << 20,
          "mb": 10**6, "g": 1 << 30, "gib": 1 << 30, "gb": 10**9, "t": 1 << 40, "tib": 1 << 40,
          "tb": 10**12}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from "8GiB", "512M", "1.5 TB" or "1000000": KiB, MiB, GiB, TiB and the bare
    K, M, G, T are powers of 1024; KB, MB, GB, TB powers of 1000. ResourceError (SK622)
    on anything else, or on a size under one byte."""
    match = _SIZE.fullmatch(text) if len(text) <= 40 else None
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise ResourceError(f"'{text[:40]}' is not a memory size", code="SK622",
                            hint="write a number and a unit, such as 512MiB, 8GiB or 1.5TB")
    size = int(Decimal(match.group(1)) * unit)  # the pattern admits plain decimals only
    if size < 1:
        raise ResourceError(f"'{text}' is less than one byte", code="SK622",
                            hint="give a budget of at least a few megabytes, such as 512MiB")
    return size


def parse_budget(text: str | None) -> int | None:
    """A `--memory-budget` flag's value in bytes (None when left out); ResourceError (SK622)
    naming the flag on anything parse_size refuses."""
    if text is None:
        return None
    try:
        return parse_size(text)
    except ResourceError as error:
        raise ResourceError(f"{{memory_budget}} {error.message}", code=error.code,
                            hint=error.hint) from None


def format_size(size: int) -> str:
    """'11.6 GiB', '512.0 MiB', '900 B': binary units, one decimal."""
    for unit, scale in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
                        ("KiB", 1 << 10)):
        if size >= scale:
            # Decimal, not float: a concat's channels can make sizes past float's 10³⁰⁸.
            return f"{Decimal(size) / scale:,.1f} {unit}"
    return f"{size} B"


# -- what a network needs -------------------------------------------------------------------------


def _graph(spec_or_graph, input_shape):
    if isinstance(spec_or_graph, S.Network):
        return lower_table(spec_or_graph, input_shape)
    return as_table(spec_or_graph)  # a LoweredGraph, or the networkx export of skdsl.lower


def _weights(node: Node) -> tuple[int, int]:
    """(parameters, bytes of buffers) of one node; a tied node's are its twin's."""
    if node.tied_to:
        return 0, 0
    floats, counters = node.attrs.buffers()
    return node_cost(node).params, floats * FLOAT_BYTES + counters * COUNTER_BYTES


def _by_layer(graph, measure) -> tuple[int, dict[str, int]]:
    """measure(name, node) summed over the nodes, in total and by the spec item (layer) that
    made each node."""
    total, layers = 0, {}
    for name, node in graph.nodes.items():
        value = measure(name, node)
        if value:
            total += value
            layers[node.layer] = layers.get(node.layer, 0) + value
    return total, layers


def parameter_bytes(spec_or_graph, input_shape=None) -> tuple[int, dict[str, int]]:
    """Bytes of the compiled module's parameters and buffers, in total and by layer."""

    def stored(name, node):
        params, buffers = _weights(node)
        return params * FLOAT_BYTES + buffers

    return _by_layer(_graph(spec_or_graph, input_shape), stored)


@dataclass(frozen=True)
class MemoryEstimate:
    """What a training step or an inference pass needs, in bytes (the model in this module's
    docstring); an inference pass has no gradients, optimizer state or weight copies."""

    network: str
    batch_size: int
    precision: str
    parameters: int  # fp32 weights
    buffers: int  # BN running statistics and counters
    gradients: int
    optimizer: int  # SGD momentum, one per parameter
    weight_copies: int  # autocast's bf16/fp16 copies of the weights (0 in fp32)
    per_image: int  # activations saved for backward (training) or alive at once (inference)
    largest_layer: str  # by activations; in inference, the layer running when most are alive
    largest_layer_per_image: int
    task: str = "training"  # or "inference"

    @property
    def activations(self) -> int:
        return self.batch_size * self.per_image

    @property
    def fixed(self) -> int:
        """What does not grow with the batch."""
        return (self.parameters + self.buffers + self.gradients + self.optimizer
                + self.weight_copies)

    @property
    def total(self) -> int:
        return self.fixed + self.activations

    def largest_batch(self, budget: int) -> int:
        """The largest batch whose total fits in `budget` bytes (0: not even one image)."""
        return max(0, (budget - self.fixed) // self.per_image)

    def lines(self) -> list[str]:
        """The breakdown, one 'part  size' line each, for a report."""
        parts = [("parameters", self.parameters), ("BN buffers", self.buffers),
                 ("gradients", self.gradients), ("SGD momentum", self.optimizer),
                 (f"{self.precision} weight copies", self.weight_copies),
                 (f"activations (batch {self.batch_size})", self.activations)]
        return [f"{part:<26} {format_size(size):>12}" for part, size in parts if size] + [
            f"{'total':<26} {format_size(self.total):>12}"]


TrainingMemory = MemoryEstimate  # the name it had when it estimated training alone


def estimate_memory(spec_or_graph, batch_size: int, precision: str = "fp32", input_shape=None,
                    task: str = "training") -> MemoryEstimate:
    """The memory a training step (`task` "training") or a forward pass without gradients
    ("inference") needs at `batch_size` and `precision` (fp32, bf16, fp16)."""
    if precision not in PRECISION_BYTES:
        raise ValueError(f"unknown precision '{precision}'; known: {', '.join(PRECISION_BYTES)}")
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'; known: {', '.join(TASKS)}")
    if batch_size < 1:
        raise ValueError(f"a batch holds at least one image, not {batch_size}")
    graph = _graph(spec_or_graph, input_shape)
    element = PRECISION_BYTES[precision]
    params = buffers = 0
    for node in graph.nodes.values():
        own = _weights(node)
        params, buffers = params + own[0], buffers + own[1]

    def output(name, node):  # the input batch arrives in fp32
        size = sum(_elements(shape) for shape in node.out_shapes)  # a split has several
        return size * (FLOAT_BYTES if name == "input" else element)

    weights = params * FLOAT_BYTES
    if task == "inference":
        peak, layer = _peak_alive(graph, output)
        return MemoryEstimate(graph.graph["network"], batch_size, precision, weights, buffers, 0,
                              0, 0, peak, layer, peak, task)
    saved, layers = _by_layer(graph, output)
    largest = max(layers, key=layers.get)
    return MemoryEstimate(graph.graph["network"], batch_size, precision, weights, buffers,
                          weights, weights, 0 if precision == "fp32" else params * element,
                          saved, largest, layers[largest], task)


def estimate_training_bytes(spec_or_graph, batch_size: int, precision: str = "fp32",
                            input_shape=None) -> MemoryEstimate:
    """The memory a training step needs at `batch_size` and `precision` (fp32, bf16, fp16)."""
    return estimate_memory(spec_or_graph, batch_size, precision, input_shape)


def _peak_alive(graph, size_of) -> tuple[int, str]:
    """Bytes per image of the most node outputs alive at once in a forward pass without
    gradients, and the layer running then: in execution order, each output lives from its node
    to its last reader (the network's output to the end), and a running node also holds a
    temporary of its output's size."""
    order = list(graph.nodes.items())
    last_read = {}
    for index, (_, node) in enumerate(order):
        for source, _port in node.inputs:
            last_read[source] = index
    last_read[graph.graph["output"][0]] = len(order)
    freed_after = [0] * (len(order) + 1)
    alive = peak = 0
    layer = order[0][1]["layer"]
    for index, (name, node) in enumerate(order):
        size = size_of(name, node)
        alive += size
        if alive + size > peak:
            peak, layer = alive + size, node.layer
        freed_after[max(index, last_read.get(name, index))] += size
        alive -= freed_after[index]
    return peak, layer


def inference_bytes(graph: LoweredGraph) -> int:
    """What `estimate_memory(graph, 1, "fp32", task="inference").total` gives (weights, buffers
    and the most activations alive at once), from the segments: a stage-level block's body is
    walked once per distinct body and placed (explore counts thousands of variants that share
    them), not spelled out node by node."""
    items = _walk_items(graph)
    if items is None:  # a node reads inside a block from outside it: spell the network out
        return estimate_memory(graph, 1, task="inference").total
    last_read = {}
    for index, (_, inputs, _, _) in enumerate(items):
        for source in inputs:
            last_read[source] = index
    last_read[graph.graph["output"][0]] = len(items)
    alive = peak = weights = 0
    freed_after = [0] * (len(items) + 1)
    for index, (name, inputs, size, block) in enumerate(items):
        if block is None:  # a node: its output, and a temporary of that size while it runs
            peak = max(peak, alive + 2 * size)
            alive += size
        else:
            kept, freed, own_weights = block
            source = inputs[0]
            peak = max(peak, alive + (freed if last_read.get(source) == index else kept))
            alive += size
            weights += own_weights
        freed_after[max(index, last_read.get(name, index))] += size
        alive -= freed_after[index]
    return weights + _segment_weights(graph) + peak


def _walk_items(graph: LoweredGraph) -> list | None:
    """The network as a sequence of (name, inputs, output bytes, None) for nodes and
    (output name, [source], output bytes, unit summary) for placed blocks; None when a node
    outside a block reads a node inside one."""
    items, known = [], set()
    for segment in graph.segments:
        if isinstance(segment, Placement):
            name = segment.output[0]
            if segment.unit.output[0] not in segment.unit.nodes:  # a body that passes x on
                return None
            summary = graph.unit_summary(segment.unit, "inference bytes", _unit_memory)
            items.append((name, (segment.source[0],), summary[3], summary[:3]))
            known.add(name)
            continue
        for name, node in segment.items():
            inputs = tuple(source for source, _port in node.inputs)
            if any(source not in known for source in inputs):
                return None
            items.append((name, inputs, _activation_bytes(name, node), None))
            known.add(name)
    return items


def _activation_bytes(name: str, node: Node) -> int:
    size = sum(_elements(shape) for shape in node.out_shapes)  # a split has several
    return size * FLOAT_BYTES


def _segment_weights(graph: LoweredGraph) -> int:
    total = 0
    for segment in graph.segments:
        if not isinstance(segment, Placement):
            for node in segment.values():
                params, buffers = _weights(node)
                total += params * FLOAT_BYTES + buffers
    return total


def _unit_memory(unit: Unit, _key) -> tuple[int, int, int, int]:
    """A block body's most bytes alive at once, its input counted while it is alive: `kept`
    when the input outlives the block, `freed` when the block reads it last; its weights'
    bytes; its output's bytes."""
    source = unit.source[0]
    source_size = next(_elements(shape) for node in unit.nodes.values()
                       for (reader, _port), shape in zip(node.inputs, node.in_shapes)
                       if reader == source)
    order = list(unit.nodes.items())
    last_read = {source: -1}
    for index, (_, node) in enumerate(order):
        for reader, _port in node.inputs:
            last_read[reader] = index
    last_read[unit.output[0]] = len(order)
    results = []
    for input_outlives in (True, False):
        alive = peak = source_size * FLOAT_BYTES
        freed_after = [0] * (len(order) + 1)
        if not input_outlives:
            freed_after[max(0, last_read[source])] += source_size * FLOAT_BYTES
        for index, (name, node) in enumerate(order):
            size = _activation_bytes(name, node)
            peak = max(peak, alive + 2 * size)
            alive += size
            freed_after[max(index, last_read.get(name, index))] += size
            alive -= freed_after[index]
        results.append(peak - source_size * FLOAT_BYTES)
    weights = 0
    for node in unit.nodes.values():
        params, buffers = _weights(node)
        weights += params * FLOAT_BYTES + buffers
    output = _activation_bytes(unit.output[0], unit.nodes[unit.output[0]])
    return results[0], results[1], weights, output


# -- the guards -------------------------------------------------------------------------------------


def _budget(budget: int | None, device=None) -> tuple[int, str]:
    """The bytes a guard may plan for, and how to say where they come from: the budget given;
    else a CUDA device's free memory, or the memory available to this process, each shared by
    the processes torchrun started on this machine."""
    if budget is not None:
        return budget, f"the budget is {format_size(budget)}"
    if getattr(device, "type", device) == "cuda":
        # A CUDA device exists only once its caller has loaded torch: ask that torch, so that
        # the counting core never imports it (import-linter's torch-free-core contract).
        cuda = sys.modules["torch"].cuda
        room, where = cuda.mem_get_info(device)[0], f"free on {device}"
    else:
        room, where = available_memory(), "available"
    processes = launch().local_world_size
    if processes == 1:
        return room, f"{format_size(room)} is {where}"
    return room // processes, (f"{format_size(room)} is {where}, "
                               f"{format_size(room // processes)} for each of this machine's "
                               f"{processes} processes")





def guard_compile(spec_or_graph, input_shape=None, budget: int | None = None) -> int:
    """Refuse (ResourceError SK620) a network whose parameters and buffers would not fit in
    `budget` bytes (default: available memory), before anything is allocated. Returns the
    bytes they need."""
    graph = _graph(spec_or_graph, input_shape)
    needed, layers = parameter_bytes(graph)
    room, said = _budget(budget)
    if needed > room:
        largest = max(layers, key=layers.get)
        raise ResourceError(
            f"{graph.graph['network']} needs {format_size(needed)} for its parameters and "
            f"buffers ({needed:,} bytes) but {said}; its largest layer, {largest}, needs "
            f"{format_size(layers[largest])}", code="SK620",
            hint=f"make {largest} narrower or its kernel smaller, or give a larger budget")
    return needed


def guard_memory(spec_or_graph, batch_size: int, precision: str = "fp32",
                 budget: int | None = None, input_shape=None, *, task: str = "training",
                 doing: str = "training", device=None, least: int = 1,
                 batch_setting: str = "batch_size", precision_setting: bool = True,
                 input_setting: bool = False) -> MemoryEstimate:
    """Refuse (ResourceError SK621) to run `task` at `batch_size` and `precision` when the
    estimate would not fit in `budget` bytes (default: what `device` has; see _budget), naming
    the largest layer by activations and the largest batch that fits. Returns the estimate.

    For the message and hint: `doing` is what the caller does ("evaluating"); `least` the
    fewest images it runs at once; `batch_setting` the setting that chooses the batch,
    `precision_setting` whether one chooses the precision, `input_setting` whether
    `input_shape` is one. A larger `memory_budget` always runs it anyway."""
    estimate = estimate_memory(spec_or_graph, batch_size, precision, input_shape, task)
    room, said = _budget(budget, device)
    if estimate.total <= room:
        return estimate
    fits = estimate.largest_batch(room)
    layer = estimate.largest_layer
    where = (f"the largest layer by activations is {layer} "
             f"({format_size(estimate.largest_layer_per_image * batch_size)})"
             if task == "training" else f"activations peak in {layer}")
    message = (f"{doing} {estimate.network} at batch {batch_size} in {precision} needs about "
               f"{format_size(estimate.total)} ({format_size(estimate.activations)} of them "
               f"activations) but {said}; {where}")
    anyway = "a larger {memory_budget} runs it anyway"
    if fits >= least:
        smaller = f"use a {{{batch_setting}}} of at most {fits}"
        if precision_setting and precision == "fp32":
            smaller += ", or {precision} bf16"
        raise ResourceError(f"{message}; a batch of {fits} fits", code="SK621",
                            hint=f"{smaller}; {anyway}")
    images, s = ("one image", "s") if least == 1 else (f"{least} images", "")  # a verb's -s
    if estimate.fixed > room:
        alone = "weights, gradients and momentum" if task == "training" else "weights"
        cause = f"the {alone} alone need {format_size(estimate.fixed)}"
        hint = f"use a narrower network; {anyway}"
    else:
        cause = f"{images} need{s} {format_size(estimate.per_image * least)} of activations"
        smaller = "use a smaller {input_shape}, or " if input_setting else ""
        hint = f"{smaller}make {layer} and the layers around it smaller; {anyway}"
    raise ResourceError(f"{message}; not even {images} fit{s}: {cause}", code="SK621", hint=hint)


def guard_training(spec_or_graph, batch_size: int, precision: str = "fp32",
                   budget: int | None = None, input_shape=None, device=None) -> MemoryEstimate:
    """Refuse (ResourceError SK621) a training step whose estimate at `batch_size` and
    `precision` would not fit in `budget` bytes (default: what `device` has free), naming the
    largest layer by activations and the largest batch that fits. Returns the estimate."""
    return guard_memory(spec_or_graph, batch_size, precision, budget, input_shape, device=device)


# -- when an allocation fails anyway --------------------------------------------------------------

# How torch's CPU allocator says it failed (c10's alloc_cpu.cpp), on POSIX and on Windows.
_CPU_ALLOCATOR_FAILURES = ("DefaultCPUAllocator: can't allocate memory",
                           "DefaultCPUAllocator: not enough memory")
_TRIED = re.compile(r"you tried to allocate (\d+) bytes")


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure: Python's MemoryError, torch's OutOfMemoryError (CUDA), or the
    RuntimeError of torch's CPU allocator."""
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")  # no torch loaded: no torch error either
    if torch is not None and isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(error, RuntimeError) and any(
        failure in str(error) for failure in _CPU_ALLOCATOR_FAILURES)


def describe_out_of_memory(error: BaseException) -> str:
    """What failed, in a few words: 'an allocation of 8.9 GiB failed' or the error's first
    line."""
    tried = _TRIED.search(str(error))
    if tried:
        return f"an allocation of {format_size(int(tried.group(1)))} failed"
    first = (str(error).strip().splitlines() or [""])[0][:160]
    return first or type(error).__name__


@contextlib.contextmanager
def out_of_memory_is_an_error(doing: str, smaller: str):
    """Inside, an allocation failure (is_out_of_memory) becomes ResourceError SK611, "out of
    memory while `doing`: what failed", its hint to use a `smaller` ("{batch_size}") or free
    memory; other errors pass unchanged. The failed work's frames are cleared first, so its
    tensors are freed before anything else runs."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - anything else is re-raised as it was
        if not is_out_of_memory(error):
            raise
        traceback.clear_frames(error.__traceback__)
        raise ResourceError(f"out of memory while {doing}: {describe_out_of_memory(error)}",
                            code="SK611", hint=f"use a smaller {smaller}, or free memory (a "
                                               f"{{memory_budget}} above what is free lets work "
                                               f"start that cannot finish)") from None
