"""Sections c, d and f: the compiled model's speed.

c. compiled SKNet-50 vs the plain-PyTorch reference (benchmarks/reference.py), weights copied
   and outputs checked first; forward (eval) and forward+backward (train), both memory formats;
   plus the compiled model as written (no in-place steps, no polyphase lowering), the BN-folded
   inference copy, and timm's skresnext50_32x4d when timm imports.
d. the price of selection: compiled SKNet-50 vs compiled ResNeXt-50, and the polyphase
   lowering of dilated convolutions measured at SKNet-50's shapes, stride 1 and strided.
f. torch.compile: graph breaks of the compiled SKNet (dynamo's explain), and the speed-up,
   measured in a subprocess bounded by a timeout (inductor builds C++ kernels on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchmarks import timing
from benchmarks.suite import (ROOT, Section, Settings, as_written, build_compiled,
                              build_reference, memory_format, timm_models)

MODES = ("eval", "train")


def _prepare(model, fmt: str, train: bool):
    return model.to(memory_format=memory_format(fmt)).train(train)


def _input(settings: Settings, shape, fmt: str):
    import torch

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(settings.batch, *shape, generator=generator)
    return x.contiguous(memory_format=memory_format(fmt))


def reference_section(settings: Settings) -> Section:
    import torch

    from skdsl.nn import compiler

    compiled = build_compiled(settings.sknet)
    reference = build_reference(settings, compiled)
    plain = build_compiled(settings.sknet)
    as_written(plain)
    shape = tuple(compiled.graph.graph["input"])
    compiled_params = sum(p.numel() for p in compiled.parameters())
    reference_params = sum(p.numel() for p in reference.parameters())
    check = torch.randn(2, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference.eval()(check)
        error = float((compiled.eval()(check) - expected).abs().max())
    timm, timm_note = timm_models() if settings.timm else ({}, "not in --quick")
    section = Section("c", f"Compiled {settings.sknet.name} vs the plain-PyTorch reference "
                           f"(batch {settings.batch}, {settings.threads} thread"
                           f"{'s' if settings.threads > 1 else ''})")
    section.headers = ["format", "mode", "reference", "compiled", "compiled as written",
                       "compiled, BN folded", "timm skresnext50_32x4d"]
    section.notes = [
        f"parameters: compiled {compiled_params:,}, reference {reference_params:,} "
        f"({'equal' if compiled_params == reference_params else 'DIFFERENT'}); outputs after "
        f"copying the weights differ by at most {error:.2e} (|output| up to "
        f"{float(expected.abs().max()):.3g})",
        "cells: median time of one call (its ratio to the reference in the same repeats); "
        "'as written' = no in-place steps and no polyphase lowering; 'BN folded' = "
        "compiler.fuse_bn (inference only)",
    ]
    if timm_note:
        section.notes.append(f"timm row skipped: {timm_note}")
    section.data = {"params": (compiled_params, reference_params), "max_abs_error": error}
    for fmt in settings.formats:
        x = _input(settings, shape, fmt)
        for mode in MODES:
            train = mode == "train"
            models = {"reference": reference, "compiled": compiled, "as written": plain}
            if not train:
                models["BN folded"] = compiler.fuse_bn(compiled)
            if "skresnext50_32x4d" in timm:
                models["timm"] = timm["skresnext50_32x4d"]
            calls = {name: timing.step(_prepare(model, fmt, train), x, train)
                     for name, model in models.items()}
            results = timing.compare(calls, settings.repeats)
            section.rows.append([fmt, mode] + [
                results[name].text() if name in results else "—"
                for name in ("reference", "compiled", "as written", "BN folded", "timm")])
            section.ratios[f"{fmt} {mode}"] = _with_cpu(results["compiled"], "≤ 1.0×")
            section.data[f"{fmt} {mode}"] = {name: (r.seconds, r.ratio)
                                             for name, r in results.items()}
    return section


def selection_section(settings: Settings) -> Section:
    from skdsl.nn import compiler

    sknet = build_compiled(settings.sknet)
    resnext = build_compiled(settings.resnext)
    direct = build_compiled(settings.sknet)
    _direct_convolutions(direct)
    import skdsl

    macs = skdsl.analyze(settings.sknet.load()).mult_adds / skdsl.analyze(
        settings.resnext.load()).mult_adds
    shape = tuple(sknet.graph.graph["input"])
    section = Section("d", f"The price of selection: {settings.sknet.name} ÷ "
                           f"{settings.resnext.name}, both compiled")
    section.headers = ["format", "mode", settings.resnext.name, settings.sknet.name,
                       "SK, dilated convs direct", "both BN folded"]
    section.notes = [f"multiply-adds ratio {macs:.3f}: the floor of the time ratio"]
    section.data = {"macs_ratio": macs}
    for fmt in settings.formats:
        x = _input(settings, shape, fmt)
        for mode in MODES:
            train = mode == "train"
            calls = {"resnext": timing.step(_prepare(resnext, fmt, train), x, train),
                     "sknet": timing.step(_prepare(sknet, fmt, train), x, train),
                     "direct": timing.step(_prepare(direct, fmt, train), x, train)}
            if not train:
                calls["resnext folded"] = timing.step(
                    _prepare(compiler.fuse_bn(resnext), fmt, False), x, False)
                calls["sknet folded"] = timing.step(
                    _prepare(compiler.fuse_bn(sknet), fmt, False), x, False)
            r = timing.compare(calls, settings.repeats)
            folded = (f"{r['sknet folded'].ratio / r['resnext folded'].ratio:.3f}×"
                      if not train else "—")
            section.rows.append([fmt, mode, _duration(r["resnext"].seconds),
                                 f"{_duration(r['sknet'].seconds)} ({r['sknet'].ratio:.3f}×)",
                                 f"{_duration(r['direct'].seconds)} ({r['direct'].ratio:.3f}×)",
                                 folded])
            section.ratios[f"{fmt} {mode}"] = _with_cpu(r["sknet"], "≤ 1.15×")
            section.data[f"{fmt} {mode}"] = {name: (t.seconds, t.ratio) for name, t in r.items()}
    polyphase = polyphase_rows(settings)
    section.notes.append("polyphase lowering of SKNet's dilated 3×3 convolutions, each alone "
                         "(time as lowered ÷ time direct; < 1 means the lowering pays):")
    section.notes += [f"  {row}" for row in polyphase["rows"]]
    section.notes.append(f"  rule this suggests for {polyphase['device']}: lower "
                         f"{polyphase['suggested'] or 'none'} (in use: "
                         f"{polyphase['in_use'] or 'none'}; skdsl/nn/layers.py POLYPHASE)")
    section.data["polyphase"] = polyphase
    return section


def _direct_convolutions(model) -> None:
    from skdsl.nn import layers

    for module in model.modules():
        if isinstance(module, layers.DilatedConv2d):
            module.lowering = "direct"


def polyphase_rows(settings: Settings, device: str = "cpu", dtype=None) -> dict:
    """Each distinct dilated convolution of the SKNet, direct vs polyphase, forward and
    forward+backward; and the per-device rule the measurements suggest."""
    import torch

    from skdsl.nn import layers

    model = build_compiled(settings.sknet)
    shapes = {}

    def record(module, args) -> None:
        shapes.setdefault(_conv_key(module, args[0]), (module, tuple(args[0].shape)))

    hooks = [module.register_forward_pre_hook(record) for module in model.modules()
             if isinstance(module, layers.DilatedConv2d)]
    with torch.no_grad():
        model.eval()(torch.randn(settings.batch, *model.graph.graph["input"]))
    for hook in hooks:
        hook.remove()
    rows, gains = [], {"stride1": [], "strided": []}
    for key, (module, shape) in shapes.items():
        kind = "stride1" if module.stride[0] == 1 else "strided"
        x = torch.randn(shape, device=device, dtype=dtype or torch.float32)
        x = x.contiguous(memory_format=torch.channels_last)
        convs = {}
        for lowering in ("direct", "polyphase"):
            conv = layers.DilatedConv2d(module.in_channels, module.out_channels,
                                        module.kernel_size, module.stride, module.padding,
                                        module.dilation,
                                        module.groups, bias=False, lowering=lowering)
            convs[lowering] = conv.to(device=device, dtype=x.dtype,
                                      memory_format=torch.channels_last)
        convs["polyphase"].load_state_dict(convs["direct"].state_dict())
        if not convs["polyphase"].polyphase_applies(shape):
            continue
        sync = torch.cuda.synchronize if device == "cuda" else None
        forward = timing.compare({name: timing.step(conv, x, False) for name, conv in
                                  convs.items()}, max(3, settings.repeats), synchronize=sync)
        x.requires_grad_(True)
        backward = timing.compare({name: (lambda conv=conv: conv(x).sum().backward())
                                   for name, conv in convs.items()}, max(3, settings.repeats),
                                  synchronize=sync)
        x.requires_grad_(False)
        gains[kind].append(backward["polyphase"].ratio)
        rows.append(f"{key} {kind}: forward {forward['polyphase'].ratio:.2f}×, "
                    f"forward+backward {backward['polyphase'].ratio:.2f}× "
                    f"(direct {_duration(backward['direct'].seconds)})")
    suggested = sorted(kind for kind, ratios in gains.items()
                       if ratios and sum(ratios) / len(ratios) < 0.95)
    return {"device": device, "rows": rows, "suggested": ", ".join(suggested),
            "in_use": ", ".join(sorted(layers.POLYPHASE.get(device, ())))}


def _conv_key(module, x) -> str:
    n, c, h, w = x.shape
    return f"C={c} {h}×{w} stride {module.stride[0]} dilation {module.dilation[0]}"


# -- f: torch.compile -------------------------------------------------------------------------


def compile_section(settings: Settings) -> Section:
    import torch

    model = build_compiled(settings.sknet)
    shape = tuple(model.graph.graph["input"])
    section = Section("f", f"torch.compile of the compiled {settings.sknet.name}")
    section.headers = ["mode", "graphs", "graph breaks", "compile time", "eager",
                       f"torch.compile ({settings.compile_backend})", "speed-up"]
    explained = {}
    for mode in MODES:
        model.train(mode == "train")
        x = torch.randn(2, *shape)
        torch._dynamo.reset()
        with torch.set_grad_enabled(mode == "train"):
            explanation = torch._dynamo.explain(model)(x)
        explained[mode] = (explanation.graph_count, explanation.graph_break_count,
                           [str(reason.reason) for reason in explanation.break_reasons][:3])
    torch._dynamo.reset()
    speed = _compiled_speed(settings)
    for mode in MODES:
        graphs, breaks, reasons = explained[mode]
        result = speed.get(mode, {"error": "speed not measured in --quick"})
        if "error" in result:
            section.rows.append([mode, str(graphs), str(breaks), "—", "—", "—",
                                 result["error"]])
            continue
        section.rows.append([mode, str(graphs), str(breaks), _duration(result["compile"]),
                             _duration(result["eager"]), _duration(result["compiled"]),
                             f"{result['eager'] / result['compiled']:.2f}×"])
        section.ratios[f"speed-up, {mode}"] = f"{result['eager'] / result['compiled']:.2f}×"
        if reasons:
            section.notes.append(f"{mode} graph breaks: {'; '.join(reasons)}")
    section.ratios["graph breaks"] = str(sum(e[1] for e in explained.values()))
    section.notes.append(
        f"graph breaks counted by torch._dynamo.explain at batch 2; speed at batch "
        f"{settings.batch}, channels_last, in a subprocess bounded by "
        f"{settings.compile_timeout} s per mode (compile time includes the first call)")
    section.data = {"explain": explained, "speed": speed}
    return section


def _compiled_speed(settings: Settings) -> dict:
    results = {}
    for mode in MODES[:1] if settings.quick else MODES:  # --quick: one subprocess, not two
        command = [sys.executable, "-m", "benchmarks.model_speed", "--compile-worker",
                   json.dumps({"quick": settings.quick, "threads": settings.threads,
                               "repeats": settings.repeats, "mode": mode,
                               "backend": settings.compile_backend})]
        # Inductor compiles in this process, not in a pool of workers that would still be
        # busy (or idle-spinning) while the compiled model is timed.
        environment = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": "1"}
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                  timeout=settings.compile_timeout, env=environment)
        except subprocess.TimeoutExpired:
            results[mode] = {"error": f"not measured: compiling took over "
                                      f"{settings.compile_timeout} s here"}
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            why = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
            results[mode] = {"error": f"torch.compile failed: {why}"}
            continue
        results[mode] = json.loads(lines[-1])
    return results


def _compile_worker(options: dict) -> None:
    """Run in a subprocess: eager vs torch.compile of the SKNet, one mode, JSON on stdout."""
    import torch

    from benchmarks.suite import Settings

    settings = (Settings.quick_settings if options["quick"] else Settings.full)(
        threads=options["threads"], repeats=options["repeats"])
    torch.set_num_threads(settings.threads)
    train = options["mode"] == "train"
    model = _prepare(build_compiled(settings.sknet), "channels_last", train)
    x = _input(settings, tuple(model.graph.graph["input"]), "channels_last")
    compiled = torch.compile(model, backend=options["backend"])
    start = time.perf_counter()
    timing.step(compiled, x, train)()
    compile_seconds = time.perf_counter() - start
    timing.step(compiled, x, train)()  # a second call: any lazy recompilation happens here
    r = timing.compare({"eager": timing.step(model, x, train),
                        "compiled": timing.step(compiled, x, train)}, settings.repeats)
    print(json.dumps({"compile": compile_seconds, "eager": r["eager"].seconds,
                      "compiled": r["compiled"].seconds}))


def _with_cpu(result: timing.Timing, goal: str) -> str:
    return f"{result.ratio:.3f}× (goal {goal}; in CPU time {result.cpu_ratio:.3f}×)"


def _duration(seconds: float) -> str:
    return timing.Timing(seconds, 1.0, 1).text().split(" (")[0]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--compile-worker":
        _compile_worker(json.loads(sys.argv[2]))


__all__ = ["reference_section", "selection_section", "compile_section", "polyphase_rows"]
