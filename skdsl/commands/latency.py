"""`skdsl latency calibrate | predict | check`: a device's latency model (skdsl/core/latency.py,
skdsl/nn/calibration.py, docs/latency.md)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from ..base.errors import CliError
from .arguments import add_overrides_argument, add_strict_argument, parse_overrides

EXAMPLES = """examples:
  skdsl latency calibrate                         this CPU, 1 thread, batch 1, fp32 (cached)
  skdsl latency calibrate --threads 2 --batch 8 --out cal.json
  skdsl latency predict specs/sknet50.sk          the time by stage, without building it
  skdsl latency check specs/sknet50.sk specs/resnext50_32x4d.sk --json
"""


def register(subparsers) -> argparse.ArgumentParser:
    latency = subparsers.add_parser(
        "latency", help="measure a device once, then predict networks' time without building them",
        description="A latency model per device: `calibrate` times the ops the compiler emits, "
                    "`predict` gives a spec's time from the graph alone (no torch), `check` "
                    "builds and times networks beside the prediction.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    actions = latency.add_subparsers(dest="latency_command", metavar="ACTION", required=True)
    calibrate = actions.add_parser("calibrate", help="time this device's ops (a minute or so)")
    _device_flags(calibrate)
    calibrate.add_argument("--out", metavar="FILE", help="where to write the calibration "
                           "(default: the cache folder, named after the device and settings)")
    calibrate.add_argument("--per-class", type=int, default=16, metavar="N",
                           help="shapes timed per op class (default 16)")
    calibrate.set_defaults(run=run_calibrate)
    for name, helper in (("predict", "a spec's predicted time by stage (no torch)"),
                         ("check", "build and time networks beside their prediction")):
        parser = actions.add_parser(name, help=helper)
        parser.add_argument("specs", metavar="SPEC", nargs="+",
                            help="a .sk file or a zoo model name")
        add_overrides_argument(parser, "of the specs that declare it")
        add_strict_argument(parser, "specs")
        parser.add_argument("--calibration", metavar="FILE",
                            help="a calibration file (default: the cached one of this device "
                                 "at 1 thread, batch 1, fp32)")
        if name == "check":
            parser.add_argument("--any-device", action="store_true",
                                help="time here with a calibration made on another device or "
                                     "torch (warned, not refused)")
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.set_defaults(run=run_predict if name == "predict" else run_check)
    return latency


def _device_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="intra-op threads (CPU; default 1, for stable times)")
    parser.add_argument("--batch", type=int, default=1, metavar="B", help="images per pass")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skdsl" / "latency"


def default_file(device) -> Path:
    """The cached calibration of a device and setting: one file each."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device.name).strip("-").lower() or "unknown"
    return cache_folder() / (f"{device.kind}-{slug}-{device.threads}t-b{device.batch}-"
                             f"{device.dtype}-torch{device.torch}.json")


def _positive(args, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, not "
                           f"{getattr(args, name)}", code="SK573")


MAX_PER_CLASS = 64  # beyond it a calibration times nearly every shipped shape: minutes for nothing


def _in_reach(args: argparse.Namespace) -> None:
    """SK573 for settings this machine cannot calibrate: more threads than cores, a batch whose
    largest op would not fit in memory, more shapes per class than MAX_PER_CLASS."""
    from ..core.resources import available_memory, format_size
    from ..core.latency import BYTES

    cores = os.cpu_count() or 1
    if args.threads > cores:
        raise CliError(f"--threads {args.threads}: this machine has {cores} cores", code="SK573",
                       hint=f"at most --threads {cores}")
    if args.per_class > MAX_PER_CLASS:
        raise CliError(f"--per-class {args.per_class}: at most {MAX_PER_CLASS}", code="SK573")
    largest = 2 * LARGEST_OP_ELEMENTS * args.batch * BYTES[args.dtype]  # and temporaries
    if largest > available_memory() // 2:
        raise CliError(f"--batch {args.batch}: the largest op timed would need "
                       f"{format_size(largest)}, more than half of the memory available "
                       f"({format_size(available_memory())})", code="SK573",
                       hint="a smaller batch")


# The most elements an op of the shipped specs reads and writes for one image
# (an upper bound of the calibration's memory, times the batch and the dtype's bytes).
LARGEST_OP_ELEMENTS = 4_194_304  # tests/nn/test_calibration.py checks it


def run_calibrate(args: argparse.Namespace) -> int:
    from ..nn import calibration as C

    _positive(args, "threads", "batch", "per_class")
    _in_reach(args)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CliError("--device cuda: no CUDA device here", code="SK573",
                           hint="calibrate the CPU (the default), or run on a machine with one")
    device = C.current_device(args.device, args.threads, args.batch, args.dtype)
    out = Path(args.out) if args.out else default_file(device)
    _writable(out)  # before a minute of timing, not after
    print(f"calibrating {device.text()}")

    def progress(name: str, index: int, total: int) -> None:
        print(f"\r  [{index:>3}/{total}] {name:<40}", end="", flush=True)

    calibration = C.calibrate(device, args.per_class, progress)
    print("\r" + " " * 52 + "\r", end="")
    try:
        calibration.save(out)
    except OSError as error:
        raise CliError(f"cannot write the calibration '{out}': {_reason(error)}",
                       code="SK574") from None
    timed = sum(len(model.measured) for model in calibration.classes.values())
    print(f"ok: {len(calibration.classes)} op classes, {timed} shapes timed; "
          f"{calibration.per_node * 1e6:.1f} µs per node, ×{calibration.in_network:.2f} in a "
          f"network; written to {out}")
    return 0


def _writable(out: Path) -> None:
    """SK574 unless `out` can be written (base/files.py's policy: a regular file or nothing
    yet); the cache folder is made."""
    from ..base import files

    if str(out) == "-":  # '-' is stdout elsewhere; a calibration is a file to read back
        raise CliError("--out -: a calibration is a file", code="SK574",
                       hint="name one, such as --out calibration.json")
    if out.is_dir():
        raise CliError(f"--out '{out}' is a folder: name the calibration file", code="SK574",
                       hint=f"such as --out {out / 'calibration.json'}")
    try:
        if out.parent == cache_folder():
            out.parent.mkdir(parents=True, exist_ok=True)
        files.check_writable(out)
    except OSError as error:
        raise CliError(f"cannot write the calibration '{out}': {_reason(error)}",
                       code="SK574") from None


def _reason(error: OSError) -> str:
    """A FileProblem's reason, else the OS's words."""
    return getattr(error, "reason", None) or error.strerror or str(error)


def _calibration(args: argparse.Namespace):
    from ..core import latency as T

    if args.calibration:
        return T.load_calibration(args.calibration), None
    path = _default_for_here()
    return T.load_calibration(path), path


def _default_for_here() -> Path:
    """This machine's cached calibration at 1 thread, batch 1, fp32 (without torch: the
    device is read from the cached files' names)."""
    folder = cache_folder()
    found = sorted(folder.glob("cpu-*-1t-b1-fp32-*.json")) if folder.is_dir() else []
    if not found:
        raise CliError("no calibration given, and none cached for this machine",
                       code="SK570", hint="run `skdsl latency calibrate` once, or pass "
                       "--calibration FILE")
    return found[-1]


def _specs(args: argparse.Namespace):
    from ..lang import zoo

    overrides = parse_overrides(args.overrides)
    return [zoo.load(name, overrides=overrides) for name in args.specs]


def run_predict(args: argparse.Namespace) -> int:
    from ..core import latency as T

    calibration, _ = _calibration(args)
    # Predicting for another machine is a use, not a mistake: said loudly, never refused.
    for difference in T.check_device(calibration, T.host_device(calibration), allow_other=True):
        print(f"warning: the calibration is not this machine's: {difference}", file=sys.stderr)
    results = [T.predict(spec, calibration) for spec in _specs(args)]
    if args.json:
        print(json.dumps([_prediction_json(p) for p in results], indent=1))
        return 0
    print(f"on {calibration.device.text()}")
    for prediction in results:
        print(f"{prediction.network}: {prediction.milliseconds:.2f} ms")
        for stage, seconds in prediction.stages.items():
            print(f"  {stage:<12} {seconds * 1e3:9.2f} ms")
        if prediction.fallbacks:
            print(f"  (roofline fallback for {', '.join(prediction.fallbacks)}: not calibrated)")
    return 0


def _prediction_json(prediction) -> dict:
    return {"network": prediction.network, "predicted_ms": prediction.milliseconds,
            "stages": {name: seconds * 1e3 for name, seconds in prediction.stages.items()},
            "fallbacks": list(prediction.fallbacks)}


def run_check(args: argparse.Namespace) -> int:
    from ..core import latency as T
    from ..nn import calibration as C

    calibration, _ = _calibration(args)
    device = calibration.device
    here = C.current_device(device.kind, device.threads, device.batch, device.dtype)
    for difference in T.check_device(calibration, here, allow_other=args.any_device):
        print(f"warning: the calibration differs: {difference}", file=sys.stderr)
    rows = []
    for spec in _specs(args):
        prediction = T.predict(spec, calibration)
        measured = C.time_network(spec, here)
        rows.append({**_prediction_json(prediction), "measured_ms": measured["total"] * 1e3,
                     "error": prediction.total / measured["total"] - 1,
                     "measured_stages": {name.removeprefix("stage "): seconds * 1e3
                                         for name, seconds in measured.items()
                                         if name != "total"}})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"on {here.text()}")
    print(f"{'network':<28} {'predicted':>10} {'measured':>10} {'error':>8}")
    for row in rows:
        print(f"{row['network']:<28} {row['predicted_ms']:>8.2f}ms {row['measured_ms']:>8.2f}ms "
              f"{row['error']:>+8.1%}")
        for stage, predicted in row["stages"].items():
            measured = row["measured_stages"].get(stage)
            if measured:
                print(f"  {stage:<26} {predicted:>8.2f}ms {measured:>8.2f}ms "
                      f"{predicted / measured - 1:>+8.1%}")
    return 0
