"""`python -m skdsl.commands.fuzz`: the front-end fuzzer (skdsl/fuzz.py) run against this
command line, `skdsl check` and `skdsl build --json` on every mutant.

    python -m skdsl.commands.fuzz --count 10000 --seed 1

Exit status 0 when every mutant ended in a spec or a located error, 1 when some ended in an
internal error or a hang (the first 50 saved under --save, each with how to reproduce it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import fuzz
from .program import main as skdsl_main


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    print(f"fuzzing the front end: {args.count:,} mutants, seed {args.seed}, "
          f"timeout {args.timeout:g} s")
    tally = fuzz.campaign(args.count, args.seed, args.timeout, skdsl_main, args.memory_mb)
    print(f"tried {tally.tried:,}: {fuzz.summary(tally)}")
    if not tally.offenders:
        return 0
    for case in fuzz.save_offenders(tally, args.save)[:10]:
        first = (case / "OUTCOME.txt").read_text(encoding="utf-8").splitlines()
        print(f"  {case}: {first[0]}; {' '.join(first[3:5])[:160]}")
    return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skdsl.commands.fuzz",
                                     description=fuzz.__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="mutants to try (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds a mutant may take before it counts as a hang (default 10)")
    parser.add_argument("--memory-mb", type=int, default=2048,
                        help="address-space limit of the worker (default 2048)")
    parser.add_argument("--save", type=Path, default=Path("fuzz-offenders"),
                        help="folder for the offenders (default ./fuzz-offenders)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
