"""What recording costs: SKNet-50 forwards with and without the AttentionRecorder on all 16 units.

    OMP_NUM_THREADS=1 python docs/experiments/attention_cost.py [--batch 32] [--repeats 3]

Random weights and images at 224×224, one thread, eval mode, no_grad. Plain and recorded
forwards alternate, so a change in the machine's load touches both; times are this process's
CPU seconds, and the figures are the ratios of the fastest and of the median times. It also checks that no hook is left on any module once the recorder closes.
"""

import argparse
import statistics
import time

import torch

import skdsl
from skdsl.inspect.record import AttentionRecorder


def timed(model, images) -> float:
    """CPU seconds of this process: with one thread, the work done, and much less disturbed
    than the wall clock by other jobs on a shared machine."""
    start = time.process_time()
    model(images)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = skdsl.compile(skdsl.load("sknet50")).eval()
    images = torch.randn(args.batch, 3, 224, 224)
    plain, recorded = [], []
    with torch.no_grad():
        timed(model, images)  # warm-up: allocator and oneDNN primitives
        for _ in range(args.repeats):
            plain.append(timed(model, images))
            with AttentionRecorder(model) as recorder:
                recorded.append(timed(model, images))
            assert len(recorder.take()) == 16
    hooks = sum(len(module._forward_hooks) for module in model.modules())
    print(f"batch {args.batch} at 224×224, 1 thread, {args.repeats} repeats")
    for name, times in (("plain", plain), ("recorded", recorded)):
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(f"{name:<8} forward: fastest {min(times):.2f} s, median "
              f"{statistics.median(times):.2f} s  ({shown})")
    print(f"recorded / plain: fastest {min(recorded) / min(plain):.3f}, median "
          f"{statistics.median(recorded) / statistics.median(plain):.3f}; "
          f"forward hooks left after recording: {hooks}")


if __name__ == "__main__":
    main()
