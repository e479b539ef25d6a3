"""`skdsl doctor`: versions, device and threads, and a self-check (skdsl/nn/doctor.py)."""

from __future__ import annotations

import argparse

from .output import to_json_text

EXIT_ALL_PASSED = 0
EXIT_A_CHECK_FAILED = 1


def register(commands) -> None:
    parser = commands.add_parser(
        "doctor", help="versions, device and threads, and a self-check, for bug reports",
        description="Print what a bug report needs (versions of skdsl, Python and the packages\n"
                    "it uses, optional extras, platform, CPU and GPUs, threads) and run a\n"
                    "self-check: parse, analyse and compile a tiny spec, check its counts\n"
                    "against torch, and train it one step.",
        epilog="examples:\n  skdsl doctor\n  skdsl doctor --json > doctor.json\n\n"
               "exit status: 0 every check passed; 1 a check failed (its line says why).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true",
                        help="one JSON object on stdout (its keys are in docs/cli.md)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..nn import doctor  # torch is imported when the self-check runs

    findings = doctor.diagnose()
    if args.json:
        print(to_json_text(findings))
    else:
        print("\n".join(doctor.text_lines(findings)))
    return EXIT_ALL_PASSED if findings["ok"] else EXIT_A_CHECK_FAILED
