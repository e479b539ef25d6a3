"""Intra-op threads for `skdsl train` on a CPU: the default against one thread and torch's own.

    python benchmarks/threads.py [--steps 12] [--repeats 3] [--batch 64]

Each candidate trains specs/sknet_tiny.sk (SGD steps at batch 64 of 32×32 images) in a fresh
process, since OpenMP reads its settings once per process. Candidates alternate within each
repeat, and every figure is the median over repeats of img/s ÷ the one-thread img/s *of the same
repeat*, so load that comes and goes slows both sides of a ratio. Two conditions: as the
machine is now ("quiet"; on a shared machine other people's work runs too), and beside a busy
neighbour: one extra process spinning on a core for the whole condition ("loaded").

Candidates: `1 thread`; `default`, skdsl's choice as `skdsl train` makes it (skdsl/train/
threads.py: affinity ÷ local processes, and OpenMP's passive waiting); `default, spinning`, the
same thread count with libgomp's default spin-waiting; `torch default`, torch's own thread count
and waiting. Speed belongs here, never in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "sknet_tiny.sk"


def child(threads: int | None, steps: int, batch: int) -> None:
    """Train `steps` SGD steps with `threads` intra-op threads (None: torch's default); print img/s."""
    import torch

    import skdsl
    from skdsl.train.threads import default_threads

    if threads == 0:
        threads = default_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = skdsl.compile(skdsl.load(str(SPEC))).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, labels = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up: allocator, OpenMP pool
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    print(json.dumps({"images_per_s": steps * batch / seconds,
                      "threads": torch.get_num_threads()}))


# name: (--child value, OMP_WAIT_POLICY or None for libgomp's default)
CANDIDATES = {"1 thread": ("1", None), "default": ("0", "PASSIVE"),
              "default, spinning": ("0", None), "torch default": ("none", None)}


def measure(name: str, steps: int, batch: int) -> dict:
    threads, policy = CANDIDATES[name]
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    environment["PYTHONPATH"] = str(ROOT)
    if policy:
        environment["OMP_WAIT_POLICY"] = policy
    command = [sys.executable, __file__, "--child", threads, "--steps", str(steps),
               "--batch", str(batch)]
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def condition(label: str, repeats: int, steps: int, batch: int) -> None:
    names = list(CANDIDATES)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    threads: dict[str, int] = {}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            result = measure(name, steps, batch)
            speeds[name].append(result["images_per_s"])
            threads[name] = result["threads"]
    baseline = speeds["1 thread"]
    print(f"\n{label}")
    print(f"  {'candidate':<19}{'threads':>8}{'img/s (median)':>16}{'÷ 1 thread':>12}")
    for name in names:
        ratio = statistics.median(s / b for s, b in zip(speeds[name], baseline))
        print(f"  {name:<19}{threads[name]:>8}{statistics.median(speeds[name]):>16.1f}"
              f"{ratio:>12.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--conditions", default="quiet,loaded", help="quiet, loaded or both")
    args = parser.parse_args()
    if args.child is not None:
        child(None if args.child == "none" else int(args.child), args.steps, args.batch)
        return
    from skdsl.train.threads import available_cores, local_processes

    print(f"{available_cores()} cores in this process's affinity, {local_processes()} local "
          f"process(es); load average now {os.getloadavg()[0]:.1f}")
    conditions = args.conditions.split(",")
    if "quiet" in conditions:
        condition("quiet (as the machine is now)", args.repeats, args.steps, args.batch)
    if "loaded" not in conditions:
        return
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        condition("loaded (beside a process spinning on one core)", args.repeats, args.steps,
                  args.batch)
    finally:
        neighbour.kill()
        neighbour.wait()


if __name__ == "__main__":
    main()
