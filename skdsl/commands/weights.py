"""`skdsl weights convert` and `skdsl weights export`: published weights mapped onto a spec's
module and back (skdsl/nn/weights.py)."""

from __future__ import annotations

import argparse

from ..base.errors import CliError
from .arguments import add_spec_argument, load_spec

_OUTPUT = ("the output loads with model.load_state_dict(torch.load(OUT, weights_only=True)), or "
           "safetensors.torch.load_file(OUT) when written as safetensors")


def register(subparsers) -> argparse.ArgumentParser:
    """Add `skdsl weights convert|export` to the CLI's subcommands."""
    from ..nn.weight_rules import FAMILIES  # no torch: the rule tables

    weights = subparsers.add_parser(
        "weights", help="convert published weights to a spec's compiled module, and back",
        description="Weights of other libraries, mapped onto the compiled module of a spec, "
                    "and back.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  skdsl weights convert --from timm specs/sknet50.sk "
               "skresnext50_32x4d.pth sknet50.pt\n  skdsl weights export --to timm "
               "specs/sknet50.sk sknet50.pt skresnext50_32x4d.safetensors")
    actions = weights.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    families = "\n".join(f"  {f.name}: {f.model_list} -> specs of {f.defined_in}{f.built_of}"
                         for f in FAMILIES["timm"])
    convert = actions.add_parser(
        "convert", help="map a foreign state dict onto a spec (all tensors, or an error)",
        description="Map a state dict of timm's ResNeXt, SE-ResNeXt, SK-ResNeXt or SK-ResNet(-D) "
                    "(or of a family a rule file describes) onto the compiled module of SPEC. "
                    "Every tensor must land on parameters or buffers of its shape; otherwise "
                    "each misfit is named and nothing is written (exit status 2).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"families (timm):\n{families}\n{_OUTPUT}")
    convert.add_argument("--from", dest="origin", required=True, metavar="LIBRARY",
                         help=f"the library the weights come from: {', '.join(FAMILIES)}, or "
                              "one a --rules file names")
    _add_common(convert, "the source state dict (torch.save or safetensors file)",
                "where to write the converted state dict",
                "leave out the classifier (the final fc), to fine-tune to other classes with "
                "`skdsl train --init OUT --classes N`")
    convert.set_defaults(run=run_convert)
    export = actions.add_parser(
        "export", help="map a spec's weights back onto another library's keys",
        description="Map the weights of SPEC's compiled module (converted weights, a checkpoint "
                    "of `skdsl train` such as best.pt, or any state dict of it) back onto the "
                    "keys of a family of another library: the inverse of convert. Every tensor "
                    "must be exported by a rule; otherwise each misfit is named and nothing is "
                    "written (exit status 2).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"families (timm):\n{families}\n"
               "the output loads into timm.create_model(NAME).load_state_dict(...)")
    export.add_argument("--to", required=True, metavar="LIBRARY",
                        help=f"the library to export to: {', '.join(FAMILIES)}, or one a "
                             "--rules file names")
    _add_common(export, "the spec's weights (converted, an skdsl checkpoint, a state dict)",
                "where to write the exported state dict",
                "leave out the classifier (the final fc)")
    export.set_defaults(run=run_export)
    return weights


def _add_common(parser: argparse.ArgumentParser, source: str, output: str, skip: str) -> None:
    """SPEC, IN, OUT and the flags convert and export share."""
    from ..nn.weights import FORMATS  # no torch

    add_spec_argument(parser)
    parser.add_argument("source", metavar="IN", help=source)
    parser.add_argument("output", metavar="OUT", help=output)
    parser.add_argument("--rules", metavar="FILE", action="append", default=[],
                        help="a rule file describing another family (repeatable; "
                             "docs/weights.md, 'Rule files')")
    parser.add_argument("--family", metavar="NAME",
                        help="the family to use, instead of the one detected from the keys")
    parser.add_argument("--classes", metavar="N",
                        help="replace the spec's `classes` (a head written `fc classes` "
                             "follows): a head of N classes")
    parser.add_argument("--format", choices=FORMATS,
                        help="the output's format (default: safetensors for a .safetensors "
                             "OUT, else torch)")
    parser.add_argument("--skip-head", action="store_true", help=skip)


def _prepared(args: argparse.Namespace):
    """The rule files' families and the spec with --set and --classes."""
    from ..nn.weights import load_rules
    from .train import _integer  # the train command's whole-number flags: --classes alike

    if args.output == "-":  # what '-' means elsewhere (stdout) is no place for binary tensors
        raise CliError("OUT '-': a state dict is a file, not text for stdout", code="SK526",
                       hint="name a file, such as weights.pt or weights.safetensors")
    families = tuple(load_rules(path) for path in args.rules)
    spec = load_spec(args, num_classes=_integer(args.classes, "--classes", 1))
    return families, spec


def _written(args: argparse.Namespace, done) -> str:
    head = " (head left out)" if args.skip_head else ""
    form = " (safetensors)" if done.format == "safetensors" else ""
    return (f"{len(done.state_dict)} tensors{head}, {done.parameters:,} parameters, written to "
            f"{args.output}{form}")


def run_convert(args: argparse.Namespace) -> int:
    """`skdsl weights convert`: 0 when OUT is written; a WeightsError (exit status 2) otherwise."""
    from ..nn.weights import convert

    families, spec = _prepared(args)
    done = convert(spec, args.source, args.output, args.origin, spec_name=f"spec '{spec.name}'",
                   skip_head=args.skip_head, families=families, family=args.family,
                   format=args.format)
    print(f"ok: {args.origin} {done.source_model} ({done.family.title}) -> {spec.name}: "
          f"{_written(args, done)}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """`skdsl weights export`: 0 when OUT is written; a WeightsError (exit status 2) otherwise."""
    from ..nn.weights import export

    families, spec = _prepared(args)
    done = export(spec, args.source, args.output, args.to, spec_name=f"spec '{spec.name}'",
                  skip_head=args.skip_head, families=families, family=args.family,
                  format=args.format)
    print(f"ok: {spec.name} -> {args.to} {done.source_model} ({done.family.title}): "
          f"{_written(args, done)}")
    return 0
