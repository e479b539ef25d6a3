"""The training loop: a spec, a data source and a recipe in; weights, metrics and checkpoints out.

    run = prepare(config, context)        # spec, data, model, optimiser; restored on --resume
    for epoch in remaining epochs:
        train_epoch(run, epoch)           # stops early on a signal, --max-steps or a NaN
        evaluate(...)                     # validation top-1 / top-5 over all processes
        save last.pt (and best.pt)        # atomically, rank 0 only

Every process runs the same loop on its share of each global batch; DistributedDataParallel
averages the gradients during backward, so the processes step in lockstep and stay identical.
The few places where a process waits for the others, or the CPU for the GPU, say so.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..base import files
from ..base.errors import APIError, CheckpointError, SkdslError, named
from ..base.errors import SettingError
from ..base.terminal import console_width, rich_environment
from ..core.resources import is_out_of_memory
from ..core.settings import EvalConfig, TrainConfig, config_problem
from ..nn import state_io
from . import checkpoint as ckpt
from . import data as D
from . import distributed as dist_
from .display import Display, Progress, banner_lines, counted
from .ema import WeightAverage
from .lock import LOCK_NAME, RunLock
from .metrics import (MetricsLog, TensorBoardLog, peak_memory_mib, plot_curves, read_metrics,
                      require_matplotlib, summary_table, topk_correct, write_csv)
from .mixing import Mixer
from .recipe import LrSchedule, Recipe, default_recipe, make_loss, make_optimizer, resolve, set_lr
from .specs import load_spec, spec_text
from .threads import checked_threads, using_threads

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(SkdslError):
    """Training could not go on: a non-finite loss (SK610), out of memory (SK611), a failed
    torch.compile (SK612)."""

    code = "SK610"


@dataclass
class State:
    """Where training stands: all a checkpoint needs besides the weights and the optimiser."""

    epoch: int = 0  # the epoch under way, from 0
    batch_in_epoch: int = 0  # batches of it already trained on
    step: int = 0  # optimiser steps over the whole run
    best_top1: float = -1.0
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)  # per finished epoch, as in metrics.jsonl
    epoch_totals: dict = field(default_factory=dict)  # this epoch's train sums so far


@dataclass
class Throughput:
    """This epoch's clock, for the epoch record: images trained, seconds waiting for data."""

    started: float = field(default_factory=time.monotonic)
    images: int = 0
    data_wait: float = 0.0

    def record(self) -> dict:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return {"images_per_s": self.images / seconds, "data_wait": self.data_wait / seconds}


@dataclass(frozen=True)
class Given:
    """What the Python API (skdsl.train(...), api.py) hands over instead of a spec file or a
    --data source: a module to train, and Datasets or DataLoaders."""

    model: nn.Module | None = None
    train: object = None
    val: object = None

    def source(self, analysis) -> D.Source:
        """A data source over the Datasets (or the DataLoaders' datasets); its classes are the
        network's outputs (None when the module is no skdsl network)."""
        classes = analysis.output[0] if analysis is not None and len(analysis.output) == 1 else None
        return D.Source("python", classes, GivenSplit(self.train), GivenSplit(self.val))


class GivenSplit:
    """A Dataset (or a DataLoader's) given from Python, indexed as the run's samplers index a
    Split: by (epoch, index) keys in training, by plain indices in evaluation. Its items are used
    as they are."""

    def __init__(self, data):
        self.dataset = data.dataset if isinstance(data, torch.utils.data.DataLoader) else data

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset[key[1] if isinstance(key, tuple) else key]


@dataclass
class Run:
    """Everything the loop touches, built once by `prepare`."""

    config: TrainConfig
    context: dist_.Context
    recipe: Recipe
    spec: object
    spec_source: str
    spec_json: str
    spec_sha256: str
    source: D.Source
    raw_model: nn.Module  # the compiled skdsl network itself: what checkpoints hold
    model: nn.Module  # what the loop calls: raw_model, wrapped in DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    sampler: D.EpochSampler
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    schedule: LrSchedule
    steps_per_epoch: int
    state: State
    out: Path
    display: Display
    log: MetricsLog | None
    stop: "StopSignals"
    lock: RunLock | None = None  # rank 0's hold on --out, for the run's length
    ema: WeightAverage | None = None  # --ema: the moving average of the weights
    mixer: Mixer = field(default_factory=lambda: Mixer(0.0, 0.0, 0))
    threads: int = 1
    tensorboard: TensorBoardLog | None = None
    clock: Throughput = field(default_factory=Throughput)

    @property
    def device(self) -> torch.device:
        return self.context.device

    @property
    def batch_per_process(self) -> int:
        return self.recipe.batch_size // self.context.world_size

    @property
    def batches_per_epoch(self) -> int:
        """Loader batches an epoch trains on: whole optimiser steps of accum_steps batches."""
        return self.steps_per_epoch * self.recipe.accum_steps

    def autocast(self):
        return autocast(self.device, self.config.precision)

    def to_device(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return to_device(images, labels, self.device, self.config.channels_last)


@dataclass
class Result:
    """What `train` returns: how the run ended and where its files are."""

    status: str  # "finished", "max-steps", "SIGINT" or "SIGTERM"
    epochs_done: int
    step: int
    best_top1: float | None
    last_val: dict | None
    out: Path
    history: list[dict]

    @property
    def exit_status(self) -> int:
        """0 when it ran to its end; 128 + the signal's number when a signal stopped it."""
        if self.status.startswith("SIG"):
            return 128 + int(getattr(signal, self.status))
        return 0


def train(config: TrainConfig, given: Given | None = None,
          spelled: Callable[[str], str] = named) -> Result:
    """Train a spec as `config` says; the one entry point of the command and the Python API.
    A --config file is read and checked first; torch's threads are set for the run's length.
    The progress lines write a setting `spelled(name)` (the command line: its flag)."""
    from .config_file import with_config_file

    config = with_config_file(config)
    with dist_.process_group(config.device or "auto") as context:
        with using_threads(checked_threads(config.threads)) as threads:
            return _train(config, context, given or Given(), threads, spelled)


def _train(config: TrainConfig, context: dist_.Context, given: Given, threads: int,
           spelled: Callable[[str], str]) -> Result:
    with StopSignals() as stop:
        run = prepare(config, context, stop, given)
        run.threads = threads
        run.display.spelled = spelled
        try:
            _announce(run)
            status = train_epochs(run)
            return finish(run, status)
        finally:
            run.display.stop()
            for log in (run.log, run.tensorboard):
                if log is not None:
                    log.close()
            if run.lock is not None:
                run.lock.release()


# -- preparing a run ------------------------------------------------------------------------------


def prepare(config: TrainConfig, context: dist_.Context, stop: "StopSignals",
            given: Given | None = None) -> Run:
    """Spec, data, model, optimiser and state; from --out/last.pt when resuming. Rank 0 holds
    --out's lock from here to the run's end (`run.lock`), or releases it on an error."""
    out = Path(config.out)
    saved, lock = _resumed_checkpoint(config, out, context)
    try:
        run = _prepare(config, context, stop, out, saved, given or Given())
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    run.lock = lock
    return run


def _prepare(config: TrainConfig, context: dist_.Context, stop: "StopSignals", out: Path,
             saved: dict | None, given: Given) -> Run:
    config = _settle(config, saved, given)
    _check_settings(config, context)
    spec, spec_source, spec_json, spec_sha256 = _network(config, given)
    if saved is not None:
        ckpt.check_spec(saved, out / "last.pt", spec_sha256)
    recipe = resolve_recipe(config)
    _check_batch(recipe.batch_size, context)
    if not isinstance(spec, ModuleNetwork):
        _guard_memory(spec, recipe.batch_size // context.world_size, config.precision,
                      config.memory_budget, context)
    _configure_torch(config, context)
    source = _source(config, spec, recipe, given)
    raw_model = _build_model(spec, config, context, fresh=saved is None, given=given.model)
    optimizer = make_optimizer(raw_model, recipe)
    scaler = torch.amp.GradScaler(context.device.type, enabled=config.precision == "fp16")
    sampler, train_loader, val_loader = _loaders(source, recipe.batch_size, config, context, given)
    steps_per_epoch = _steps_per_epoch(len(train_loader), recipe.accum_steps)
    ema = WeightAverage(raw_model, recipe.ema_decay) if recipe.ema_decay else None
    state = State()
    if saved is not None:
        state = _restore(saved, raw_model, optimizer, scaler, context, ema)
    log = _open_log(out, state.step if saved else None) if context.is_main else None
    run = Run(config, context, recipe, spec, spec_source, spec_json, spec_sha256, source,
              raw_model, _wrap(raw_model, config, context), optimizer, scaler, make_loss(recipe),
              sampler, train_loader, val_loader, LrSchedule.for_run(recipe, steps_per_epoch),
              steps_per_epoch, state, out, Display(enabled=context.is_main), log, stop, ema=ema,
              mixer=Mixer(recipe.mixup, recipe.cutmix, config.seed))
    if context.is_main:
        run.tensorboard = TensorBoardLog.open(out, state.step if saved else None)
        _write_resolved(run)
    return run


def resolve_recipe(config: TrainConfig) -> Recipe:
    """The recipe a settled config names, with every value the config sets."""
    return resolve(config.recipe, epochs=config.epochs, batch_size=config.batch_size,
                   lr=config.lr, weight_decay=config.weight_decay,
                   label_smoothing=config.label_smoothing, schedule=config.schedule,
                   warmup_epochs=config.warmup_epochs, opt=config.opt,
                   accum_steps=config.accum_steps, clip_grad=config.clip_grad,
                   ema_decay=config.ema, mixup=config.mixup, cutmix=config.cutmix,
                   augment=config.augment, crop_scale=config.crop_scale,
                   warmup_steps=config.warmup_steps)


def _steps_per_epoch(batches: int, accum_steps: int) -> int:
    if batches < accum_steps:
        raise SettingError(f"an epoch has {batches} batch(es), fewer than the {accum_steps} "
                           f"that {{accum_steps}} {accum_steps} gathers into one optimiser step",
                           hint="use a smaller {accum_steps} or {batch_size}")
    return batches // accum_steps  # the batches of a last, partial step are left out


def _open_log(out: Path, resume_step: int | None) -> MetricsLog:
    """--out, created if need be, with its metrics.jsonl (cut back to the resumed step)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        return MetricsLog(out / "metrics.jsonl", resume_step)
    except OSError as error:
        raise SettingError(f"cannot write to {{out}} '{out}': {error.strerror or error}",
                           code="SK514") from None


def _write_resolved(run: Run) -> None:
    """--out/resolved.json: every setting as the run uses it (flags, --config file, the resumed
    run's and the defaults, in that order) and the recipe they resolve to."""
    record = {"config": run.config.to_dict(), "recipe": run.recipe.to_dict(),
              "threads": run.threads, "world_size": run.context.world_size,
              "device": str(run.device)}
    files.write_text(run.out / "resolved.json", json.dumps(record, indent=2) + "\n")


def _settle(config: TrainConfig, saved: dict | None, given: Given | None = None) -> TrainConfig:
    """Every setting decided: the flags given, then the resumed run's, then the defaults."""
    if saved is not None:
        config = config.with_defaults(TrainConfig.from_dict(saved["config"]))
    config = config.with_defaults()
    if given is not None and isinstance(given.train, torch.utils.data.DataLoader):
        # The loader's own batch is this process's: the global batch follows from it.
        config = replace(config, batch_size=given.train.batch_size * dist_.world_size())
    return replace(config, recipe=config.recipe or default_recipe(config.data))


def _loaders(source: D.Source, batch_size: int, config: TrainConfig, context: dist_.Context,
             given: Given | None = None):
    """This process's training sampler and loader (its share of each global batch) and its
    validation loader (its shard of the split). DataLoaders given from Python are used as they
    are (and the sampler is None)."""
    given = given or Given()
    loader_type = torch.utils.data.DataLoader
    batch = batch_size // context.world_size
    workers = _workers(config, context)
    pin = context.device.type == "cuda"  # page-locked host memory: copies overlap compute
    if isinstance(given.train, loader_type):
        val = given.val if isinstance(given.val, loader_type) else \
            _val_loader(source.val, batch_size, workers, context)
        return None, given.train, val
    sampler = D.EpochSampler(source.train, context.rank, context.world_size, config.seed)
    train_loader = D.make_loader(source.train, batch, sampler, workers, pin, drop_last=True)
    if len(train_loader) == 0:
        raise SettingError(f"the training split has {len(source.train)} images, fewer than one "
                           f"batch of {batch_size}", hint="use a smaller {batch_size}")
    val_loader = (given.val if isinstance(given.val, loader_type)
                  else _val_loader(source.val, batch_size, workers, context))
    return sampler, train_loader, val_loader


def _val_loader(split: D.Split, batch_size: int, workers: int, context: dist_.Context):
    """This process's shard of a validation split, in batches of its share of `batch_size`."""
    shard = D.shard_indices(len(split), context.rank, context.world_size)
    return D.make_loader(split, batch_size // context.world_size, shard, workers,
                         pin_memory=context.device.type == "cuda", drop_last=False)


def _resumed_checkpoint(config: TrainConfig, out: Path,
                        context: dist_.Context) -> tuple[dict | None, RunLock | None]:
    """--resume: the checkpoint in --out, whole and sound; a fresh run refuses to overwrite one.
    Rank 0 first takes --out's lock (SK608 while another run holds it).

    Rank 0 reads it and every process gets rank 0's checkpoint, or its error, by broadcast: the
    other nodes of a multi-node run need not see --out, and all processes stop together.
    """
    outcome, lock = None, None
    if context.is_main:
        try:
            outcome, lock = _read_resumed(config, out)
        except SkdslError as error:
            outcome = error  # pickled whole: its settings stay settings in every process
    outcome = dist_.broadcast_object(outcome, context)  # a collective: every process waits
    if isinstance(outcome, SkdslError):
        raise outcome
    return outcome, lock


# Every file a run writes in --out: each must be a regular file or nothing yet (files.py).
RUN_FILES = (LOCK_NAME, "last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "resolved.json",
             "curves.png")


def _read_resumed(config: TrainConfig, out: Path) -> tuple[dict | None, RunLock]:
    try:  # before the lock, which would create the folder and its .lock
        files.check_output_folder(out, RUN_FILES)
    except files.FileProblem as problem:
        raise SettingError(f"{{out}} '{out}' cannot hold a run: {problem}", code="SK514",
                           hint="choose another {out}: skdsl writes only regular files") from None
    # The lock first: a run that holds the folder (SK608) may not have written last.pt yet.
    lock = RunLock(out).acquire()
    try:
        return _saved_run(config, out), lock
    except BaseException:
        lock.release()
        raise


def _saved_run(config: TrainConfig, out: Path) -> dict | None:
    """The run in --out to continue (under its lock), or None for a fresh run."""
    last = out / "last.pt"
    if config.resume == "auto":  # resume when there is a run to resume, else start one
        config = replace(config, resume=last.exists())
    if config.resume and config.init is not None:
        raise SettingError("{init} starts a new run from weights; {resume} continues the run in "
                           "{out} from its last.pt", hint="leave out one of them")
    if config.resume and not last.exists():
        raise CheckpointError(f"{{resume}}: no checkpoint '{last}' to resume from",
                              code="SK601", hint="leave out {resume} to start a new run there")
    if not config.resume:
        if last.exists():
            raise SettingError(f"{{out}} '{out}' already holds a run (last.pt)", code="SK514",
                               hint="add {resume} to continue it, or choose another {out}")
        return None
    saved = ckpt.load(last)
    changed = config.changed_on_resume(TrainConfig.from_dict(saved["config"]))
    if changed:
        settings = [f"{{{name}}}" for name in changed]
        listed = " and ".join([", ".join(settings[:-1]), settings[-1]] if len(settings) > 1
                              else settings)
        raise CheckpointError(f"{{resume}} continues a run exactly, but {listed} "
                              f"{'differ' if len(settings) > 1 else 'differs'} from the run in "
                              f"'{out}'", code="SK606",
                              hint="resume with the same values (or none: the run's own apply), "
                                   "or start a new run in another {out}")
    return saved


def _check_settings(config: TrainConfig, context: dist_.Context) -> None:
    """Settings in their ranges (the Python API's too), and those that need something of this
    machine: a GPU, a C++ compiler, matplotlib."""
    trouble = config_problem(config.to_dict())
    if trouble:
        raise SettingError(f"the {trouble}")
    _check_precision(config.precision, context)
    if config.compile and context.device.type == "cpu" and not _has_c_compiler():
        raise SettingError("{compile} on a CPU needs a C++ compiler (torch.compile's inductor "
                           "generates C++)", hint="install gcc, or leave out {compile}")
    if config.plot and context.is_main:
        require_matplotlib()


def _check_precision(precision: str, context: dist_.Context) -> None:
    if precision == "fp16" and context.device.type != "cuda":
        raise SettingError("{precision} fp16 needs a CUDA GPU (its grad scaler guards fp16 "
                           "gradients there)", hint="use {precision} bf16 on a CPU")


def _has_c_compiler() -> bool:
    import shutil

    return any(shutil.which(name) for name in (os.environ.get("CXX", "c++"), "g++", "clang++"))


def _check_batch(batch_size: int, context: dist_.Context) -> None:
    if batch_size % context.world_size:
        raise SettingError(f"{{batch_size}} {batch_size} does not split evenly over "
                           f"{context.world_size} processes",
                           hint=f"use a multiple of {context.world_size}, such as "
                                f"{max(2, batch_size // context.world_size) * context.world_size}")
    if batch_size // context.world_size < 2:
        raise SettingError(f"{{batch_size}} {batch_size} gives each of {context.world_size} "
                           f"processes {batch_size // context.world_size} image(s) per batch, but "
                           f"BatchNorm on an SK unit's N×d×1×1 map needs at least 2",
                           hint=f"use {{batch_size}} {2 * context.world_size} or more")


def _load_spec(config: TrainConfig | EvalConfig):
    return (load_spec(config.spec, config.overrides, config.classes,
                      config.allow_imports_outside), spec_text(config.spec))


@dataclass(frozen=True)
class ModuleNetwork:
    """A module given from Python in place of a spec: what the run and its checkpoints need of
    a spec. `graph` is an skdsl-compiled network's (None for other modules)."""

    name: str
    input: tuple[int, ...] | None
    graph: object = None


def _network(config: TrainConfig, given: Given):
    """(spec, spec text, canonical JSON, its sha256): of the spec file, or of a given module,
    whose JSON lists its state's names and shapes (what a checkpoint of it must fit)."""
    if given.model is None:
        spec, source = _load_spec(config)
        return (spec, source, *ckpt.spec_fingerprint(spec))
    graph = getattr(given.model, "graph", None)
    name = (graph.graph.get("network") if graph is not None else None) or \
        type(given.model).__name__
    shape = tuple(graph.graph["input"]) if graph is not None else None
    state = [[key, list(value.shape)] for key, value in given.model.state_dict().items()]
    text = json.dumps({"module": type(given.model).__name__, "name": name, "state": state})
    import hashlib

    return ModuleNetwork(name, shape, graph), "", text, hashlib.sha256(text.encode()).hexdigest()


def network_analysis(spec):
    """skdsl.analyze of a spec or of a given skdsl module's graph; None for other modules."""
    from ..core.analysis import analyze

    if isinstance(spec, ModuleNetwork):
        return analyze(spec.graph) if spec.graph is not None else None
    return analyze(spec)


def _source(config: TrainConfig, spec, recipe: Recipe, given: Given) -> D.Source:
    """The --data source, or the Datasets given from Python."""
    from .augment import RandAugment

    if given.train is not None:
        return given.source(network_analysis(spec))
    policy = RandAugment() if recipe.augment == "randaugment" else None
    return open_data(config.data, spec, config.seed, recipe.light_augmentation,
                     crop_scale=recipe.crop_scale, policy=policy)


def _configure_torch(config: TrainConfig, context: dist_.Context) -> None:
    if config.deterministic:
        # cuBLAS needs a fixed workspace for deterministic matmuls; set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if context.device.type == "cuda":
        # Autotuned convolutions are fastest but may differ run to run: off when deterministic.
        torch.backends.cudnn.benchmark = not config.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True  # Ampere+: TF32 matmuls and convolutions
        torch.backends.cudnn.allow_tf32 = True


def _workers(config: TrainConfig | EvalConfig, context: dist_.Context) -> int:
    """Loader processes: as asked, else a share of the cores on a GPU; none on a CPU, where a
    worker would take cores from the model (and the synthetic images are cheap)."""
    if config.workers is not None:
        return config.workers
    if context.device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 2) // max(1, torch.cuda.device_count()) - 1))


def open_data(text: str, spec, seed: int, light_augmentation: bool = False, *,
              crop_scale: tuple[float, float] | None = None, policy=None) -> D.Source:
    """The --data source, checked against the spec: one class per output of the network."""
    analysis = network_analysis(spec)
    if analysis is None:
        raise APIError(f"a {spec.name} module is no skdsl network: {{data}} sources need its "
                       f"input size and classes", hint="pass train_data and val_data")
    output = tuple(analysis.output)
    if len(output) != 1:
        raise SettingError(f"the network's output is {'×'.join(map(str, output))}, not one score "
                           f"per class", code="SK511", hint="end the spec with `fc classes`")
    source = D.open_source(D.parse_source(text), tuple(spec.input), output[0], seed,
                           light_augmentation, crop_scale=crop_scale, policy=policy)
    if source.classes != output[0]:
        raise SettingError(f"the network has {output[0]} outputs, but {text} has "
                           f"{source.classes} classes", code="SK511",
                           hint=f"write `classes {source.classes}` in the spec")
    return source


def _guard_memory(spec, batch_size: int, precision: str, budget: int | None,
                  context: dist_.Context, task: str = "training") -> None:
    """Refuse (SK621), before a batch is allocated, a run whose weights, optimizer state and
    saved activations at this process's batch (`task` "training"), or an evaluation whose
    weights and activations alive at once ("inference"), would not fit `budget` (None: what the
    device has, shared by the processes of this machine; resources.guard_memory)."""
    from ..core.resources import guard_memory

    guard_memory(spec, batch_size, precision, budget, task=task, device=context.device,
                 doing="training" if task == "training" else "evaluating")


def _build_model(spec, config: TrainConfig, context: dist_.Context, fresh: bool,
                 given: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = skdsl_compile(spec) if given is None else given
    if fresh and config.init is not None:
        _load_init(model, spec, config.init, context)
    if config.sync_bn and context.distributed:
        dist_.use_sync_batchnorm(model, context.device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(context.device, memory_format=memory_format)
    torch.manual_seed(config.seed + context.rank)  # dropout masks differ between processes
    return model


def _wrap(model: nn.Module, config: TrainConfig, context: dist_.Context) -> nn.Module:
    """DDP around the model when there are several processes, then torch.compile if asked:
    compiling the DDP module lets dynamo split the graph at DDP's gradient buckets."""
    if context.distributed:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    if config.compile:
        model = torch.compile(model)
    return model


def _load_init(model: nn.Module, spec, path: str, context: dist_.Context) -> None:
    """--init: weights from a checkpoint, converted weights or a state dict (every process reads
    the file). Only the classifier head may be absent or of another shape; it keeps its fresh
    initialisation, and the run says so."""
    state, _ = state_io.read_weights(path, state_io.CHECKPOINTS, expected=model.state_dict())
    own = {key: tensor.clone() for key, tensor in model.state_dict().items()}
    left = state_io.load_weights(model, state, path, spec.name,
                                 leave_out=state_io.head_keys(model))
    if context.is_main:
        kept = f"loaded {len(own) - len(left)} of {len(own)} tensors from {path}"
        print(f"init: {kept}" + (f"; left out, freshly initialised: "
                                 f"{state_io.describe_left_out(left, own, state)}" if left else ""))


def _restore(saved: dict, model: nn.Module, optimizer, scaler, context: dist_.Context,
             ema: WeightAverage | None = None) -> State:
    _fitting("model", lambda: model.load_state_dict(saved["model"]))
    _fitting("optimizer", lambda: optimizer.load_state_dict(saved["optimizer"]))
    if ema is not None:  # the checkpoint's fields were checked: --ema runs save "ema"
        _fitting("EMA", lambda: ema.load_state_dict(saved["ema"]))
    if scaler.is_enabled() and saved.get("scaler"):
        _fitting("grad scaler", lambda: scaler.load_state_dict(saved["scaler"]))
    rng = saved.get("rng") or []
    if len(rng) == context.world_size:
        _fitting("random generator", lambda: ckpt.set_rng_state(rng[context.rank]))
    elif context.is_main:
        print(f"note: the checkpoint was written by {len(rng)} process(es), this run has "
              f"{context.world_size}: random states start afresh (data order does not change)")
    return State(epoch=saved["epoch"], batch_in_epoch=saved["batch_in_epoch"], step=saved["step"],
                 best_top1=saved["best_top1"], best_epoch=saved.get("best_epoch"),
                 history=list(saved["history"]), epoch_totals=dict(saved["epoch_totals"]))


def _fitting(what: str, restore) -> None:
    """Run `restore` (a state from a checkpoint whose digest and spec hash matched): a misfit
    here means the file was crafted or written by a different compiler."""
    try:
        restore()
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
        raise CheckpointError(f"the checkpoint's {what} state does not fit: "
                              f"{state_io.first_line(error)}", code="SK602") from None


# -- the loop -------------------------------------------------------------------------------------


def train_epochs(run: Run) -> str:
    """Epochs from where the state stands to the last; returns how the run ended."""
    state = run.state
    if state.epoch >= run.recipe.epochs:
        run.display.line(f"{run.out} has trained {state.epoch} epochs already: pass a larger "
                         f"{run.display.spelled('epochs')} to go on")
        return "finished"
    if run.config.max_steps is not None and state.step >= run.config.max_steps:
        return "max-steps"
    for epoch in range(state.epoch, run.recipe.epochs):
        started = time.monotonic()
        run.clock = Throughput()
        _reset_peak_memory(run.device)
        stopped = train_epoch(run, epoch)
        if stopped:
            save_checkpoint(run, best=False)
            return stopped
        trained = run.clock.record()
        val = evaluate(run.raw_model, run.val_loader, run.context, run.config, _kept(run))
        record = {**_epoch_record(run, epoch, val, time.monotonic() - started), **trained,
                  "peak_memory_mib": peak_memory_mib(run.device)}
        if run.ema is not None:  # the average, evaluated as the raw weights are
            ema_val = evaluate(run.ema.module, run.val_loader, run.context, run.config,
                               _kept(run))
            record.update({f"ema_val_{key}": ema_val[key] for key in ("loss", "top1", "top5")})
        state.history.append(record)
        is_best = val["top1"] > state.best_top1
        if is_best:
            state.best_top1, state.best_epoch = val["top1"], epoch + 1
        state.epoch, state.batch_in_epoch, state.epoch_totals = epoch + 1, 0, {}
        save_checkpoint(run, best=is_best)
        _log_epoch(run, record)
        run.display.finish(epoch + 1, run.recipe.epochs, record)
        # A signal during validation: the epoch is saved, so stop here (all processes agree).
        stopped = _signal_name(dist_.all_reduce(_signal_flags(run), run.context).tolist())
        if stopped:
            return stopped
    return "finished"


def train_epoch(run: Run, epoch: int) -> str | None:
    """One epoch from the state's batch on; returns why it stopped early, or None.

    An optimiser step takes accum_steps loader batches (`part` 0, 1, ...); checkpoints and
    signals land between steps only, so `batch_in_epoch` is always a whole number of steps."""
    state, config, accum = run.state, run.config, run.recipe.accum_steps
    run.model.train()
    run.display.start(epoch + 1, run.recipe.epochs, run.steps_per_epoch,
                      state.batch_in_epoch // accum)
    pending: list[tuple[int, float, Tensor, Tensor]] = []  # (step, lr, loss, correct) not yet read
    parts: list[tuple[Tensor, Tensor]] = []  # this step's batches' (loss, correct)
    log_every = config.log_every or (1 if run.device.type == "cpu" else 10)
    interval_start = time.monotonic()
    for images, labels in _epoch_batches(run, epoch):
        part = state.batch_in_epoch % accum
        if part == 0:
            lr = run.schedule(state.step)
            set_lr(run.optimizer, lr)
        # With pinned memory these copies are asynchronous: the GPU gets the batch while the
        # CPU goes on queueing the forward pass.
        images, labels = run.to_device(images, labels)
        parts.append(_train_step(run, images, labels, part))
        state.batch_in_epoch += 1
        run.clock.images += len(images) * run.context.world_size
        if part < accum - 1:
            continue
        pending.append((state.step, lr, *_step_totals(parts)))
        parts = []
        state.step += 1
        if len(pending) < log_every and state.batch_in_epoch < run.batches_per_epoch:
            continue
        # Sync point: reading the losses back makes the CPU wait for the GPU, and the all-reduce
        # makes every process wait for the slowest. Every process reaches it at the same step.
        verdict = _read_back(run, epoch, pending, time.monotonic() - interval_start)
        pending, interval_start = [], time.monotonic()
        if verdict:
            return verdict
    return None


def _epoch_batches(run: Run, epoch: int):
    """The loader's batches from the state's on, up to the last whole optimiser step, with the
    time spent waiting for each added to the epoch's clock."""
    start = run.state.batch_in_epoch
    if run.sampler is not None:
        run.sampler.set_epoch(epoch, start=start * run.batch_per_process)
        batches = D.batches(run.train_loader)
    else:  # a DataLoader from Python: its own order, so the done batches are skipped
        if hasattr(getattr(run.train_loader, "sampler", None), "set_epoch"):
            run.train_loader.sampler.set_epoch(epoch)
        batches = itertools.islice(D.batches(run.train_loader), start, None)
    remaining = itertools.islice(batches, run.batches_per_epoch - start)
    while True:
        waiting = time.monotonic()
        batch = next(remaining, None)
        run.clock.data_wait += time.monotonic() - waiting
        if batch is None:
            return
        yield batch


def _step_totals(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """One step's mean loss and top-1 count over its accumulated batches."""
    if len(parts) == 1:
        return parts[0]
    return torch.stack([p[0] for p in parts]).mean(), torch.stack([p[1] for p in parts]).sum()


def _train_step(run: Run, images: Tensor, labels: Tensor, part: int = 0) -> tuple[Tensor, Tensor]:
    """Forward and backward on one batch, part `part` of an optimiser step of accum_steps
    batches, and the update after the last part; the loss and top-1 count stay on the device."""
    accum = run.recipe.accum_steps
    last = part == accum - 1
    out_of_memory = False
    try:
        mixed = None
        if run.mixer.enabled:
            images, mixed = run.mixer(images, labels, run.state.step, part, run.context.rank)
        if part == 0:
            run.optimizer.zero_grad(set_to_none=True)
        with _gradient_sync(run, last):
            with run.autocast():
                logits = run.model(images)
                loss = mixed.loss(run.loss_fn, logits) if mixed else run.loss_fn(logits, labels)
            # Under DDP, the last part's backward also all-reduces the gradients, bucket by
            # bucket, overlapping the rest of the backward pass; after it every process holds
            # the same averaged gradients. Dividing by accum makes the sum of the parts' gradients
            # the gradient of the mean loss over the step's images.
            run.scaler.scale(loss / accum if accum > 1 else loss).backward()
        if last:
            _update(run)
    except Exception as error:
        if not is_out_of_memory(error):
            _raise_compile_failure(run, error)
            raise
        # Handled below, outside `except`, where the error's traceback (which holds the
        # failed step's tensors) is gone; so are the step's outputs and autograd graph.
        out_of_memory, logits, loss = True, None, None
    if out_of_memory:
        raise _out_of_memory(run, images, labels)
    correct = mixed.correct(logits.detach()) if mixed else \
        (logits.detach().argmax(dim=1) == labels).sum()
    return loss.detach().float(), correct


def _gradient_sync(run: Run, last: bool):
    """DDP's no_sync for every part of a step but the last: the gradients add up locally and
    are all-reduced once."""
    no_sync = getattr(run.model, "no_sync", None)
    if last or not run.context.distributed or no_sync is None:
        return contextlib.nullcontext()
    return no_sync()


def _update(run: Run) -> None:
    """The optimiser step on the accumulated gradients: clipped first when asked, the EMA after."""
    if run.recipe.clip_grad:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not fp16's scaled ones
        torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), run.recipe.clip_grad)
    run.scaler.step(run.optimizer)  # fp16: skipped when the scaled gradients hold inf/NaN
    run.scaler.update()
    if run.ema is not None:
        run.ema.update(run.raw_model, run.state.step + 1)


def _read_back(run: Run, epoch: int, pending: list, seconds: float) -> str | None:
    """Log the pending steps, and decide together whether to stop: a NaN, a signal, max steps."""
    state, context = run.state, run.context
    count = len(pending)
    # One all-reduce for all of it: per-step loss sums and top-1 counts, then the stop flags.
    packed = torch.cat([torch.stack([p[2] for p in pending]),
                        torch.stack([p[3] for p in pending]).float(), _signal_flags(run)])
    values = dist_.all_reduce(packed, context).tolist()  # .tolist(): the CPU waits here
    batch = run.recipe.step_batch
    losses = [v / context.world_size for v in values[:count]]
    top1s = [v / batch for v in values[count:2 * count]]
    bad = next((i for i, value in enumerate(losses) if not math.isfinite(value)), None)
    if bad is not None:
        _stop_on_nan(run, pending[bad][0], losses[bad], epoch)
    totals = state.epoch_totals
    for (step, lr, _, _), loss, top1 in zip(pending, losses, top1s):
        totals["loss"] = totals.get("loss", 0.0) + loss
        totals["top1"] = totals.get("top1", 0.0) + top1
        totals["batches"] = totals.get("batches", 0) + 1
        record = {"event": "step", "epoch": epoch + 1, "step": step + 1, "loss": loss,
                  "top1": top1, "lr": lr, "images_per_s": count * batch / seconds}
        if run.log is not None:
            run.log.write(record)
        if run.tensorboard is not None:
            run.tensorboard.write(record)
    if run.log is not None:
        run.log.flush()  # `tail -f metrics.jsonl` follows the run
    run.display.update(Progress(epoch + 1, run.recipe.epochs,
                                state.batch_in_epoch // run.recipe.accum_steps,
                                run.steps_per_epoch, batch, losses[-1], top1s[-1],
                                count * batch / seconds, pending[-1][1]))
    stopped = _signal_name(values[-2:])
    if stopped:
        return stopped
    if run.config.max_steps is not None and state.step >= run.config.max_steps:
        return "max-steps"
    return None


def _signal_flags(run: Run) -> Tensor:
    """[SIGINT received, SIGTERM received] in this process, to be summed over all of them."""
    names = ("SIGINT", "SIGTERM")
    return torch.tensor([float(run.stop.signal_name == name) for name in names], device=run.device)


def _signal_name(summed_flags: list[float]) -> str | None:
    """The signal that any process received, once the flags are summed; None when none did."""
    sigint, sigterm = summed_flags[-2:]
    return "SIGINT" if sigint else "SIGTERM" if sigterm else None


def _log_epoch(run: Run, record: dict) -> None:
    """The epoch's record into metrics.jsonl and TensorBoard, and metrics.csv rewritten from the
    history (which a resumed run cut back to its checkpoint)."""
    if run.log is None:
        return
    run.log.write(record)
    run.log.flush()
    write_csv(run.state.history, run.out / "metrics.csv")
    if run.tensorboard is not None:
        run.tensorboard.write(record)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _epoch_record(run: Run, epoch: int, val: dict, seconds: float) -> dict:
    totals = run.state.epoch_totals
    batches = max(1, totals.get("batches", 0))
    return {"event": "epoch", "epoch": epoch + 1, "step": run.state.step,
            "train_loss": totals.get("loss", math.nan) / batches,
            "train_top1": totals.get("top1", math.nan) / batches,
            "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
            "lr": run.schedule(max(0, run.state.step - 1)), "seconds": seconds}


# -- evaluation -----------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, loader, context: dist_.Context, config,
             kept: str | None = None) -> dict:
    """Mean loss, top-1 and top-5 over the whole split: each process counts its shard, then the
    counts are summed over processes (the raw model: DDP's forward would sync buffers). Out of
    memory is SK611 (naming a batch that fits and, for a run, `kept`: what its --out keeps)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=context.device)  # loss, top1, top5, n
    images = None
    try:
        for images, labels in D.batches(loader):
            images, labels = to_device(images, labels, context.device, config.channels_last)
            with autocast(context.device, config.precision):
                logits = model(images)
            loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            top1, top5 = topk_correct(logits, labels)
            totals += torch.stack([loss.double(), top1.double(), top5.double(),
                                   torch.tensor(float(len(labels)), dtype=torch.float64,
                                                device=context.device)])
        out_of_memory = False
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        out_of_memory = True  # handled below, once the failed batch's tensors are freed
    if out_of_memory:
        raise _evaluation_out_of_memory(model, images, context, config, kept)
    loss_sum, top1, top5, count = dist_.all_reduce(totals, context).tolist()  # sync point
    model.train(was_training)
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "top1": top1 / count, "top5": top5 / count,
            "images": int(count)}


def evaluate_checkpoint(config: EvalConfig) -> dict:
    """`skdsl eval`: the loss, top-1 and top-5 of a checkpoint (or of converted weights, or a
    state dict) on a source's validation split. An evaluation whose batch would not fit
    `config.memory_budget` bytes (None: what the device has) is refused before the model is
    built (SK621)."""
    with dist_.process_group(config.device) as context:
        state, saved = state_io.read_weights(config.checkpoint, state_io.CHECKPOINTS)
        trained = TrainConfig.from_dict(saved["config"]) if saved else TrainConfig("", "")
        if config.classes is None and trained.classes is not None:
            config = replace(config, classes=trained.classes)  # a fine-tuned run's class count
        spec, _ = _load_spec(config)
        _, spec_sha256 = ckpt.spec_fingerprint(spec)
        if saved is not None:
            state_io.check_spec(saved, config.checkpoint, spec_sha256)
        data = config.data or trained.data or "synthetic"
        seed = config.seed if config.seed is not None else (trained.seed or 0)
        _check_precision(config.precision, context)
        _check_batch(config.batch_size, context)
        source = open_data(data, spec, seed)
        batch = min(config.batch_size // context.world_size, max(1, len(source.val)))
        _guard_memory(spec, batch, config.precision, config.memory_budget, context,
                      task="inference")
        model = skdsl_compile(spec)
        if config.ema:
            state = _ema_weights(saved, config.checkpoint)
        state_io.load_weights(model, state, config.checkpoint, spec.name)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        model = model.to(context.device, memory_format=memory_format)
        loader = _val_loader(source.val, config.batch_size, _workers(config, context), context)
        results = evaluate(model, loader, context, config)
        return {**results, "data": data, "checkpoint": str(config.checkpoint),
                "epoch": saved["epoch"] if saved else None,
                "step": saved["step"] if saved else None}


def _ema_weights(saved: dict | None, path: str) -> dict:
    """`eval --ema`: the checkpoint's moving average of the weights (SK651 without one)."""
    if saved is None or saved.get("ema") is None:
        what = "a run trained without {ema}" if saved is not None else "weights alone"
        raise CheckpointError(f"'{path}' holds no moving average of the weights: it is {what}",
                              code="SK651", hint="leave out {ema}, or evaluate a checkpoint of "
                                                 "a run trained with {ema} DECAY")
    return saved["ema"]


def skdsl_compile(spec) -> nn.Module:
    from ..nn.compiler import compile as compile_network

    return compile_network(spec)


# -- checkpoints ----------------------------------------------------------------------------------


def save_checkpoint(run: Run, best: bool) -> None:
    """last.pt (and best.pt): every process takes part, since the RNG states are gathered; rank 0
    writes."""
    state = run.state
    rng = dist_.gather_objects(ckpt.rng_state(), run.context)  # a collective: all processes
    if not run.context.is_main:
        return
    payload = {
        "spec_name": run.spec.name, "spec_source": run.spec_source, "spec_json": run.spec_json,
        "spec_sha256": run.spec_sha256,
        "model": run.raw_model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(), "schedule": dict(vars(run.schedule)),
        "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch, "step": state.step,
        "best_top1": state.best_top1, "best_epoch": state.best_epoch,
        "history": state.history, "epoch_totals": state.epoch_totals,
        "rng": rng, "config": run.config.to_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
    }
    ckpt.save(payload, run.out / "last.pt")
    if best:
        ckpt.save(payload, run.out / "best.pt")


# -- trouble --------------------------------------------------------------------------------------


def _kept(run: Run) -> str:
    """What --out keeps when an error stops the run: last.pt as it was, or nothing."""
    last = run.out / "last.pt"
    return (f"{last} keeps the state after epoch {run.state.epoch}" if last.exists()
            else "no checkpoint was written before it")


def _stop_on_nan(run: Run, step: int, loss: float, epoch: int) -> None:
    raise TrainingError(f"the loss became {loss} at step {step + 1} (epoch {epoch + 1}): "
                        f"training stopped; {_kept(run)}", code="SK610",
                        hint="lower {lr}, add {warmup_epochs}, or train in {precision} fp32")


def _out_of_memory(run: Run, images: Tensor, labels: Tensor) -> TrainingError:
    """SK611 for a training step that ran out of memory (CUDA's or the CPU's), with a global
    batch size that does fit. The run stops without saving: last.pt stays as it was.

    The probe runs the unwrapped model (DDP's hooks would wait for the other processes), and
    the run ends after it, so the BatchNorm statistics it touches are never saved."""
    run.optimizer.zero_grad(set_to_none=True)

    def step(size: int) -> None:
        try:
            with run.autocast():
                loss = run.loss_fn(run.raw_model(images[:size]), labels[:size])
            loss.backward()
        finally:
            run.optimizer.zero_grad(set_to_none=True)

    fits = largest_fitting_batch(len(images), step, smallest=2)
    return _out_of_memory_error(run.device, "", run.recipe.batch_size, run.batch_per_process,
                                fits * run.context.world_size, 2, _kept(run))


def _evaluation_out_of_memory(model: nn.Module, images: Tensor | None, context: dist_.Context,
                              config, kept: str | None) -> TrainingError:
    """SK611 for an evaluation that ran out of memory, with a global batch size that fits
    (None: no batch was loaded to try one)."""
    fits = None
    if images is not None:
        def forward(size: int) -> None:
            with autocast(context.device, config.precision):
                model(images[:size].to(context.device))

        fits = largest_fitting_batch(len(images), forward, smallest=1) * context.world_size
    return _out_of_memory_error(context.device, " while evaluating", config.batch_size,
                                config.batch_size // context.world_size, fits, 1, kept)


def _out_of_memory_error(device: torch.device, doing: str, batch_size: int, per_process: int,
                         fits: int | None, smallest: int, kept: str | None) -> TrainingError:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    if fits:
        suggestion = f"try {{batch_size}} {fits}"
    elif fits is None:
        suggestion = "try a smaller {batch_size}"
    else:
        images = f"{smallest} images per process do not" if smallest > 1 else \
            "1 image per process does not"
        suggestion = f"even {images} fit: use a smaller network or input"
    stopped = f": training stopped; {kept}" if kept else ""
    return TrainingError(f"out of memory on {name}{doing} at {{batch_size}} {batch_size} "
                         f"({per_process} images per process){stopped}", code="SK611",
                         hint=f"{suggestion}; {{precision}} bf16 and {{channels_last}} also need "
                              f"less memory")


def largest_fitting_batch(size: int, attempt: Callable[[int], None], smallest: int) -> int:
    """Halve `size` until attempt(size) runs without running out of memory (a forward and
    backward pass, or a forward pass); 0 when not even `smallest` images do."""
    size //= 2
    while size >= smallest:
        _free_cuda_memory()
        try:
            attempt(size)
            return size
        except Exception as error:  # noqa: BLE001 - all but an allocation failure re-raised
            if not is_out_of_memory(error):
                raise
        size //= 2
    return 0


def _free_cuda_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _raise_compile_failure(run: Run, error: Exception) -> None:
    """torch.compile fails on the first call, deep inside dynamo or inductor: say so plainly."""
    if not run.config.compile or not type(error).__module__.startswith("torch._"):
        return
    raise TrainingError(f"{{compile}} failed: {type(error).__name__}: "
                        f"{str(error).strip().splitlines()[0][:200]}", code="SK612",
                        hint="train without {compile} (set SKDSL_DEBUG=1 for the details)") from error


class StopSignals:
    """SIGINT and SIGTERM ask the loop to stop at the next step boundary (saving last.pt); a
    second SIGINT stops at once. Handlers can be set in the main thread only; elsewhere the
    signals keep their usual meaning."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        with contextlib.suppress(ValueError):  # not the main thread
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame) -> None:
        if self.signal_name is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        self.signal_name = signal.Signals(number).name

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


# -- finishing ------------------------------------------------------------------------------------


def finish(run: Run, status: str) -> Result:
    """Tell how it ended: the summary table, the plot, the way to go on."""
    state = run.state
    last_val = None
    if state.history:
        last = state.history[-1]
        last_val = {"loss": last["val_loss"], "top1": last["val_top1"], "top5": last["val_top5"]}
    if run.context.is_main:
        _report(run, status)
    best = state.best_top1 if state.best_epoch is not None else None
    return Result(status, state.epoch, state.step, best, last_val, run.out, list(state.history))


def _report(run: Run, status: str) -> None:
    from rich.console import Console

    state, display = run.state, run.display
    resume, max_steps = display.spelled("resume"), display.spelled("max_steps")
    if state.history:
        Console(file=display.stream, width=console_width(display.stream),
                _environ=rich_environment()).print(
            summary_table(state.history, state.best_epoch), crop=False)
    if run.config.plot:
        plot_curves(read_metrics(run.out / "metrics.jsonl"), run.out / "curves.png")
        display.line(f"curves: {run.out / 'curves.png'}")
    where = f"epoch {state.epoch + 1}, batch {state.batch_in_epoch}"
    if status.startswith("SIG"):
        display.line(f"stopped by {status} at step {state.step} ({where}): saved "
                     f"{run.out / 'last.pt'}; continue with {resume}")
    elif status == "max-steps":
        display.line(f"stopped after {max_steps} {run.config.max_steps} ({where}): saved "
                     f"{run.out / 'last.pt'}; continue with {resume} and a larger {max_steps}")
    else:
        display.line(f"done: {counted(state.epoch, 'epoch')}, {counted(state.step, 'step')}; "
                     f"weights in {run.out / 'last.pt'} and {run.out / 'best.pt'}")


def _announce(run: Run) -> None:
    """The run's first lines (rank 0): how it runs, what it trains, on what, and where it
    resumes (display.banner_lines)."""
    if not run.context.is_main:
        return
    analysis = network_analysis(run.spec)
    params = sum(p.numel() for p in run.raw_model.parameters())
    facts = {"device": _device_name(run.device), "threads": run.threads,
             "world_size": run.context.world_size, "config": run.config, "recipe": run.recipe,
             "network": run.spec.name, "params": params,
             "mult_adds": analysis.mult_adds if analysis is not None else None,
             "input": tuple(run.spec.input) if run.spec.input else None,
             "source": run.source, "steps_per_epoch": run.steps_per_epoch}
    for line in banner_lines(facts):
        run.display.line(line)
    if run.state.step or run.state.epoch:
        run.display.line(f"resuming at epoch {run.state.epoch + 1}, step {run.state.step} "
                         f"(batch {run.state.batch_in_epoch} of the epoch) from "
                         f"{run.out / 'last.pt'}")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


# -- devices and numerics -------------------------------------------------------------------------


def autocast(device: torch.device, precision: str):
    """bf16 or fp16 autocast (matmuls and convolutions in low precision, reductions in fp32)."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def to_device(images: Tensor, labels: Tensor, device: torch.device,
              channels_last: bool) -> tuple[Tensor, Tensor]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, labels.to(device, non_blocking=True)


__all__ = ["train", "evaluate", "evaluate_checkpoint", "open_data", "Result", "Run", "State",
           "TrainingError", "StopSignals", "prepare", "train_epochs", "train_epoch",
           "save_checkpoint", "largest_fitting_batch", "autocast", "to_device", "AUTOCAST_DTYPES"]
