"""`python -m skdsl.commands.fuzz`: the fuzzers run against this command line. `--target spec`
(the default): the front-end fuzzer (skdsl/fuzz/spec.py), `skdsl check` and `skdsl build --json` on
every mutant; `--target cli`: the command-line fuzzer (skdsl/fuzz/cli.py), one command line of
any command per case, with its flags, values, environment and special files.

    python -m skdsl.commands.fuzz --count 10000 --seed 1
    python -m skdsl.commands.fuzz --target cli --count 10000 --seed 1

Exit status 0 when no case offended, 1 when some did: an internal error or a hang, and for the
command line also accepted garbage or a side effect (the first 50 saved under --save, each with
how to reproduce it, and every one listed in offenders.txt there).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ..fuzz import cli as cli_fuzz, spec as fuzz
from .program import build_parser
from .program import main as skdsl_main

TIMEOUTS = {"spec": 10.0, "cli": 20.0}
MEMORY_MB = {"spec": 2048, "cli": 8192}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    timeout = args.timeout if args.timeout is not None else TIMEOUTS[args.target]
    memory_mb = args.memory_mb if args.memory_mb is not None else MEMORY_MB[args.target]
    with _target(args.target, timeout) as target:
        what = "the front end" if args.target == "spec" else "the command line"
        print(f"fuzzing {what}: {args.count:,} {target.noun}, seed {args.seed}, "
              f"timeout {timeout:g} s", flush=True)
        report = lambda line: print(line, flush=True)  # noqa: E731 - a log read while it runs
        tally = fuzz.campaign(args.count, args.seed, timeout, skdsl_main, memory_mb, report,
                              target)
        print(f"tried {tally.tried:,}: {fuzz.summary(tally)}")
        if not tally.offenders:
            return 0
        for case in fuzz.save_offenders(tally, args.save, target=target)[:10]:
            first = (case / "OUTCOME.txt").read_text(encoding="utf-8").splitlines()
            print(f"  {case}: {first[0]}; {' '.join(first[3:5])[:160]}")
        print(f"every offender: {args.save / 'offenders.txt'}")
    return 1


@contextlib.contextmanager
def _target(name: str, timeout: float):
    if name == "spec":
        yield fuzz.SPEC
    else:
        with cli_fuzz.session(build_parser, timeout) as target:
            yield target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skdsl.commands.fuzz",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("spec", "cli"), default="spec",
                        help="what to fuzz: spec files (default) or command lines")
    parser.add_argument("--count", type=int, default=1000, help="cases to try (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds a case may take before it counts as a hang (default 10 "
                             "for spec, 20 for cli)")
    parser.add_argument("--memory-mb", type=int, default=None,
                        help="address-space limit of the worker and its cases (default 2048 "
                             "for spec, 8192 for cli)")
    parser.add_argument("--save", type=Path, default=Path("fuzz-offenders"),
                        help="folder for the offenders (default ./fuzz-offenders)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
