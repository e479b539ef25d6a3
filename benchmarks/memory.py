"""Section e: peak memory of one training step, compiled vs reference.

On a CPU, torch's allocations are plain malloc calls that tracemalloc does not see and torch
keeps no statistics of, so the operating system counts: each model runs in a fresh process
(`python -m benchmarks.memory WORKER-OPTIONS`) that builds the model and its input batch, runs
one warm-up step (so that lazily allocated buffers exist on both sides), drops the gradients,
resets the kernel's peak-RSS mark (`echo 5 > /proc/self/clear_refs`, Linux ≥ 4.0), reads the
resident set size, runs one forward+backward and reads the peak (VmHWM). The difference is the
step's peak. MALLOC_MMAP_THRESHOLD_ is pinned to 64 KiB so that glibc maps every tensor-sized
block directly and unmaps it on free: resident memory then follows the live tensors instead of
glibc's free lists. Where clear_refs cannot be written, the peak is ru_maxrss after the step,
without the warm-up (the method is named in the results).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys

from benchmarks.suite import ROOT, Section, Settings

MODELS = ("reference", "compiled", "compiled as written")


def memory_section(settings: Settings) -> Section:
    section = Section("e", "Peak memory of one training step (forward + backward)")
    formats = settings.formats[:1] if settings.quick else settings.formats
    section.headers = ["format"] + [f"{model} (MiB)" for model in MODELS] + ["compiled ÷ reference"]
    methods = set()
    for fmt in formats:
        results = {model: _measure(settings, model, fmt) for model in MODELS}
        methods.update(result["method"] for result in results.values())
        peaks = {model: result["peak"] / 2**20 for model, result in results.items()}
        ratio = peaks["compiled"] / peaks["reference"]
        section.rows.append([fmt] + [f"{peaks[model]:,.1f}" for model in MODELS]
                            + [f"{ratio:.3f}×"])
        section.ratios[fmt] = f"{ratio:.3f}×"
        section.data[fmt] = peaks
    section.notes = [
        f"batch {settings.batch}; each number is one fresh process; method: "
        + "; ".join(sorted(methods)),
        "'as written' = no in-place steps and no polyphase lowering",
    ]
    return section


def _measure(settings: Settings, model: str, fmt: str) -> dict:
    options = {"quick": settings.quick, "threads": settings.threads, "model": model,
               "format": fmt}
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", json.dumps(options)],
                          cwd=ROOT, capture_output=True, text=True, env=environment,
                          timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"memory worker failed: {done.stderr.strip()[-500:]}")
    return json.loads(lines[-1])


def _rss(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _worker(options: dict) -> None:
    import torch

    from benchmarks import timing
    from benchmarks.suite import (as_written, build_compiled, build_reference, memory_format)

    settings = (Settings.quick_settings if options["quick"] else Settings.full)(
        threads=options["threads"])
    torch.set_num_threads(settings.threads)
    compiled = build_compiled(settings.sknet)
    if options["model"] == "reference":
        model = build_reference(settings, compiled)
    else:
        model = compiled
        if options["model"] == "compiled as written":
            as_written(model)
    fmt = memory_format(options["format"])
    model = model.to(memory_format=fmt).train()
    del compiled
    x = torch.randn(settings.batch, *settings.sknet.load().input).contiguous(memory_format=fmt)
    step = timing.step(model, x, train=True)  # drops the gradients after backward
    try:
        step()  # warm-up
        gc.collect()
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        before = _rss("VmRSS")
        step()
        peak = _rss("VmHWM") - before
        method = "VmHWM after clear_refs minus VmRSS before the step, after a warm-up step"
    except OSError:
        gc.collect()
        before = _rss("VmRSS") if os.path.exists("/proc/self/status") else 0
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        method = "ru_maxrss after the step minus RSS before it"
    print(json.dumps({"peak": peak, "method": method}))


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))


__all__ = ["memory_section"]
