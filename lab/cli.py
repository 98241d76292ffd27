"""Command-line entry point: parse arguments, call the layer below, print. No logic here.

Each subcommand has one `_add_<name>(subparsers)` that declares its arguments and one
`_cmd_<name>(args) -> int` that calls into the layers and returns the exit code.
Exit codes: 0 success, 1 a check failed / measurement out of tolerance / a run failed, 2 bad
input or a host that cannot do it, 130 interrupted. Errors the user should see are
`lab.errors.LabError`s; `main` maps them to their exit code and one line on stderr, in one place.

Imports of the layers are deferred into the handlers so `lab --help` and `lab validate` start fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.errors import BadInput, LabError, PeerError, RunError, ScenarioError
from lab.run.lifecycle import install_signal_handlers

if TYPE_CHECKING:
    from lab.run.plan import Shard

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
    p.add_argument(
        "--impair",
        choices=["auto", "emulator", "netem"],
        default="auto",
        help="impairment backend (auto: netem where the kernel has it, else the emulator)",
    )
    p.add_argument("--cell", default=None, help="cell id to calibrate (default: the first)")
    p.add_argument("--probes", type=int, default=2000, help="UDP probes, 2 ms apart (default 2000)")
    p.add_argument("--out", type=Path, default=None, help="keep the emulator's outputs here")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(handler=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from lab.calibrate.measure import calibrate_cell
    from lab.calibrate.present import result_table, rich_progress
    from lab.scenario.load import load_scenario
    from lab.scenario.matrix import expand_cells

    scenario = load_scenario(args.scenario)
    cells = expand_cells(scenario)
    cell = next((c for c in cells if args.cell in (None, c.id)), None)
    if cell is None or args.probes < 10:
        why = f"no cell {args.cell!r}" if cell is None else "--probes must be at least 10"
        raise BadInput(f"{why} (cells: {', '.join(c.id for c in cells)})")
    with rich_progress(enabled=sys.stderr.isatty() or not args.json) as progress:
        result = calibrate_cell(
            cell,
            scenario_name=scenario.name,
            impair=args.impair,
            probes=args.probes,
            out_dir=args.out,
            progress=progress,
        )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        Console().print(result_table(result))
    return 0 if result.ok else 1


# --- validate / schema --------------------------------------------------------------------
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a scenario file; errors name file:line")
    p.add_argument("scenario", help="scenario YAML file")
    _add_max_pairs(p)
    p.set_defaults(handler=_cmd_validate)


def _add_max_pairs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-pairs",
        type=int,
        default=None,
        metavar="N",
        help="allow up to N cell repetitions (cells × repeat; default 10,000)",
    )


def _max_pairs(args: argparse.Namespace) -> int:
    """The cell-repetition limit: --max-pairs, else the lab's default."""
    from lab.scenario.limits import MAX_PAIRS  # deferred: lab.scenario imports pydantic

    if args.max_pairs is not None and args.max_pairs < 1:
        raise BadInput("--max-pairs must be ≥ 1")
    return MAX_PAIRS if args.max_pairs is None else int(args.max_pairs)


def _cmd_validate(args: argparse.Namespace) -> int:
    from lab.scenario.load import load_scenario
    from lab.scenario.matrix import expand_cells

    scenario = load_scenario(args.scenario, max_pairs=_max_pairs(args))
    n, r = len(expand_cells(scenario)), scenario.repeat
    cells, reps = ("cell" if n == 1 else "cells"), ("repetition" if r == 1 else "repetitions")
    print(f"{args.scenario}: ok — {n} {cells} × {r} {reps}")
    return 0


def _add_schema(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the scenario JSON Schema (for editor completion)")
    p.set_defaults(handler=_cmd_schema)


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from lab.scenario.load import scenario_json_schema

    print(json.dumps(scenario_json_schema(), indent=2))
    return 0


# --- run ----------------------------------------------------------------------------------
def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a scenario: every cell over HTTP/2 and HTTP/3")
    p.add_argument("scenario", nargs="?", help="scenario YAML file")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue results/<run-id>")
    p.add_argument(
        "--impair",
        choices=["netem", "emulator"],
        default=None,
        help="impairment backend (default: netem where available, else the emulator)",
    )
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory")
    p.add_argument("--repeat", type=int, default=None, help="override the scenario's repeat")
    _add_max_pairs(p)
    p.add_argument(
        "--quic-engine",
        choices=["aioquic", "qh3"],
        default=None,
        help="QUIC engine of every cell; overrides the scenario's stack.quic_engine "
        "(default: the scenario's, aioquic if it names none)",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        default=None,
        help="run only shard I of N (1-based) of the (cell, repetition) pairs, balanced by "
        "their time estimates; `lab merge` joins the shards (docs/scale.md)",
    )
    p.add_argument("-y", "--yes", action="store_true", help="start without asking")
    p.set_defaults(handler=_cmd_run)


def _shard(text: str | None) -> Shard | None:
    """--shard I/N as a lab.run.plan.Shard (None without it); BadInput when malformed."""
    from lab.run.plan import parse_shard  # deferred: lab.run.plan imports the scenario models

    if text is None:
        return None
    try:
        return parse_shard(text)
    except ValueError as e:
        raise BadInput(str(e)) from None


def _cmd_run(args: argparse.Namespace) -> int:
    from lab.scenario.limits import MAX_REPEAT  # deferred: lab.scenario imports pydantic
    from lab.scenario.load import load_scenario

    if (args.scenario is None) == (args.resume is None):
        raise BadInput("give a scenario file or --resume results/<run>")
    if args.resume is not None and args.shard is not None:
        raise BadInput("--resume continues the run's own shard; give no --shard")
    if args.repeat is not None and not 1 <= args.repeat <= MAX_REPEAT:
        raise BadInput(f"--repeat must be between 1 and {MAX_REPEAT:,}")
    scenario = None
    if args.scenario is not None:  # a bad file is refused before the runner's imports (~1.5 s)
        scenario = load_scenario(args.scenario, max_pairs=_max_pairs(args), repeat=args.repeat)

    from rich.console import Console

    from lab.run import runner
    from lab.run.plan import estimate_run_s
    from lab.run.progress import RunProgress, fmt_duration, summary_table

    console = Console(width=None if sys.stdout.isatty() else 200)
    if scenario is None:
        prep = runner.prepare_resume(args.resume)
    else:
        opts = runner.RunOptions(
            backend=args.impair,
            out_dir=args.out,
            repeat=args.repeat,
            quic_engine=args.quic_engine,
            shard=_shard(args.shard),
        )
        n, reps, est = runner.describe(scenario, opts)
        part = "" if opts.shard is None else f", shard {opts.shard}"
        print(
            f"{scenario.name}: {n} cell(s) × {reps} repetition(s) × "
            f"{len(scenario.protocols)} protocol(s){part}; estimated {fmt_duration(est)}"
        )
        if not args.yes and sys.stdin.isatty():
            answer = input("start? [Y/n] ").strip().lower()
            if answer not in ("", "y", "yes"):
                return 0
        prep = runner.prepare(scenario, args.scenario, opts)
    est = estimate_run_s(prep.todo)
    print(
        f"run {prep.writer.path} ({prep.backend}); {len(prep.todo)} of {len(prep.pairs)} "
        f"cell repetitions to do, about {fmt_duration(est)}",
        flush=True,
    )
    outcome = runner.execute(prep, RunProgress(console))
    if outcome.results is not None and len(outcome.results.summary):
        console.print(summary_table(outcome.results.summary))
    failed = sum(1 for o in outcome.cells if o.errors)
    print(
        f"{outcome.status}: {outcome.path} in {fmt_duration(outcome.wall_s)} "
        f"(overhead {outcome.overhead_s:.0f} s); {failed} cell repetition(s) with errors"
    )
    if outcome.status == "interrupted":
        print(f"resume with: lab run --resume {outcome.path}")
        return 130
    return 1 if failed else 0


# --- serve / get --------------------------------------------------------------------------
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the reference h2 (TCP+TLS) + h3 (QUIC) server")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; '::' = all, dual-stack")
    p.add_argument("--port", type=int, default=8443, help="TCP and UDP port (0 = pick one)")
    p.add_argument("--cert-dir", type=Path, default=None, help="CA + leaf cache directory")
    p.add_argument("--max-streams", type=int, default=100, help="max concurrent streams")
    p.add_argument("--quic-engine", choices=["aioquic", "qh3"], default="aioquic")
    p.add_argument(
        "--cc", choices=["cubic", "reno"], default="cubic", help="congestion control (TCP + QUIC)"
    )
    p.add_argument(
        "--h2-cc",
        metavar="NAME",
        default=None,
        help="TCP congestion control of h2 (any the kernel allows, e.g. bbr; default: --cc)",
    )
    p.add_argument(
        "--notsent-lowat",
        metavar="BYTES",
        type=int,
        default=None,
        help="TCP_NOTSENT_LOWAT of h2 sockets (default: the kernel's, unbounded)",
    )
    p.add_argument("--qlog-dir", type=Path, default=None, help="write one qlog per QUIC conn")
    p.add_argument("--grace", type=float, default=10.0, help="graceful-shutdown grace (s)")
    p.add_argument("--pod-size", type=int, default=2048, help="bytes per synthetic pod")
    p.add_argument("--pod-count", type=int, default=500, help="pods per namespace")
    _add_h2_limit_flags(p)
    _add_h3_limit_flags(p)
    p.set_defaults(handler=_cmd_serve)


# (flag, H2ServerLimits field, type, metavar, help with the default); each must be > 0
_H2_LIMIT_FLAGS: tuple[tuple[str, str, type, str, str], ...] = (
    ("--h2-idle-timeout", "idle_timeout_s", float, "S", "no open stream this long: close (90)"),
    ("--h2-stall-timeout", "stream_stall_timeout_s", float, "S", "blocked on window: reset (30)"),
    (
        "--h2-max-buffered-per-conn",
        "max_buffered_request_bytes_per_connection",
        int,
        "BYTES",
        "request bodies held per connection (64 MiB)",
    ),
    (
        "--h2-max-buffered-total",
        "max_buffered_request_bytes_total",
        int,
        "BYTES",
        "request bodies held, all h2 connections (256 MiB)",
    ),
    ("--h2-rapid-reset-limit", "rapid_reset_limit", int, "N", "peer resets per second (200)"),
    (
        "--h2-max-queued-control",
        "max_queued_control_frames",
        int,
        "N",
        "replies queued for a peer that does not read (10000)",
    ),
)


def _add_h2_limit_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("HTTP/2 bounds (docs/http.md, Bounds)")
    for flag, dest, kind, metavar, text in _H2_LIMIT_FLAGS:
        g.add_argument(flag, dest=dest, type=kind, default=None, metavar=metavar, help=text)


def _h2_limit_values(args: argparse.Namespace) -> dict[str, Any]:
    """The H2ServerLimits fields given on the command line; BadInput unless each is > 0."""
    given = {dest: getattr(args, dest) for _, dest, *_ in _H2_LIMIT_FLAGS}
    for flag, dest, *_ in _H2_LIMIT_FLAGS:
        if given[dest] is not None and not given[dest] > 0:
            raise BadInput(f"{flag} must be > 0")
    return {k: v for k, v in given.items() if v is not None}


def _add_h3_limit_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("HTTP/3 bounds (docs/http3.md, Bounds)")
    g.add_argument(
        "--h3-retry-above",
        dest="retry_above_half_open",
        type=int,
        default=None,
        metavar="N",
        help="half-open connections from which Initials get Retry (100; 0 = always)",
    )
    g.add_argument(
        "--h3-max-half-open",
        dest="max_half_open",
        type=int,
        default=None,
        metavar="N",
        help="half-open connections at most; Initials beyond are dropped (256)",
    )
    g.add_argument(
        "--h3-handshake-timeout",
        dest="handshake_timeout_s",
        type=float,
        default=None,
        metavar="S",
        help="a handshake not finished this long is discarded (10)",
    )


def _h3_limit_values(args: argparse.Namespace) -> dict[str, Any]:
    """The QuicServerLimits fields given on the command line (counts are ints); BadInput when
    out of range."""
    given = {
        "retry_above_half_open": (args.retry_above_half_open, "--h3-retry-above", 0),
        "max_half_open": (args.max_half_open, "--h3-max-half-open", 1),
        "handshake_timeout_s": (args.handshake_timeout_s, "--h3-handshake-timeout", 1e-3),
    }
    for value, flag, low in given.values():
        if value is not None and not value >= low:
            raise BadInput(f"{flag} must be ≥ {low:g}")
    return {k: v for k, (v, _, _) in given.items() if v is not None}


def _cmd_serve(args: argparse.Namespace) -> int:
    from lab.http.server import describe, run_server
    from lab.http.settings import (
        H2ServerLimits,
        H2Settings,
        QuicServerLimits,
        QuicSettings,
        ServerConfig,
    )

    if args.notsent_lowat is not None and args.notsent_lowat < 0:
        raise BadInput("--notsent-lowat must be ≥ 0")

    # the server's log on stderr: the lab's events (bound hits, shutdown summary) from INFO on,
    # the QUIC/TLS libraries' from WARNING on (aioquic logs every connection at INFO)
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.WARNING, format=log_format)
    logging.getLogger("lab").setLevel(logging.INFO)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        h2=H2Settings(
            max_concurrent_streams=args.max_streams,
            tcp_congestion=args.h2_cc or args.cc,
            tcp_notsent_lowat_bytes=args.notsent_lowat,
        ),
        h2_limits=H2ServerLimits(**_h2_limit_values(args)),
        quic=QuicSettings(
            engine=args.quic_engine,
            congestion_control=args.cc,
            max_concurrent_streams=args.max_streams,
            qlog_dir=args.qlog_dir,
        ),
        quic_limits=QuicServerLimits(**_h3_limit_values(args)),
        pod_size_bytes=args.pod_size,
        pod_count=args.pod_count,
        grace_s=args.grace,
    )
    try:
        run_server(
            config, cert_dir=args.cert_dir, on_ready=lambda info: print(describe(info), flush=True)
        )
    except OSError as e:  # port in use, address not available, ...
        raise RunError(str(e)) from e
    return 0


def _add_get(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("get", help="fetch a URL over HTTP/2 or HTTP/3 and print the timings")
    p.add_argument("url", help="https://host:port/path")
    proto = p.add_mutually_exclusive_group()
    proto.add_argument("--http2", dest="protocol", action="store_const", const="h2")
    proto.add_argument("--http3", dest="protocol", action="store_const", const="h3")
    p.add_argument("--0rtt", dest="zero_rtt", action="store_true", help="ticket, then 0-RTT")
    p.add_argument("--head", action="store_true", help="HEAD instead of GET (headers, no body)")
    p.add_argument("-n", type=int, default=1, help="concurrent requests on one connection")
    p.add_argument(
        "--quic-engine",
        choices=("aioquic", "qh3"),
        default="aioquic",
        help="HTTP/3 engine (default aioquic; qh3 has a compiled core)",
    )
    trust = p.add_mutually_exclusive_group()
    trust.add_argument("--insecure", action="store_true", help="do not verify the server")
    trust.add_argument("--ca", type=Path, default=None, help="CA file (default: the lab's CA)")
    p.set_defaults(handler=_cmd_get, protocol="h2")


def _cmd_get(args: argparse.Namespace) -> int:
    import trio

    from lab.http.fetch import fetch, format_reports
    from lab.http.tls import DEFAULT_CERT_DIR

    ca = args.ca
    if ca is None and not args.insecure:
        ca = DEFAULT_CERT_DIR / "ca.pem"
        if not ca.exists():
            raise BadInput(f"no CA at {ca}; pass --ca FILE or --insecure")
    try:
        reports = trio.run(
            lambda: fetch(
                args.url,
                protocol=args.protocol,
                zero_rtt=args.zero_rtt,
                count=args.n,
                ca_file=ca,
                quic_engine=args.quic_engine,
                method="HEAD" if args.head else "GET",
            )
        )
    except ValueError as e:  # a URL or option the client cannot use
        raise BadInput(str(e)) from e
    except (ConnectionError, OSError, trio.TooSlowError) as e:
        raise PeerError(repr(e)) from e
    print(format_reports(reports, args.protocol, args.quic_engine))
    ok = all(200 <= r.status < 400 for rep in reports for r in rep.responses)
    return 0 if ok else 1


# --- report / check / compare -------------------------------------------------------------
def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write report.html and report.md for a run")
    p.add_argument("run", type=Path, help="results/<run-id>")
    p.add_argument("--out", type=Path, default=None, help="directory (default: the run's)")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from lab.evidence.report import write_report

    files = write_report(args.run, args.out)
    for w in files.warnings:
        print(f"lab report: warning: {w}", file=sys.stderr)
    print(f"wrote {files.html}")
    print(f"wrote {files.markdown} (+ {len(files.images)} PNG beside it)")
    return 0


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="gate a run on thresholds; exit 1 when one fails")
    p.add_argument("run", type=Path, help="results/<run-id>")
    p.add_argument(
        "--thresholds", type=Path, default=Path("scenarios/thresholds.yaml"), help="YAML file"
    )
    p.add_argument("--junit", type=Path, default=None, help="also write JUnit XML here")
    p.set_defaults(handler=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lab.evidence.check import check_run, result_table

    report, junit = check_run(args.run, args.thresholds)
    if args.junit is not None:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_bytes(junit)
    Console(width=None if sys.stdout.isatty() else 160).print(result_table(report))
    return report.exit_code


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="significance-tested differences between two runs")
    p.add_argument("run_a", type=Path, help="results/<run-id> (the baseline)")
    p.add_argument("run_b", type=Path, help="results/<run-id> (the candidate)")
    p.add_argument("--min-effect", type=float, default=0.10, help="relative (default 0.10)")
    p.add_argument("--all", action="store_true", help="show unchanged rows too")
    p.set_defaults(handler=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lab.evidence.compare import compare_runs, difference_table

    diffs = compare_runs(args.run_a, args.run_b, min_effect=args.min_effect)
    Console(width=None if sys.stdout.isatty() else 160).print(
        difference_table(diffs, show_all=args.all)
    )
    return 0


# --- merge / k8s --------------------------------------------------------------------------
def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge", help="join the shards (or resumed, partial runs) of one scenario into one run"
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="results/<run-id> …")
    p.add_argument("-o", "--out", type=Path, required=True, help="the merged run directory")
    p.add_argument(
        "--keep-first",
        action="store_true",
        help="a pair completed by two runs: keep the copy of the run named first (default: refuse)",
    )
    p.set_defaults(handler=_cmd_merge)


def _cmd_merge(args: argparse.Namespace) -> int:
    from lab.results.merge import merge_runs

    outcome = merge_runs(args.runs, args.out, keep_first=args.keep_first)
    for w in outcome.warnings:
        print(f"lab merge: warning: {w}", file=sys.stderr)
    for (cell, rep), runs in outcome.duplicates.items():
        print(f"lab merge: duplicate {cell}-{rep} in {', '.join(runs)}: kept {runs[0]}'s")
    print(
        f"wrote {outcome.path} ({outcome.status}): {outcome.pairs} of {outcome.planned} "
        f"(cell, repetition) pairs from {len(args.runs)} run(s)"
    )
    if outcome.missing:
        shown = ", ".join(f"{c}-{r}" for c, r in outcome.missing[:20])
        more = f" … and {len(outcome.missing) - 20} more" if len(outcome.missing) > 20 else ""
        print(f"missing {len(outcome.missing)} pair(s): {shown}{more}")
        print(f"run them with: lab run --resume {outcome.path}")
        return 1
    return 0


def _add_k8s(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("k8s", help="Kubernetes manifests that run a scenario's shards on a cluster")
    k8s = p.add_subparsers(dest="k8s_command", required=True, metavar="COMMAND")
    r = k8s.add_parser(
        "render", help="an Indexed Job (one pod per shard) and a merge Job, as YAML (docs/scale.md)"
    )
    r.add_argument("scenario", help="scenario YAML file (the manifests carry it in a ConfigMap)")
    r.add_argument("--shards", type=int, required=True, metavar="N", help="number of shards")
    r.add_argument("--image", default="lab:latest", help="container image with lab installed")
    r.add_argument(
        "--results",
        default="pvc:lab-results",
        metavar="pvc:NAME | s3://BUCKET/PREFIX",
        help="where the runs go: a ReadWriteMany PersistentVolumeClaim, or an S3-compatible "
        "store (credentials from the Secret --s3-secret) (default pvc:lab-results)",
    )
    r.add_argument("--name", default=None, help="Job name (default: lab-<scenario name>)")
    r.add_argument("--namespace", default=None, help="Kubernetes namespace of the objects")
    r.add_argument("--parallelism", type=int, default=None, help="pods at once (default N)")
    r.add_argument("--cpus", type=int, default=2, help="CPUs per shard pod, request = limit")
    r.add_argument("--memory", default="4Gi", help="memory per shard pod, request = limit")
    r.add_argument("--backoff-limit-per-index", type=int, default=2, metavar="K")
    r.add_argument("--repeat", type=int, default=None, help="override the scenario's repeat")
    r.add_argument("--impair", choices=["netem", "emulator"], default=None)
    r.add_argument("--s3-secret", default="lab-s3", help="Secret with the S3 credentials")
    r.add_argument("--uploader-image", default=None, help="image with the aws CLI (S3 only)")
    r.add_argument("-o", "--out", type=Path, default=None, help="write here (default stdout)")
    r.set_defaults(handler=_cmd_k8s_render)


def _cmd_k8s_render(args: argparse.Namespace) -> int:
    from lab.k8s.options import RenderOptions, parse_results
    from lab.k8s.render import render_scenario

    try:
        opts = RenderOptions(
            shards=args.shards,
            image=args.image,
            results=parse_results(args.results),
            name=args.name,
            namespace=args.namespace,
            parallelism=args.parallelism,
            cpus=args.cpus,
            memory=args.memory,
            backoff_limit_per_index=args.backoff_limit_per_index,
            repeat=args.repeat,
            impair=args.impair,
            s3_secret=args.s3_secret,
            uploader_image=args.uploader_image,
        )
    except ValueError as e:
        raise BadInput(str(e)) from None
    text = render_scenario(args.scenario, opts)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


# --- vm -----------------------------------------------------------------------------------
def _add_vm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "vm",
        help="run `lab ARGS…` inside a user-mode-linux guest with real tc netem (docs/vm.md)",
    )
    p.add_argument("--mem", type=int, default=1536, metavar="MB", help="guest memory (1536)")
    p.add_argument(
        "--share",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also write through to this host directory (default: --out's, else results/)",
    )
    p.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="stop the guest after S"
    )
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="lab arguments")
    p.set_defaults(handler=_cmd_vm)


def _cmd_vm(args: argparse.Namespace) -> int:
    from lab.vm.host import results_shares, run_in_guest

    if not args.args:
        raise BadInput("give the lab command to run in the guest, e.g. `lab vm doctor`")
    if not 256 <= args.mem <= 16384:
        raise BadInput("--mem must be between 256 and 16384 (MB)")
    shares = [*results_shares(args.args, Path.cwd()), *(d.resolve() for d in args.share)]
    result = run_in_guest(args.args, shares=shares, mem_mb=args.mem, timeout_s=args.timeout)
    print(
        f"lab vm: guest booted in {result.boot_s:.1f} s, ran {result.wall_s:.1f} s, "
        f"exit {result.exit_code}",
        file=sys.stderr,
    )
    return result.exit_code


# --- compose ------------------------------------------------------------------------------
def _add_compose(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compose",
        help="run a scenario in docker-compose.yml's client/router/server containers (netem)",
    )
    csub = p.add_subparsers(dest="compose_command", required=True, metavar="COMMAND")
    r = csub.add_parser("run", help="the scenario through the three services into results/")
    r.add_argument("scenario", help="scenario YAML file")
    r.add_argument("--out", type=Path, default=Path("results"), help="results root (results/)")
    r.add_argument(
        "--build",
        action="store_true",
        help="build the Dockerfile's image (needs a registry); default: inside lab vm the "
        "offline skeleton image with the host's tools bind-mounted",
    )
    p.set_defaults(handler=_cmd_compose)


def _cmd_compose(args: argparse.Namespace) -> int:
    from lab.vm.compose import run as compose_run  # deferred: heavy imports (runner, pandas)

    hostroot = not args.build and os.environ.get("LAB_VM") == "1"
    path, errors = compose_run(args.scenario, args.out, hostroot=hostroot)
    print(path)
    if errors:
        print(f"lab compose: {errors} error(s), see {path / 'errors.json'}", file=sys.stderr)
    return 1 if errors else 0


# --- conform ------------------------------------------------------------------------------
def _add_conform(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "conform",
        help="run the HTTP/2, HTTP/3, QUIC, 0-RTT and dual-stack conformance cases on a server",
    )
    p.add_argument("target", nargs="?", help="https://HOST:PORT (loopback or a lab address)")
    p.add_argument(
        "--server",
        choices=["reference", "go", "caddy", "gtlsserver"],
        default=None,
        help="start this server in the lab's namespaces and test it (instead of a URL)",
    )
    p.add_argument("--link", type=Path, default=None, help="also run the ⟳ cases through it")
    p.add_argument("--cases", default=None, metavar="IDS", help="e.g. 'H2-*,Z-*' (default all)")
    p.add_argument("--slow", action="store_true", help="also run slow cases (Q-12: idle)")
    p.add_argument("--junit", type=Path, default=None, help="write JUnit XML here")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--artifacts", type=Path, default=None, help="keep qlogs, keylogs, logs")
    p.add_argument("--seed", type=int, default=1, help="the emulator's seed (with --link)")
    trust = p.add_mutually_exclusive_group()
    trust.add_argument("--ca", type=Path, default=None, help="CA of a URL target")
    trust.add_argument("--insecure", action="store_true", help="do not verify a URL target")
    p.set_defaults(handler=_cmd_conform)


def _cmd_conform(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from lab.conform.linkfile import load_link
    from lab.conform.output import junit_xml, progress_line, result_table, to_json
    from lab.conform.registry import named, select
    from lab.conform.runner import run_cases
    from lab.conform.target import ServerTarget, UrlTarget

    if (args.target is None) == (args.server is None):
        raise BadInput("give a target URL or --server NAME")
    if args.link is not None and args.server is None:
        raise BadInput("--link needs --server: a URL target is not behind the lab's link")
    try:
        cases = select(args.cases)
    except ValueError as e:
        raise BadInput(str(e)) from None
    link = load_link(args.link) if args.link is not None else None
    target: ServerTarget | UrlTarget = (
        ServerTarget(args.server, link=link, seed=args.seed, keep=args.artifacts)
        if args.server is not None
        else UrlTarget(args.target, ca_file=args.ca, insecure=args.insecure)
    )
    console = Console(width=None if sys.stdout.isatty() else 200)
    log = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
    with target:
        run = run_cases(
            target,
            cases,
            slow=args.slow,
            named=named(args.cases),
            artifacts=args.artifacts,
            progress=lambda r: log.print(progress_line(r), highlight=False),
            link=None if link is None else link.model_dump(),
        )
    console.print(result_table(run))
    if args.junit is not None:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_bytes(junit_xml(run))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(run), indent=2) + "\n")
    return run.exit_code


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
    _add_merge,
    _add_k8s,
    _add_vm,
    _add_compose,
    _add_conform,
)


def build_parser() -> argparse.ArgumentParser:
    """The `lab` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def error_line(command: str, error: LabError) -> str:
    """The one stderr line for a user-facing error (a scenario error already names its file)."""
    text = " ".join(str(error).split())
    return text if isinstance(error, ScenarioError) else f"lab {command}: {text}"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    install_signal_handlers()  # SIGTERM/SIGHUP unwind like Ctrl-C, so teardown runs
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except LabError as e:
        print(error_line(args.command, e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
