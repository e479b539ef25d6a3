"""`skdsl weights convert`: published weights mapped onto a spec's module (skdsl/nn/weights.py)."""

from __future__ import annotations

import argparse

from .arguments import add_spec_argument, load_spec


def register(subparsers) -> argparse.ArgumentParser:
    """Add `skdsl weights convert --from timm SPEC IN OUT` to the CLI's subcommands."""
    from ..nn.weights import FAMILIES  # no torch: the rule tables

    weights = subparsers.add_parser(
        "weights", help="convert published weights to a spec's compiled module",
        description="Weights of other libraries, mapped onto the compiled module of a spec.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  skdsl weights convert --from timm specs/sknet50.sk "
               "skresnext50_32x4d.pth sknet50.pt")
    actions = weights.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    families = "; ".join(f"{f.models} -> specs of {f.library}'s {f.built_of}"
                         for f in FAMILIES["timm"])
    parser = actions.add_parser(
        "convert", help="map a foreign state dict onto a spec (all tensors, or an error)",
        description="Map a state dict of timm's ResNeXt, SE-ResNeXt, SK-ResNeXt or SK-ResNet(-D) "
                    "onto the "
                    "compiled module of SPEC. Every tensor must land on exactly one parameter "
                    "or buffer of the same shape; otherwise each misfit is named and nothing "
                    "is written (exit status 2).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"families (timm): {families}\n"
               "the output loads with model.load_state_dict(torch.load(OUT, weights_only=True))")
    parser.add_argument("--from", dest="origin", required=True, choices=sorted(FAMILIES),
                        help="the library the weights come from")
    add_spec_argument(parser)
    parser.add_argument("source", metavar="IN", help="the source state dict (torch.save file)")
    parser.add_argument("output", metavar="OUT", help="where to write the converted state dict")
    parser.add_argument("--skip-head", action="store_true",
                        help="leave out the classifier (the final fc), to fine-tune to other "
                             "classes with `skdsl train --init OUT --classes N`")
    parser.set_defaults(run=run)
    return weights


def run(args: argparse.Namespace) -> int:
    """`skdsl weights convert`: 0 when OUT is written; a WeightsError (exit status 2) otherwise."""
    from ..nn.weights import convert

    spec = load_spec(args)
    done = convert(spec, args.source, args.output, args.origin, spec_name=f"spec '{spec.name}'",
                   skip_head=args.skip_head)
    head = " (head left out)" if args.skip_head else ""
    print(f"ok: {args.origin} {done.source_model} ({done.plan.family.title}) -> {spec.name}: "
          f"{len(done.state_dict)} tensors{head}, {done.parameters:,} parameters, written to "
          f"{args.output}")
    return 0
