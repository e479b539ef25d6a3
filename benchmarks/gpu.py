"""Section g: throughput on a GPU (where one exists), bf16 autocast, channels_last.

Training (forward, backward, SGD step) and inference images per second at batch 256, eager and
torch.compile, for skdsl's compiled SKNet-50 and ResNeXt-50 and, when timm imports, timm's
skresnext50_32x4d and resnext50_32x4d, side by side in one run. Model FLOPs utilisation =
multiply-adds × 2 × images/s ÷ the measured bf16 matmul peak (× 3 for training: the backward
pass costs two forwards). Times are read after torch.cuda.synchronize(), so they cover the
kernels, not their launches. The polyphase lowering of dilated convolutions is measured too,
and the rule it suggests for `layers.POLYPHASE["cuda"]` is printed.

`gpu_section(settings, device="cpu", compile=False)` runs the same code on a CPU at a toy size:
tests/test_benchmarks.py does, so that this section cannot rot on machines without a GPU.
"""

from __future__ import annotations

import time

from benchmarks.model_speed import polyphase_rows
from benchmarks.suite import Section, Settings, build_compiled, timm_models


def gpu_section(settings: Settings, device: str = "cuda", compile: bool = True) -> Section:
    import torch

    section = Section("g", "GPU throughput (bf16 autocast, channels_last)")
    if device == "cuda" and not torch.cuda.is_available():
        section.notes = ["No GPU was available on this machine: the GPU rows (training and "
                         "inference throughput at batch 256, bf16, channels_last, eager and "
                         "torch.compile, MFU, and the polyphase rule for CUDA) were not "
                         "measured. `python benchmarks/run.py` measures them where "
                         "torch.cuda.is_available()."]
        section.data = {"available": False}
        return section
    name = torch.cuda.get_device_name() if device == "cuda" else f"{device} (logic check only)"
    peak = matmul_peak(device)
    models = {f"skdsl {settings.sknet.name}": build_compiled(settings.sknet),
              f"skdsl {settings.resnext.name}": build_compiled(settings.resnext)}
    timm, timm_note = timm_models() if settings.timm else ({}, "not in --quick")
    models.update({f"timm {key}": model for key, model in timm.items()})
    shape = tuple(next(iter(models.values())).graph.graph["input"])
    section.title = f"GPU throughput on {name} (bf16 autocast, channels_last, batch " \
                    f"{settings.gpu_batch})"
    section.headers = ["model", "compiled", "train img/s", "train MFU", "infer img/s",
                       "infer MFU"]
    iterations = 3 if settings.quick else 30
    for label, model in models.items():
        macs = _mult_adds(model, shape)
        model = model.to(device, memory_format=torch.channels_last)
        for compiled in ((False, True) if compile else (False,)):
            runnable = torch.compile(model) if compiled else model
            train = throughput(runnable, model, shape, settings.gpu_batch, device, True,
                               iterations)
            infer = throughput(runnable, model, shape, settings.gpu_batch, device, False,
                               iterations)
            section.rows.append([label, "yes" if compiled else "no", f"{train:,.0f}",
                                 f"{3 * 2 * macs * train / peak:.1%}", f"{infer:,.0f}",
                                 f"{2 * macs * infer / peak:.1%}"])
            section.data[(label, compiled)] = (train, infer)
        model.to("cpu")
        if device == "cuda":
            torch.cuda.empty_cache()
    for compiled in ((False, True) if compile else (False,)):
        sk = section.data[(f"skdsl {settings.sknet.name}", compiled)]
        rx = section.data[(f"skdsl {settings.resnext.name}", compiled)]
        suffix = ", torch.compile" if compiled else ", eager"
        section.ratios[f"SKNet ÷ ResNeXt time, train{suffix}"] = f"{rx[0] / sk[0]:.3f}×"
        section.ratios[f"SKNet ÷ ResNeXt time, inference{suffix}"] = f"{rx[1] / sk[1]:.3f}×"
    polyphase = polyphase_rows(settings, device=device, dtype=torch.bfloat16)
    section.notes = [f"measured bf16 matmul peak: {peak / 1e12:,.1f} TFLOP/s",
                     *([f"timm rows skipped: {timm_note}"] if timm_note else []),
                     "polyphase lowering of the dilated convolutions (lowered ÷ direct):",
                     *[f"  {row}" for row in polyphase["rows"]],
                     f"  rule this suggests for {device}: lower {polyphase['suggested'] or 'none'}"
                     f" (in use: {polyphase['in_use'] or 'none'}; skdsl/nn/layers.py POLYPHASE)"]
    section.data["polyphase"] = polyphase
    return section


def matmul_peak(device: str, size: int | None = None) -> float:
    """The bf16 matmul rate this device reaches (FLOP/s), from a large square product."""
    import torch

    size = size or (8192 if device == "cuda" else 256)
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(5):
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        _synchronize(device)
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * size**3 / best


def throughput(runnable, model, shape, batch: int, device: str, train: bool,
               iterations: int) -> float:
    """Images per second of training steps (SGD) or inference forwards, after warm-up."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(batch, *shape, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    model.train(train)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9) if train else None

    def once() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            if train:
                loss = F.cross_entropy(runnable(x).float(), labels)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                with torch.inference_mode():
                    runnable(x)

    for _ in range(3):  # warm-up (and compilation)
        once()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        once()
    _synchronize(device)  # the clock stops when the GPU has finished, not when it was told to
    return batch * iterations / (time.perf_counter() - start)


def _mult_adds(model, shape) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    graph = getattr(model, "graph", None)
    if graph is not None:
        from skdsl.core.analysis import analyze

        return analyze(graph).mult_adds
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape))
    return counter.get_total_flops() // 2


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


__all__ = ["gpu_section", "matmul_peak", "throughput"]
