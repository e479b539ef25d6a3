"""`skdsl doctor`: what a bug report needs, and a self-check that the install works.

    skdsl doctor            # versions, platform, device, threads, then six checks with times
    skdsl doctor --json     # the same as one JSON object (keys in docs/cli.md)

The self-check runs the whole pipeline on a tiny spec embedded here, in a few seconds on a CPU:
parse, analyse, compile, the analysis' parameters against sum(p.numel()) of the module, its
multiply-adds against torch's FlopCounterMode / 2, and one training step (forward, backward,
SGD) on random data. `diagnose()` gathers it all as plain data and `text_lines` writes it out;
the command is skdsl/commands/doctor.py (exit status 0 when every check passes, else 1).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable

from ..base.machine import cpu_name

# The self-check's network: every kind of layer SKNet has (stem conv, an SK unit with its
# projection shortcut, pool, fc), small enough to train a step in well under a second.
TINY_SPEC = """\
use "std/resnext.sk"

network doctor_tiny:
    input 3x32x32
    classes 10
    stage stem: conv 3x3, 16
    stage body: sk_unit(16, 32, stride=2, G=4, r=4, L=8) x1
    stage head:
        avgpool global
        fc classes
"""
TRAINING_BATCH = 4  # an SK unit's BatchNorm needs at least 2 images

# (distribution, module it installs): what skdsl needs, then the optional extras it can use
REQUIRED = (("torch", "torch"), ("pydantic", "pydantic"), ("lark", "lark"),
            ("networkx", "networkx"), ("rich", "rich"), ("numpy", "numpy"))
EXTRAS = (("pillow", "PIL"), ("matplotlib", "matplotlib"), ("onnx", "onnx"),
          ("onnxscript", "onnxscript"), ("timm", "timm"), ("tensorboard", "tensorboard"))

def diagnose() -> dict:
    """Everything `skdsl doctor` prints, as plain data (the --json output)."""
    from ..version import __version__

    checks = [asdict(check) for check in self_check()]
    return {
        "skdsl": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: installed_version(name, module) for name, module in REQUIRED},
        "extras": {name: installed_version(name, module) for name, module in EXTRAS},
        "device": devices(),
        "threads": threads(),
        "checks": checks,
        "ok": all(check["status"] == "ok" for check in checks),
    }


def installed_version(distribution: str, module: str) -> str | None:
    """The installed version, without importing the package; None when it is absent."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "installed, version unknown"  # importable, but not from a distribution


def devices() -> dict:
    """The CPU, every CUDA GPU (name, memory, compute capability) and Apple's MPS."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            gpus.append({"index": index, "name": properties.name,
                         "memory_gib": round(properties.total_memory / 2**30, 1),
                         "capability": f"{properties.major}.{properties.minor}"})
    mps = getattr(torch.backends, "mps", None)
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "cuda": gpus,
            "cuda_version": torch.version.cuda,
            "mps": bool(mps is not None and mps.is_available())}


def threads() -> dict:
    """The threads torch will use, and the cores this process may run on."""
    import torch

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
            "affinity": affinity, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


# -- the self-check ------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    status: str  # "ok", "FAIL", or "skipped" (an earlier check it needs failed)
    seconds: float
    detail: str


def self_check() -> list[Check]:
    """Each step of the pipeline on TINY_SPEC, in order; a step after a failure is skipped."""
    state: dict = {}
    steps: list[tuple[str, Callable[[dict], str]]] = [
        ("parse", _parse), ("analyse", _analyse), ("compile", _compile),
        ("parameters", _parameters_agree), ("multiply-adds", _mult_adds_agree),
        ("training step", _training_step)]
    results, failed = [], False
    for name, step in steps:
        if failed:
            results.append(Check(name, "skipped", 0.0, "an earlier check failed"))
            continue
        start = time.perf_counter()
        try:
            detail, status = step(state), "ok"
        except Exception as error:  # noqa: BLE001 - a failed check is reported, not raised
            detail, status, failed = f"{type(error).__name__}: {error}", "FAIL", True
        results.append(Check(name, status, round(time.perf_counter() - start, 3), detail))
    return results


class CheckFailed(Exception):
    """A self-check found two numbers that must agree and do not."""


def _parse(state: dict) -> str:
    from ..lang.loading import parse

    state["spec"] = parse(TINY_SPEC, file="<doctor>")
    return f"{state['spec'].name}: {len(state['spec'].stages)} stages"


def _analyse(state: dict) -> str:
    from ..core.analysis import analyze

    state["analysis"] = analysis = analyze(state["spec"])
    return f"{analysis.params:,} params, {analysis.mult_adds:,} multiply-adds"


def _compile(state: dict) -> str:
    from .compiler import compile as compile_network

    state["model"] = compile_network(state["spec"])
    return f"{type(state['model']).__name__} with {len(list(state['model'].modules()))} modules"


def module_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _parameters_agree(state: dict) -> str:
    counted, analysed = module_parameters(state["model"]), state["analysis"].params
    if counted != analysed:
        raise CheckFailed(f"sum(p.numel()) is {counted:,}, the analysis says {analysed:,}")
    return f"sum(p.numel()) = {counted:,} = the analysis"


def flop_counter_mult_adds(model, spec) -> float:
    """torch's FlopCounterMode total / 2 for one image in eval mode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *spec.input))
    return counter.get_total_flops() / 2


def _mult_adds_agree(state: dict) -> str:
    counted = flop_counter_mult_adds(state["model"], state["spec"])
    analysed = state["analysis"].mult_adds
    if counted != analysed:
        raise CheckFailed(f"FlopCounterMode / 2 is {counted:,g}, the analysis says {analysed:,}")
    return f"FlopCounterMode / 2 = {analysed:,} = the analysis"


def _training_step(state: dict) -> str:
    import torch

    model, spec = state["model"], state["spec"]
    generator = torch.Generator().manual_seed(0)  # random data without touching torch's seed
    images = torch.randn(TRAINING_BATCH, *spec.input, generator=generator)
    labels = torch.randint(0, spec.classes, (TRAINING_BATCH,), generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    if not torch.isfinite(loss):
        raise CheckFailed(f"the loss is {loss.item()}")
    unchanged = sum(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    if unchanged:
        raise CheckFailed(f"{unchanged} parameter tensors did not change after an SGD step")
    return f"batch {TRAINING_BATCH}, loss {loss.item():.3f}, every parameter updated"


# -- text ----------------------------------------------------------------------------------------


def text_lines(findings: dict) -> list[str]:
    """The human-readable report: one line per fact, one per check."""
    def listed(versions: dict) -> str:
        return ", ".join(f"{name} {version or 'absent'}" for name, version in versions.items())

    device, thread = findings["device"], findings["threads"]
    gpus = "; ".join(f"cuda:{g['index']} {g['name']}, {g['memory_gib']} GiB, capability "
                     f"{g['capability']}" for g in device["cuda"]) or "no CUDA GPU"
    lines = [
        f"skdsl {findings['skdsl']}, Python {findings['python']}",
        f"packages: {listed(findings['packages'])}",
        f"extras: {listed(findings['extras'])}",
        f"platform: {findings['platform']}",
        f"cpu: {device['cpu']}, {device['cpu_count']} logical cores",
        f"gpu: {gpus}" + (f" (CUDA {device['cuda_version']})" if device["cuda"] else "")
        + (", MPS available" if device["mps"] else ""),
        f"threads: torch {thread['torch']} (interop {thread['torch_interop']}), this process "
        f"may run on {thread['affinity'] or '?'} cores, OMP_NUM_THREADS "
        f"{thread['OMP_NUM_THREADS'] or 'unset'}",
        "self-check:",
    ]
    width = max(len(check["name"]) for check in findings["checks"])
    for check in findings["checks"]:
        lines.append(f"  {check['status']:<7} {check['name']:<{width}}  "
                     f"{check['seconds']:6.2f} s  {check['detail']}")
    total = sum(check["seconds"] for check in findings["checks"])
    failed = [check["name"] for check in findings["checks"] if check["status"] != "ok"]
    lines.append(f"all {len(findings['checks'])} checks passed in {total:.1f} s" if not failed
                 else f"FAILED: {', '.join(failed)} — please include this output in a bug report")
    return lines
