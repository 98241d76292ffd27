"""Command-line entry point: parse arguments, call the layer below, print. No logic here.

Each subcommand has one `_add_<name>(subparsers)` that declares its arguments and one
`_cmd_<name>(args) -> int` that calls into the layers and returns the exit code.
Exit codes: 0 success, 1 a check failed / measurement out of tolerance, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]


# --- doctor -------------------------------------------------------------------------------
def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="say which impairment backends and peers this host has")
    p.set_defaults(handler=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from lab.doctor import diagnose, format_report

    report = diagnose()
    print(format_report(report))
    return 0 if report.ok else 1


# --- clean --------------------------------------------------------------------------------
def _add_clean(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clean", help="remove namespaces, links and processes left by killed runs")
    p.add_argument("--prefix", help="only this run prefix (e.g. lab3f2a9c)")
    p.add_argument("--force", action="store_true", help="also remove runs that are still alive")
    p.set_defaults(handler=_cmd_clean)


def _cmd_clean(args: argparse.Namespace) -> int:
    from lab.net.clean import clean

    report = clean(args.prefix, force=args.force)
    for item in report.removed:
        print(f"removed {item}")
    for prefix in report.skipped_live:
        print(f"skipped {prefix}: its run is still alive (use --force)")
    if not report.removed and not report.skipped_live:
        print("nothing to clean")
    return 0


# --- calibrate ----------------------------------------------------------------------------
def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="measure what the scenario's impaired path really does")
    p.add_argument("scenario", help="scenario YAML file")
    p.set_defaults(handler=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    raise NotImplementedError("lab calibrate")


# --- validate / schema --------------------------------------------------------------------
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a scenario file; errors name file:line")
    p.add_argument("scenario", help="scenario YAML file")
    p.set_defaults(handler=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from lab.scenario import ScenarioError, expand_cells, load_scenario

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return 2
    n, r = len(expand_cells(scenario)), scenario.repeat
    cells, reps = ("cell" if n == 1 else "cells"), ("repetition" if r == 1 else "repetitions")
    print(f"{args.scenario}: ok — {n} {cells} × {r} {reps}")
    return 0


def _add_schema(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the scenario JSON Schema (for editor completion)")
    p.set_defaults(handler=_cmd_schema)


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from lab.scenario import scenario_json_schema

    print(json.dumps(scenario_json_schema(), indent=2))
    return 0


# --- run ----------------------------------------------------------------------------------
def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a scenario: every cell over HTTP/2 and HTTP/3")
    p.add_argument("scenario", nargs="?", help="scenario YAML file")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    raise NotImplementedError("lab run")


# --- serve / get --------------------------------------------------------------------------
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the reference h2 (TCP+TLS) + h3 (QUIC) server")
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    raise NotImplementedError("lab serve")


def _add_get(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("get", help="fetch a URL over HTTP/2 or HTTP/3 and print the timings")
    p.add_argument("url")
    p.set_defaults(handler=_cmd_get)


def _cmd_get(args: argparse.Namespace) -> int:
    raise NotImplementedError("lab get")


# --- report / check / compare -------------------------------------------------------------
def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write report.html and report.md for a run")
    p.add_argument("run", help="results/<run-id>")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    raise NotImplementedError("lab report")


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="gate a run on thresholds; exit 1 when one fails")
    p.add_argument("run", help="results/<run-id>")
    p.set_defaults(handler=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    raise NotImplementedError("lab check")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="significance-tested differences between two runs")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.set_defaults(handler=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    raise NotImplementedError("lab compare")


_SUBCOMMANDS = (
    _add_run,
    _add_validate,
    _add_schema,
    _add_doctor,
    _add_clean,
    _add_calibrate,
    _add_serve,
    _add_get,
    _add_report,
    _add_check,
    _add_compare,
)


def build_parser() -> argparse.ArgumentParser:
    """The `lab` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
