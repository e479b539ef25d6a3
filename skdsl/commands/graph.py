"""`skdsl graph`: the lowered graph as Graphviz dot or mermaid."""

from __future__ import annotations

import sys

from ..base.errors import CliError
from .arguments import (add_command, add_input_argument, add_spec_argument, load_spec,
                        parse_input_shape)
from .output import check_output, write_text


def register(commands) -> None:
    parser = add_command(
        commands, "graph", run, "draw the network as Graphviz dot or mermaid",
        "Write a diagram of the lowered graph: a box per op with its output shape,\n"
        "arrows in execution order, one cluster per stage.",
        "examples:\n  skdsl graph specs/sknet50.sk --depth 2 -o sknet50.dot\n"
        "  dot -Tsvg sknet50.dot -o sknet50.svg\n"
        "  skdsl graph specs/sknet26.sk --format mermaid --depth 3")
    add_spec_argument(parser)
    add_input_argument(parser)
    parser.add_argument("--format", choices=("dot", "mermaid"), default="dot",
                        help="dot (Graphviz, the default) or mermaid")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write to FILE instead of stdout (-: stdout)")
    parser.add_argument("--depth", type=int, metavar="N",
                        help="merge ops into their first N name parts: 1 = stages, 2 = blocks")


def run(args) -> int:
    if args.depth is not None and args.depth < 1:
        raise CliError(f"--depth {args.depth}: the depth counts name parts, from 1 (stages)",
                       code="SK505")
    from ..report import network as report
    from ..core.graph import lower

    input_shape = parse_input_shape(args.input)
    output = None if args.output == "-" else args.output  # '-': stdout, as for `skdsl tables`
    check_output(output)
    graph = lower(load_spec(args), input_shape)
    if args.format == "dot":
        text = report.to_dot(graph, args.depth)
    else:
        text = report.to_mermaid(graph, args.depth)
        edges = text.count(" --> ")
        if edges > report.MERMAID_EDGE_LIMIT:
            print(f"warning: {edges} edges; mermaid draws at most {report.MERMAID_EDGE_LIMIT} "
                  f"unless its maxEdges is raised: try --depth 2", file=sys.stderr)
    write_text(text, output)
    return 0
