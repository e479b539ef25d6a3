"""Seeds side by side: the markdown tables of docs/experiments/attention.md from the
attention.json files that `skdsl inspect attention --out DIR` wrote, one per seed.

    python docs/experiments/attention_seeds.py runs/attn/tiny32-seed*-render/attention.json

Per unit: the mean difference d at the first scale (averaged over seeds), the paired change
Δ(s) = d(s) − d(first scale) of each seed, the largest standard error of those, the signs per
seed and scale, the share of images whose change at the last scale is positive, that change over the images recognised at every scale; then the
top-1 at each scale of each seed.
"""

import json
import sys


def scale_text(scale: float) -> str:
    return f"{scale:.1f}×"


def _sign(value: float) -> str:
    return "+" if value > 0 else "−"


def _recognised(change: dict) -> str:
    """The last scale's change over the images recognised at every scale, and their count."""
    mean = change["mean"][-1]
    return f"{mean:+.4f} (n={change['images']})" if mean is not None else "none"


def main(paths: list[str]) -> None:
    results = [json.loads(open(path, encoding="utf-8").read()) for path in paths]
    scales = results[0]["scales"]
    seeds = range(len(results))
    print(f"{results[0]['spec']}, protocol {results[0]['protocol']}, "
          f"{results[0]['images']} images, {len(results)} seeds\n")
    header = ["unit", "fields", f"d({scale_text(scales[0])})"]
    header += [f"Δ({scale_text(s)}) per seed" for s in scales[1:]]
    header += ["largest s.e.", "signs", f"share > 0 at {scale_text(scales[-1])}",
               f"Δ({scale_text(scales[-1])}), recognised"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for index, unit in enumerate(results[0]["units"]):
        per_seed = [result["units"][index] for result in results]
        reference = sum(u["difference"]["mean"][0] for u in per_seed) / len(per_seed)
        cells = [unit["name"], "/".join(f"{f[0]}×{f[1]}" for f in unit["fields"]),
                 f"{reference:+.4f}"]
        for s in range(1, len(scales)):
            cells.append(", ".join(f"{u['change']['mean'][s]:+.4f}" for u in per_seed))
        cells.append(f"{max(e for u in per_seed for e in u['change']['stderr']):.4f}")
        cells.append(" ".join("".join(_sign(u["change"]["mean"][s]) for u in per_seed)
                              for s in range(1, len(scales))))
        cells.append(", ".join(f"{u['change']['positive'][-1]:.0%}" for u in per_seed))
        cells.append(", ".join(_recognised(u["change_recognised"]) for u in per_seed))
        print("| " + " | ".join(cells) + " |")
    print()
    print("| seed | " + " | ".join(f"top-1 at {scale_text(s)}" for s in scales) + " |")
    print("|---|" + "---|" * len(scales))
    for seed, result in zip(seeds, results):
        print(f"| {seed} | " + " | ".join(f"{a:.1%}" for a in result["accuracy"]) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
