"""`skdsl export`: a deployable inference artifact, checked against eager (skdsl/nn/export.py)."""

from __future__ import annotations

import os
from pathlib import Path

from ..base.errors import CliError
from .arguments import (add_command, add_input_argument, add_spec_argument, add_switches,
                        load_spec, parse_input_shape)

EPILOG = """\
examples:
  skdsl export specs/sknet50.sk --checkpoint runs/sknet50/best.pt --fuse-bn --output sknet50.pt2
  skdsl export specs/sknet26.sk --random-init --format torchscript --output sknet26.ts
  skdsl export specs/sknet50.sk --checkpoint best.pt --format onnx --output sknet50.onnx
"""


def register(subparsers) -> None:
    from ..nn.export import FORMATS  # no torch until an export runs

    parser = add_command(
        subparsers, "export", run,
        "write a deployable inference artifact (TorchScript, torch.export, ONNX)",
        "Compile a spec, load its weights, optionally fold BN into the convolutions,\n"
        "and write an inference artifact whose outputs are checked against the\n"
        "eager model (the largest absolute difference is printed).", EPILOG)
    add_spec_argument(parser)
    add_input_argument(parser)
    parser.add_argument("--checkpoint", metavar="FILE",
                        help="the weights: an skdsl checkpoint, a {'model': ...} dict or a "
                             "state dict")
    add_switches(parser, random_init="export the freshly initialised network (to try the pipeline)")
    parser.add_argument("--format", choices=FORMATS, default="exported",
                        help="exported (torch.export, the default), torchscript or onnx")
    add_switches(parser, fuse_bn="fold every batch norm into the convolution before it")
    parser.add_argument("--batch", type=int, default=1, metavar="N",
                        help="the batch size the artifact is checked at (default 1); it "
                             "takes any batch size")
    parser.add_argument("--output", "-o", metavar="PATH", required=True,
                        help="where to write the artifact")
    parser.add_argument("--classes", metavar="N", type=int,
                        help="replace the spec's `classes`, as `skdsl train --classes` did")
    parser.add_argument("--memory-budget", metavar="SIZE",
                        help="memory the export may use, such as 8GiB (default: what is "
                             "available); checks that would not fit are refused before they "
                             "start")


def run(args) -> int:
    """Export as the flags say; print what was written and how closely it matches eager."""
    from ..nn import export
    from ..core.resources import parse_budget

    _check_flags(args)
    budget = parse_budget(args.memory_budget)
    output = Path(args.output)
    if args.output == "-":
        raise CliError("--output -: an export is a file, which skdsl loads back to check",
                       code="SK535", hint="name a file, such as "
                                          f"model{export.SUFFIXES[args.format]}")
    if os.path.isdir(output):  # os.path's: False, not OSError, for a name too long
        raise CliError(f"--output '{output}' is a directory", code="SK535",
                       hint=f"name a file, such as "
                            f"{output / ('model' + export.SUFFIXES[args.format])}")
    export.check_writable(output)
    if args.format == "onnx":
        export.require_onnx()
    input_shape = parse_input_shape(args.input)
    spec = load_spec(args, num_classes=args.classes)
    result = export.export(spec, output, args.format, checkpoint=args.checkpoint,
                           fuse=args.fuse_bn, input_shape=input_shape, batch=args.batch,
                           memory_budget=budget)
    print(result.summary())
    return 0


def _check_flags(args) -> None:
    if (args.checkpoint is None) == (not args.random_init):
        raise CliError("name the weights with --checkpoint FILE, or pass --random-init to "
                       "export an untrained network" if args.checkpoint is None else
                       "--checkpoint and --random-init do not go together", code="SK530")
    if args.batch < 1:
        raise CliError(f"--batch {args.batch}: the batch size must be at least 1", code="SK530")
    if args.classes is not None and args.classes < 1:
        raise CliError(f"--classes {args.classes}: must be at least 1", code="SK530")
