"""Orchestration of `lab run`: the only place that starts processes.

For every cell and repetition (`plan`):

    topology up → impairment (emulator in the router ns, or tc netem) → server in the server ns
    (with its readiness check) → for each protocol (h2,h3 on even repetitions, h3,h2 on odd)
    the agent (`python -m lab.agent`) in the client ns → collect (agent rows, CPU, emulator
    report) → aggregates (lab.workloads.aggregate) → append_samples, mark_completed →
    teardown, always (finally: also on Ctrl-C, timeouts and crashes).

A failed cell is recorded with `record_error` and the run goes on; Ctrl-C stops cleanly, keeps
finished cells and marks the run "interrupted" (`lab run --resume results/<run>` continues).
Time spent in set-up, teardown and collection (overhead) versus inside the workloads is
measured and recorded in run.json (`timing`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from lab.peers.proc import stop as stop_process
from lab.results import RunResults, RunWriter, make_run_id, open_for_resume
from lab.scenario import Cell, Scenario, StackSpec, expand_cells
from lab.workloads import estimate_s
from lab.workloads.aggregate import CpuUsage, aggregate

Backend = Literal["netem", "emulator"]
SERVER_PORT = 8443
SERVER_READY_TIMEOUT_S = 20.0
AGENT_READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 3.0
# Calibrated on the 2-core box (see docs/running.md): fixed costs of one cell-repetition and
# of one agent (process start, imports, connection set-up beyond the workload's own estimate).
CELL_OVERHEAD_S = 2.5
AGENT_OVERHEAD_S = 1.0


class RunError(RuntimeError):
    """The run cannot start (e.g. the backend cannot express the link, unknown server)."""


# --- pure helpers -------------------------------------------------------------------------
def protocol_order(protocols: Sequence[str], repetition: int) -> list[str]:
    """The scenario's protocol order on even repetitions, reversed on odd ones."""
    out = list(protocols)
    return out if repetition % 2 == 0 else out[::-1]


def plan(cells: Sequence[Cell], repeat: int) -> list[tuple[Cell, int]]:
    """(cell, repetition) pairs in run order: every cell of repetition 0, then of 1, …
    (so an interrupted run has covered every cell once as early as possible)."""
    return [(c, r) for r in range(repeat) for c in cells]


def cell_seed(cell: Cell, repetition: int) -> int:
    """The emulator seed of (cell, repetition), derived from the scenario seed with
    numpy's SeedSequence([scenario seed, cell index, repetition])."""
    return cell.seed(repetition)


def downlink_rate(cell: Cell) -> float | None:
    """The server → client rate in Mbit/s (None = unlimited)."""
    return cell.link.downlink.rate_mbit


def mean_loss(cell: Cell) -> float:
    """The downlink's mean random loss probability (0 for drop lists and no loss)."""
    loss = cell.link.downlink.loss
    if loss.model == "bernoulli":
        return float(loss.rate)
    if loss.model == "gilbert_elliott":
        return float(loss.mean_loss)
    return 0.0


def effective_rate(cell: Cell) -> float | None:
    """Expected bulk goodput (Mbit/s) for estimates: the link rate, capped by loss-limited
    throughput (Mathis: 1.22 × MSS / (RTT × √p), × 1.5 since cubic recovers faster than the
    Reno model — calibrated on lossy.yaml); None = unlimited."""
    rate = downlink_rate(cell)
    p, rtt_s = mean_loss(cell), cell.link.base_rtt_ms / 1e3
    if p > 0 and rtt_s > 0:
        mathis = 1.5 * 1.22 * 1448 * 8 / (rtt_s * p**0.5) / 1e6
        rate = mathis if rate is None else min(rate, mathis)
    return rate


def estimate_cell_s(cell: Cell) -> float:
    """Estimated seconds of one repetition of `cell` (all protocols, overhead included)."""
    rtt, rate = cell.link.base_rtt_ms, effective_rate(cell)
    per_protocol = AGENT_OVERHEAD_S + sum(estimate_s(w, rtt, rate) for w in cell.workloads)
    return CELL_OVERHEAD_S + len(cell.scenario.protocols) * per_protocol


def estimate_run_s(pairs: Sequence[tuple[Cell, int]]) -> float:
    """Estimated seconds of the given (cell, repetition) pairs."""
    return sum(estimate_cell_s(c) for c, _ in pairs)


def axis_value(value: Any) -> Any:
    """An axis value as a parquet-friendly scalar (lists and mappings as JSON text)."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return json.dumps(value, sort_keys=True)


def bytes_sizes(cell: Cell) -> tuple[int, ...]:
    """Every /bytes/{n} size the cell's workloads fetch (for servers that pre-write files)."""
    sizes: set[int] = set()
    for w in cell.workloads:
        for attr in ("object_bytes", "rpc_bytes", "bulk_bytes", "response_bytes", "get_bytes"):
            if hasattr(w, attr):
                sizes.add(int(getattr(w, attr)))
        if w.kind == "bulk":
            sizes.add(int(w.bytes))
    return tuple(sorted(sizes))


def cell_stack(cell: Cell, quic_engine: str | None = None) -> StackSpec:
    """The stack settings a cell runs with: the cell's `stack:` (matrix values applied), with
    `quic_engine` (the `lab run --quic-engine` flag) overriding the scenario's when given, and
    max_concurrent_streams capped by any k8s_mix workload's `max_concurrent_streams`."""
    stack = cell.scenario.stack
    update: dict[str, Any] = {}
    if quic_engine is not None:
        update["quic_engine"] = quic_engine
    caps = [w.max_concurrent_streams for w in cell.workloads if w.kind == "k8s_mix"]
    if caps and min(caps) < stack.max_concurrent_streams:
        update["max_concurrent_streams"] = min(caps)
    return stack.model_copy(update=update) if update else stack


def reference_serve_args(stack: StackSpec) -> list[str]:
    """`lab serve` flags that give the reference server `stack`."""
    args = [
        "--quic-engine",
        stack.quic_engine,
        "--max-streams",
        str(stack.max_concurrent_streams),
        "--cc",
        stack.quic_congestion_control,
        "--h2-cc",
        stack.tcp_congestion,
    ]
    if stack.tcp_notsent_lowat_bytes is not None:
        args += ["--notsent-lowat", str(stack.tcp_notsent_lowat_bytes)]
    return args


def reference_config(stack: StackSpec) -> Any:
    """The ServerConfig `lab serve` builds from `reference_serve_args(stack)` (for run.json)."""
    from lab.http.settings import H2Settings, QuicSettings, ServerConfig

    return ServerConfig(
        h2=H2Settings(
            max_concurrent_streams=stack.max_concurrent_streams,
            tcp_congestion=stack.tcp_congestion,
            tcp_notsent_lowat_bytes=stack.tcp_notsent_lowat_bytes,
        ),
        quic=QuicSettings(
            engine=stack.quic_engine,
            congestion_control=stack.quic_congestion_control,
            max_concurrent_streams=stack.max_concurrent_streams,
        ),
    )


def cell_frame(
    cell: Cell,
    repetition: int,
    protocol: str,
    implementation: str,
    agent_result: dict[str, Any],
    *,
    emulator: bool,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """samples rows of one agent result (one protocol), and the (workload, error) failures."""
    rows: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    base_rtt, rate = cell.link.base_rtt_ms, downlink_rate(cell)
    axes = {k: axis_value(v) for k, v in cell.axes.items()}
    for w in agent_result["workloads"]:
        if w["error"]:
            errors.append((w["kind"], w["error"]))
            continue
        params = cell.workloads[w["index"]]
        cpu = w["cpu"]
        usage = CpuUsage(
            server_s=cpu["server_s"] or 0.0,
            client_s=cpu["client_s"] or 0.0,
            emulator_s=(cpu["emulator_s"] or 0.0) if emulator else None,
            wall_s=w["wall_s"],
        )
        try:
            out = aggregate(
                w["kind"], params, w["rows"], base_rtt_ms=base_rtt, rate_mbit=rate, cpu=usage
            )
        except ValueError as e:
            errors.append((w["kind"], f"aggregation failed: {e}"))
            continue
        for r in out:
            r.update(
                cell=cell.id,
                repetition=repetition,
                protocol=protocol,
                workload=w["kind"],
                implementation=implementation,
                **axes,
            )
            rows.append(r)
    return pd.DataFrame(rows), errors


def default_backend() -> Backend:
    """netem where the kernel has it, else the userspace emulator."""
    from lab.link.netem import netem_available

    return "netem" if netem_available() else "emulator"


# --- run options and outcome --------------------------------------------------------------
@dataclass
class RunOptions:
    """How to run a scenario (the `lab run` flags)."""

    backend: Backend | None = None  # None: default_backend()
    out_dir: Path = Path("results")
    repeat: int | None = None  # override the scenario's repeat
    quic_engine: str | None = None  # override the scenario's stack.quic_engine in every cell
    agent_timeout_factor: float = 4.0


@dataclass
class CellOutcome:
    """What happened in one (cell, repetition)."""

    cell: str
    repetition: int
    ok: bool
    seed: int
    prefix: str = ""  # the topology's name prefix (namespaces <prefix>-cli/-rtr/-srv)
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # emulator flags (lateness, TUN drops)
    load_avg: float | None = None  # host 1-min load average at the end (other processes' CPU)
    setup_s: float = 0.0
    workload_s: float = 0.0
    collect_s: float = 0.0
    teardown_s: float = 0.0
    wall_s: float = 0.0


@dataclass
class RunOutcome:
    """The end of `run_scenario`: where the run is, its status and what it measured."""

    path: Path
    status: str
    results: RunResults | None
    cells: list[CellOutcome]
    wall_s: float
    workload_s: float

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.wall_s - self.workload_s)


@dataclass
class _Agent:
    """A started agent process of one protocol."""

    protocol: str
    proc: subprocess.Popen[bytes]
    out_file: Path
    log: Path
    limit: float  # seconds it may run after `go`
    wall_s: float = 0.0  # from `go` to its exit


class Hooks:
    """Progress callbacks (lab.progress implements them); the default does nothing."""

    def start(self, total: int, done: int, estimate_s: float) -> None: ...
    def cell_started(self, cell: Cell, repetition: int) -> None: ...
    def phase(self, text: str) -> None: ...
    def cell_finished(self, outcome: CellOutcome) -> None: ...
    def close(self) -> None: ...


# --- processes ----------------------------------------------------------------------------
def _stop_process(proc: subprocess.Popen[bytes] | None, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, wait `grace_s`, SIGKILL (nothing when there is no process)."""
    if proc is not None:
        stop_process(proc, grace_s)


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


# --- the runner ---------------------------------------------------------------------------
class Runner:
    """Runs the (cell, repetition) pairs of one scenario into one RunWriter."""

    def __init__(
        self,
        scenario: Scenario,
        cells: list[Cell],
        writer: RunWriter,
        *,
        backend: Backend,
        repeat: int,
        quic_engine: str | None = None,
        hooks: Hooks | None = None,
        agent_timeout_factor: float = 4.0,
    ) -> None:
        from lab.peers import registry

        self.scenario = scenario
        self.cells = cells
        self.writer = writer
        self.backend = backend
        self.repeat = repeat
        self.quic_engine = quic_engine
        self.hooks = hooks or Hooks()
        self.agent_timeout_factor = agent_timeout_factor
        self.impl = registry.get(scenario.server)
        self.workdir = Path(tempfile.mkdtemp(prefix="lab-run-"))
        self.cert_dir = self.workdir / "tls"

    # one (cell, repetition) -------------------------------------------------------------
    def run_cell(self, cell: Cell, repetition: int) -> CellOutcome:
        """Run one repetition of one cell; teardown always. Raises only KeyboardInterrupt /
        SystemExit (after teardown); other failures are recorded in the outcome."""
        from lab.link.emulator import EmulatorProcess
        from lab.net.topology import Topology

        seed = cell_seed(cell, repetition)
        out = CellOutcome(cell.id, repetition, ok=False, seed=seed)
        t0 = time.monotonic()
        tag = f"{cell.id}-{repetition}"
        topo = Topology(tun_steering=self.backend == "emulator")
        out.prefix = topo.prefix
        current = {"cell": cell.id, "repetition": repetition, "prefix": topo.prefix}
        self.writer.update_meta(current=current)
        emu: EmulatorProcess | None = None
        server: subprocess.Popen[bytes] | None = None
        logs = self.writer.path / "logs"
        logs.mkdir(exist_ok=True)
        frames: list[pd.DataFrame] = []
        agents: list[_Agent] = []
        try:
            self.hooks.phase("topology")
            topo.up()
            self.hooks.phase("impairment")
            if self.backend == "emulator":
                emu = EmulatorProcess(
                    topo, cell.link, seed, self.writer.path / "emulator" / tag, realtime=True
                )
                emu.start()
            else:
                self._apply_netem(topo, cell)
            self.hooks.phase("server")
            server, server_ctx = self._spawn_server(topo, cell, logs / f"{tag}-server.log")
            order = protocol_order(cell.scenario.protocols, repetition)
            emu_pid = emu.pid if emu else None
            for protocol in order:  # they load while the server starts, then wait for `go`
                agents.append(
                    self._spawn_agent(topo, cell, protocol, tag, logs, server.pid, emu_pid)
                )
            self._wait_server(topo, server, server_ctx, logs / f"{tag}-server.log")
            out.setup_s = time.monotonic() - t0
            for agent in agents:
                protocol = agent.protocol
                self.hooks.phase(protocol)
                result = self._run_agent(agent)
                out.workload_s += sum(w["wall_s"] for w in result["workloads"])
                frame, errors = cell_frame(
                    cell,
                    repetition,
                    protocol,
                    self.impl.name,
                    result,
                    emulator=emu is not None,
                )
                for kind, err in errors:
                    out.errors.append(f"{protocol}/{kind}: {err}")
                    self.writer.record_error(cell.id, repetition, protocol, kind, err)
                frames.append(frame)
            self.hooks.phase("collect")
            tc = time.monotonic()
            if emu is not None:
                report = emu.stop()
                emu = None
                out.problems = report.problems()
            frames = [f for f in frames if len(f)]
            if frames:
                self.writer.append_samples(pd.concat(frames, ignore_index=True))
            out.ok = True
            self._stage_record(out)  # persisted with the completed pair, in one write
            self.writer.mark_completed(cell.id, repetition)
            out.collect_s = time.monotonic() - tc
        except Exception as e:  # the cell failed; the run goes on
            msg = f"{type(e).__name__}: {e}"
            out.errors.append(msg)
            self.writer.record_error(cell.id, repetition, None, None, msg)
        finally:
            td = time.monotonic()
            self.hooks.phase("teardown")
            with _deferred_interrupts():  # a second Ctrl-C must not cut the teardown short
                for agent in agents:
                    _stop_process(agent.proc, 0.5)
                _stop_process(server)
                if emu is not None:
                    with contextlib.suppress(Exception):
                        emu._kill()
                topo.down()
            out.teardown_s = time.monotonic() - td
            out.wall_s = time.monotonic() - t0
            out.load_avg = round(os.getloadavg()[0], 2)
        return out

    def _apply_netem(self, topo: Any, cell: Cell) -> None:
        from lab.link.netem import netem_commands

        cmds = netem_commands(
            cell.link,
            uplink_dev=topo.names.router_server_if,
            downlink_dev=topo.names.router_client_if,
            netns=topo.router_ns,
        )
        for argv in cmds:
            p = subprocess.run(argv, capture_output=True, text=True, check=False)
            if p.returncode != 0:
                raise RunError(f"{' '.join(argv)}: {p.stderr.strip()}")

    def server_context(self, cell: Cell) -> Any:
        from lab.peers.registry import ServerContext

        return ServerContext(
            host="::",
            port=SERVER_PORT,
            workdir=self.workdir / "server",
            cert_dir=self.cert_dir,
            bytes_sizes=bytes_sizes(cell),
        )

    def _spawn_server(
        self, topo: Any, cell: Cell, log: Path
    ) -> tuple[subprocess.Popen[bytes], Any]:
        """Start the server in the server namespace (not yet ready); (process, context)."""
        ctx = self.server_context(cell)
        spec = self.impl.launch(ctx)
        argv = list(spec.argv)
        if self.impl.name == "reference":
            argv += reference_serve_args(cell_stack(cell, self.quic_engine))
        env = {**os.environ, **spec.env}
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                topo.run_in(topo.server_ns, argv),
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the runner only; it stops the rest
            )
        return proc, ctx

    def _wait_server(self, topo: Any, proc: subprocess.Popen[bytes], ctx: Any, log: Path) -> None:
        """Poll the implementation's readiness check from inside the server namespace."""
        from lab.net import nsenter

        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RunError(f"server exited with {proc.returncode}: {_tail(log)}")
            with nsenter.enter(topo.server_ns):
                if self.impl.ready(ctx, timeout_s=0.2):
                    return
            if time.monotonic() > deadline:
                raise RunError(f"server not ready after {SERVER_READY_TIMEOUT_S} s: {_tail(log)}")

    def _spawn_agent(
        self,
        topo: Any,
        cell: Cell,
        protocol: str,
        tag: str,
        logs: Path,
        server_pid: int,
        emulator_pid: int | None,
    ) -> _Agent:
        """Start the agent of one protocol; it loads and waits for `go` (see `_run_agent`)."""
        out_file = self.workdir / f"{tag}-{protocol}.json"
        cfg = agent_config(
            cell,
            self.quic_engine,
            protocol=protocol,
            host=topo.server_v4,
            port=SERVER_PORT,
            ca_file=str(self.cert_dir / "ca.pem"),  # every server gets the lab's leaf
            early_data_header=self.impl.early_data_header,
            server_pid=server_pid,
            emulator_pid=emulator_pid,
            out=str(out_file),
            timeout_factor=self.agent_timeout_factor,
        )
        cfg_file = self.workdir / f"{tag}-{protocol}-config.json"
        cfg_file.write_text(cfg.model_dump_json())
        log = logs / f"{tag}-{protocol}-agent.log"
        rate = effective_rate(cell)
        limit = sum(
            self.agent_timeout_factor * estimate_s(w, cfg.base_rtt_ms, rate) + 25
            for w in cell.workloads
        )
        argv = [sys.executable, "-m", "lab.agent", "--config", str(cfg_file), "--wait-go"]
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                topo.run_in(topo.client_ns, argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=f,
                start_new_session=True,
            )
        return _Agent(protocol, proc, out_file, log, limit)

    def _run_agent(self, agent: _Agent) -> dict[str, Any]:
        """Wait for the agent's `ready`, say `go`, wait for it to finish; its result dict."""
        import select

        proc = agent.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            ready, _, _ = select.select([proc.stdout], [], [], AGENT_READY_TIMEOUT_S)
            line = proc.stdout.readline() if ready else b""
            if line.strip() != b"ready":
                raise RunError(
                    f"{agent.protocol} agent did not start (rc {proc.poll()}): {_tail(agent.log)}"
                )
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            t_go = time.monotonic()
            try:
                rc = proc.wait(agent.limit)
                agent.wall_s = time.monotonic() - t_go
            except subprocess.TimeoutExpired:
                raise RunError(
                    f"{agent.protocol} agent did not finish within {agent.limit:.0f} s"
                ) from None
        finally:
            _stop_process(proc, 1.0)
            proc.stdout.close()
        if rc != 0 or not agent.out_file.exists():
            raise RunError(f"{agent.protocol} agent exited with {rc}: {_tail(agent.log)}")
        return json.loads(agent.out_file.read_text())

    # the whole run ----------------------------------------------------------------------
    def run(self, pairs: Sequence[tuple[Cell, int]]) -> tuple[list[CellOutcome], bool]:
        """Run `pairs` (skipping completed ones); (outcomes, interrupted)."""
        from lab.http.tls import ensure_certs

        ensure_certs(self.cert_dir)
        outcomes: list[CellOutcome] = []
        todo = [(c, r) for c, r in pairs if not self.writer.is_completed(c.id, r)]
        self.hooks.start(len(pairs), len(pairs) - len(todo), estimate_run_s(todo))
        interrupted = False
        try:
            for cell, rep in todo:
                self.hooks.cell_started(cell, rep)
                outcome = self.run_cell(cell, rep)
                outcomes.append(outcome)
                self._record_cell(outcome)
                self.hooks.cell_finished(outcome)
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM, SIGHUP: stop cleanly
            interrupted = True
        finally:
            self.hooks.close()
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)
        return outcomes, interrupted

    def _cell_record(self, o: CellOutcome) -> dict[str, Any]:
        """run.json `cell_runs` entry of one outcome (keeps an earlier `finished_utc`)."""
        key = f"{o.cell}-{o.repetition}"
        earlier = self.writer.meta.get("cell_runs", {}).get(key, {})
        return {
            "seed": o.seed,
            "prefix": o.prefix,
            "ok": o.ok,
            "problems": o.problems,
            "load_avg_1min": o.load_avg,
            "errors": o.errors,
            "finished_utc": earlier.get("finished_utc")
            or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **{
                k: round(getattr(o, k), 3)
                for k in ("wall_s", "setup_s", "workload_s", "collect_s", "teardown_s")
            },
        }

    def _stage_record(self, o: CellOutcome) -> None:
        """Put the outcome into run.json's in-memory meta; the next write persists it (so
        `mark_completed` and the record land in one atomic write)."""
        runs = dict(self.writer.meta.get("cell_runs", {}))
        runs[f"{o.cell}-{o.repetition}"] = self._cell_record(o)
        self.writer.meta["cell_runs"] = runs

    def _record_cell(self, o: CellOutcome) -> None:
        runs = dict(self.writer.meta.get("cell_runs", {}))
        runs[f"{o.cell}-{o.repetition}"] = self._cell_record(o)
        flagged = sorted(
            {
                *self.writer.meta.get("flagged", []),
                *([f"{o.cell}-{o.repetition}"] if o.problems else []),
            }
        )
        self.writer.update_meta(cell_runs=runs, flagged=flagged, current=None)


def agent_config(cell: Cell, quic_engine: str | None, **fields: Any) -> Any:
    """The AgentConfig of `cell` (its link, workloads and stack settings) plus `fields`."""
    from lab.agent import AgentConfig

    return AgentConfig(
        base_rtt_ms=cell.link.base_rtt_ms,
        rate_mbit=downlink_rate(cell),
        expected_rate_mbit=effective_rate(cell),
        workloads=list(cell.workloads),
        stack=cell_stack(cell, quic_engine),
        **fields,
    )


# --- metadata -----------------------------------------------------------------------------
def stacks_info(
    server: str, cells: Sequence[Cell], quic_engine: str | None = None
) -> dict[str, Any]:
    """Stack settings of the server and the client for run.json: `stack`, `client` and (for
    the reference server) `reference` are those of the first cell; when cells differ,
    `per_cell` maps every cell id to the `stack:` values it ran with."""
    from lab.agent import client_settings

    stacks = {c.id: cell_stack(c, quic_engine) for c in cells}
    first = next(iter(stacks.values()))
    h2, quic = client_settings(first)
    out: dict[str, Any] = {
        "stack": first.model_dump(mode="json"),
        "client": _jsonable({"h2": asdict(h2), "quic": asdict(quic)}),
    }
    if len({s.model_dump_json() for s in stacks.values()}) > 1:
        out["per_cell"] = {cid: s.model_dump(mode="json") for cid, s in stacks.items()}
    if server == "reference":
        out["reference"] = _jsonable(reference_config(first).report())
        out["reference"]["tcp_segment_bytes"] = 1448
    else:
        from lab.peers import registry

        impl = registry.get(server)
        version = None
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            p = subprocess.run(
                list(impl.version_argv), capture_output=True, text=True, timeout=5, check=False
            )
            version = (
                (p.stdout or p.stderr).strip().splitlines()[0] if (p.stdout or p.stderr) else None
            )
        out[server] = {
            "description": impl.description,
            "version": version,
            "settings": "the implementation's defaults",
        }
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def impairment_info(backend: Backend, cells: Sequence[Cell]) -> dict[str, Any]:
    """What the backend applies per cell (run.json `impairment`)."""
    applied: dict[str, Any] = {}
    for cell in cells:
        link = cell.link.model_dump(mode="json")
        if backend == "netem":
            from lab.link.netem import netem_commands

            cmds = netem_commands(
                cell.link,
                uplink_dev="<router-server-if>",
                downlink_dev="<router-client-if>",
                netns="<router-ns>",
            )
            applied[cell.id] = {"link": link, "tc": [" ".join(c) for c in cmds], "seeded": False}
        else:
            applied[cell.id] = {
                "link": link,
                "tool": "lab.link.emulator (seeded per cell and repetition)",
            }
    return {"backend": backend, "applied": applied}


def check_backend(backend: Backend, cells: Sequence[Cell]) -> None:
    """Raise RunError when `backend` cannot express some cell's link."""
    if backend != "netem":
        return
    from lab.link.netem import UnsupportedByNetem, netem_commands

    for cell in cells:
        try:
            netem_commands(cell.link, uplink_dev="x", downlink_dev="y")
        except UnsupportedByNetem as e:
            raise RunError(f"cell {cell.id}: {e}") from None


# --- entry points -------------------------------------------------------------------------
@dataclass
class Prepared:
    """A run ready to start: the writer exists, nothing ran yet."""

    scenario: Scenario
    cells: list[Cell]
    pairs: list[tuple[Cell, int]]
    todo: list[tuple[Cell, int]]
    writer: RunWriter
    backend: Backend
    repeat: int
    quic_engine: str | None  # the --quic-engine override (None: each cell's stack.quic_engine)
    resumed: bool


def describe(scenario: Scenario, options: RunOptions) -> tuple[int, int, float]:
    """(cells, repetitions, estimated seconds) of a scenario — before anything is created."""
    cells = expand_cells(scenario)
    repeat = options.repeat or scenario.repeat
    return len(cells), repeat, estimate_run_s(plan(cells, repeat))


def prepare(scenario: Scenario, scenario_file: str | None, options: RunOptions) -> Prepared:
    """Create the run directory and run.json for a new run."""
    from lab.peers import registry

    try:
        impl = registry.get(scenario.server)
    except KeyError as e:
        raise RunError(str(e.args[0])) from None
    unsupported = sorted({w.kind for w in scenario.workloads if not impl.supports(w.kind)})
    if unsupported:
        raise RunError(f"server {impl.name!r} cannot serve workload(s) {unsupported}")
    cells = expand_cells(scenario)
    repeat = options.repeat or scenario.repeat
    backend = options.backend or default_backend()
    check_backend(backend, cells)
    now = datetime.now(UTC)
    path = options.out_dir / make_run_id(scenario.name, now, secrets.token_hex(2))
    writer = RunWriter.create(
        path,
        scenario=scenario.resolved(),
        seed=scenario.seed,
        cells=[
            {
                "cell": c.id,
                "axes": c.axes,
                "link": c.link.model_dump(mode="json"),
                "stack": cell_stack(c, options.quic_engine).model_dump(mode="json"),
            }
            for c in cells
        ],
        scenario_file=scenario_file,
        impairment=impairment_info(backend, cells),
        stacks=stacks_info(scenario.server, cells, options.quic_engine),
        extra={
            "repeat": repeat,
            "quic_engine": cell_stack(cells[0], options.quic_engine).quic_engine,
            "quic_engine_override": options.quic_engine,
            "implementation": scenario.server,
        },
        now=now,
    )
    pairs = plan(cells, repeat)
    return Prepared(
        scenario, cells, pairs, pairs, writer, backend, repeat, options.quic_engine, False
    )


def prepare_resume(path: Path) -> Prepared:
    """Reopen an interrupted run; the scenario, backend and repeat come from its run.json."""
    writer = open_for_resume(path)
    meta = writer.meta
    doc = {k: v for k, v in meta["scenario"].items() if k in Scenario.model_fields}
    scenario = Scenario.model_validate(doc)
    cells = expand_cells(scenario)
    repeat = int(meta.get("repeat") or scenario.repeat)
    backend: Backend = meta.get("impairment", {}).get("backend") or default_backend()
    pairs = plan(cells, repeat)
    todo = [(c, r) for c, r in pairs if not writer.is_completed(c.id, r)]
    return Prepared(
        scenario,
        cells,
        pairs,
        todo,
        writer,
        backend,
        repeat,
        # runs before `stack:` existed recorded only the flag's value as quic_engine
        meta["quic_engine_override"] if "quic_engine_override" in meta else meta.get("quic_engine"),
        True,
    )


def execute(prep: Prepared, hooks: Hooks | None = None) -> RunOutcome:
    """Run the prepared pairs; finish the run ("complete" or "interrupted")."""
    t0 = time.monotonic()
    runner = Runner(
        prep.scenario,
        prep.cells,
        prep.writer,
        backend=prep.backend,
        repeat=prep.repeat,
        quic_engine=prep.quic_engine,
        hooks=hooks,
    )
    with _sigterm_as_interrupt():
        outcomes, interrupted = runner.run(prep.pairs)
    wall = time.monotonic() - t0
    workload = sum(o.workload_s for o in outcomes)
    timing = dict(
        prep.writer.meta.get("timing") or {"wall_s": 0.0, "overhead_s": 0.0, "workload_s": 0.0}
    )
    timing = {
        "wall_s": round(timing["wall_s"] + wall, 3),
        "workload_s": round(timing["workload_s"] + workload, 3),
    }
    timing["overhead_s"] = round(max(0.0, timing["wall_s"] - timing["workload_s"]), 3)
    timing["overhead_fraction"] = (
        round(timing["overhead_s"] / timing["wall_s"], 4) if timing["wall_s"] else None
    )
    prep.writer.update_meta(timing=timing, backend=prep.backend)
    status = "interrupted" if interrupted else "complete"
    results = prep.writer.finish(status)
    return RunOutcome(prep.writer.path, status, results, outcomes, wall, workload)


@contextlib.contextmanager
def _deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM during the block; raise KeyboardInterrupt after it if one came."""
    got: list[int] = []

    def hold(signum: int, frame: object) -> None:
        got.append(signum)

    try:
        old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if got:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C while the run goes on (clean stop, resumable)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
