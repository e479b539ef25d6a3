"""`skdsl build`: parameters, multiply-adds and shapes of a spec, without torch."""

from __future__ import annotations

from ..base.errors import CliError
from .arguments import (add_command, add_count_argument, add_input_argument,
                        add_latency_argument, add_spec_argument, add_sweep_argument, add_switches,
                        latency_calibration, load_spec, parse_count, parse_input_shape,
                        parse_overrides, variant_flags)
from .output import print_json, print_rich, to_json_text


def register(commands) -> None:
    parser = add_command(
        commands, "build", run, "count a network's parameters and multiply-adds (Table 1)",
        "Parse, expand and analyse a spec: parameters, multiply-adds and shapes,\n"
        "without building a model (no torch).",
        "examples:\n  skdsl build specs/sknet50.sk --report\n"
        "  skdsl build specs/sknet50.sk --json --input 3x320x320")
    add_spec_argument(parser)
    add_input_argument(parser)
    add_switches(parser, report="the stage table, laid out like the paper's Table 1",
                 layers="every layer with its output shape, parameters and multiply-adds",
                 json="one JSON object on stdout (the contract is in docs/cli.md)")
    add_count_argument(parser)
    add_sweep_argument(parser)
    add_latency_argument(parser, "each stage's (--report), layer's (--layers) and the "
                                 "network's")


def run(args) -> int:
    if args.json and (args.report or args.layers):
        raise CliError("--json prints only JSON: leave out --report and --layers", code="SK505")
    if args.sweeps:  # one network per point of the sweep
        return run_sweep(args)
    from ..core.analysis import analyze
    from ..report.compare import changes_the_spec, declared_parameters

    input_shape = parse_input_shape(args.input)
    count = parse_count(args.count)
    overrides = parse_overrides(args.overrides)
    spec = load_spec(args, overrides)
    if overrides and changes_the_spec(overrides, declared_parameters(
            args.spec, allow_imports_outside=args.allow_imports_outside)[0]):
        spec = spec.model_copy(update={"paper": None})  # not the network the paper measured
    analysis = analyze(spec, input_shape, count)
    latency = _latency(args, analysis)
    if args.json:
        print_json(_json(spec, analysis, latency))
        return 0
    from ..report import network as report

    if not (args.report or args.layers):
        print(report.summary_line(analysis) + (f", {latency.milliseconds:.2f} ms predicted"
                                               if latency is not None else ""))
        return 0
    print_rich(*_tables(args, spec, analysis, latency))
    return 0


def _latency(args, analysis):
    """The predicted latency of the analysed network, when --latency names a calibration."""
    calibration = latency_calibration(args.latency)
    if calibration is None:
        return None
    from ..core.latency import predict

    return predict(analysis.graph, calibration)


def run_sweep(args) -> int:
    """`skdsl build SPEC --sweep ...`: build's output once per variant (a JSON list with --json)."""
    from ..report import network as report
    from ..core.analysis import analyze
    from ..report.compare import variants

    input_shape, count, overrides, sweeps = variant_flags(args)
    found, tables = [], []
    for path, settings, changed in variants([args.spec], overrides, sweeps,
                                            allow_imports_outside=args.allow_imports_outside):
        spec = load_spec(args, settings)
        if changed:  # the paper's figures are for the network as written
            spec = spec.model_copy(update={"paper": None})
        analysis = analyze(spec, input_shape, count)
        latency = _latency(args, analysis)
        if args.json:
            found.append({"overrides": settings, **_json(spec, analysis, latency)})
        elif args.report or args.layers:
            tables += _tables(args, spec, analysis, latency)
        else:
            label = " ".join(f"{k}={v}" for k, v in settings.items())
            print(f"[{label}] {report.summary_line(analysis)}" + (
                f", {latency.milliseconds:.2f} ms predicted" if latency is not None else ""))
    if args.json:
        print(to_json_text(found))
    elif tables:
        print_rich(*tables)
    return 0


def _json(spec, analysis, latency=None) -> dict:
    paper = spec.paper.model_dump(mode="json") if spec.paper is not None else None
    found = {**analysis.to_json(), "paper": paper}
    if latency is not None:
        found["latency_ms"] = latency.milliseconds
        for stage in found["stages"]:
            stage["latency_ms"] = latency.stages.get(stage["name"], 0.0) * 1e3
    return found


def _tables(args, spec, analysis, latency=None) -> list:
    from ..report import network as report

    tables = []
    if args.report:
        tables.append(report.stage_table(spec, analysis, latency))
    if args.layers:
        tables.append(report.layer_table(analysis, latency))
    return tables
