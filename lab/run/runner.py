"""Orchestration of `lab run`: the only place that starts processes.

For every cell and repetition (`plan`):

    topology up → impairment (emulator in the router ns, or tc netem) → server in the server ns
    (with its readiness check) → for each protocol (h2,h3 on even repetitions, h3,h2 on odd)
    the emulator's link models restart from the cell's seed (`EmulatorProcess.reseed`: both
    protocols meet the same drop decisions by packet index — common random numbers), then the
    agent (`python -m lab.run.agent`, or `lab-go-agent` for `client: go`) runs in the client
    ns while an inet_diag sampler notes each TCP connection's congestion control and each UDP
    socket's buffers (lab.net.inet_diag, lab.run.senders) → the emulator stops → collect
    (agent rows, CPU, each protocol's share of the drop log) → aggregates
    (lab.workloads.aggregate) → append_samples, mark_completed → teardown, always (an
    ExitStack: also on Ctrl-C, timeouts and crashes).

Every cell runs its own `server`, `client` and `address_family` (matrix axes like any other);
workloads its server cannot serve are left out and listed in run.json `skipped`
(lab.run.skipped). The cell's `stack.tcp_congestion` is set on the end namespaces' routes
(`congctl`), so every implementation's TCP uses it.

The runner owns every lifetime: each teardown is registered with `lab.run.lifecycle.owned`, so
it runs when the cell ends and, should the runner never get there, at interpreter exit. While
it waits for an agent it watches the other children (lab.run.children): a dead emulator, server
or waiting agent fails the repetition at once.

A failed cell is recorded with `record_error` and the run goes on; Ctrl-C stops cleanly, keeps
finished cells and marks the run "interrupted" (`lab run --resume results/<run>` continues).
Time spent in set-up, teardown and collection (overhead) versus inside the workloads is
measured and recorded in run.json (`timing`).

The run holds a run lock (lab.net.runlock) whose prefix names its work directory
(`<tmp>/lab-run-<prefix>`, lab.net.workdir), so `lab clean` removes it after a SIGKILL.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from lab.errors import HostNotCapable, PeerError, RunError, RunSetupError
from lab.http.tls import ensure_certs
from lab.link.emulator import EmulatorProcess
from lab.link.netem import UnsupportedByNetem, netem_available, netem_commands
from lab.net import nsenter
from lab.net.inet_diag import Sampled, Sampler, Seen
from lab.net.names import new_prefix
from lab.net.runlock import RunLock
from lab.net.topology import Topology
from lab.net.workdir import create_workdir, workdir_path
from lab.peers import go, registry
from lab.peers.proc import stop as stop_process
from lab.peers.registry import ServerContext, ServerImplementation
from lab.results.meta import read_meta
from lab.results.provenance import make_run_id
from lab.results.reader import RunResults
from lab.results.schema import SCHEMA_VERSION, RunStatus
from lab.results.writer import RunWriter, open_for_resume
from lab.run.children import Child, check_alive, tail, wait_exit, wait_readable
from lab.run.collect import cell_frame
from lab.run.lifecycle import deferred_interrupts, owned, sigterm_as_interrupt
from lab.run.machine import machine_info
from lab.run.plan import (
    Shard,
    bytes_sizes,
    cell_seed,
    effective_rate,
    estimate_run_s,
    plan,
    protocol_order,
    shard_pairs,
)
from lab.run.records import (
    Backend,
    CellOutcome,
    cell_key,
    cell_record,
    impairment_info,
    machine_record,
    plan_record,
    shard_record,
)
from lab.run.sender_sampler import TcpSenderSampler
from lab.run.senders import transport_record
from lab.run.server_logs import ServerLogs, read_server_logs
from lab.run.skipped import restore_indices, served, skipped_record
from lab.run.stack import agent_config, cell_stack, reference_serve_args
from lab.run.stack import stacks_info as _stacks_info
from lab.scenario.matrix import expand_cells, resolved
from lab.scenario.models import Cell, Scenario
from lab.workloads import estimate_s

SERVER_PORT = 8443
SERVER_READY_TIMEOUT_S = 20.0
AGENT_READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 3.0
AGENT_STOP_GRACE_S = 0.5
# Between two protocols' phases the link is left this long (base RTTs + s) before the emulator
# restarts from the seed: the closing handshake of the phase before (FIN/ACK, CONNECTION_CLOSE)
# is then through, and packet 0 of the next phase is its own first packet.
SETTLE_RTTS = 2.0
SETTLE_EXTRA_S = 0.05


def default_backend() -> Backend:
    """netem where the kernel has it, else the userspace emulator."""
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
    shard: Shard | None = None  # run only this shard of the plan (`--shard I/N`)


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
    indices: tuple[int, ...] = ()  # its workloads' positions in the scenario's list

    @property
    def label(self) -> str:
        return f"{self.protocol} agent"


class Hooks:
    """Progress callbacks (lab.run.progress implements them); the default does nothing."""

    def start(self, total: int, done: int, estimate_s: float) -> None: ...
    def cell_started(self, cell: Cell, repetition: int) -> None: ...
    def phase(self, text: str) -> None: ...
    def cell_finished(self, outcome: CellOutcome) -> None: ...
    def close(self) -> None: ...


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
        self.scenario = scenario
        self.cells = cells
        self.writer = writer
        self.backend = backend
        self.repeat = repeat
        self.quic_engine = quic_engine
        self.hooks = hooks or Hooks()
        self.agent_timeout_factor = agent_timeout_factor
        self.prefix = new_prefix()  # of the run's lock and work directory (`run` makes both)
        self.workdir = workdir_path(self.prefix)
        self.cert_dir = self.workdir / "tls"

    # one (cell, repetition) -------------------------------------------------------------
    def run_cell(self, cell: Cell, repetition: int) -> CellOutcome:
        """Run one repetition of one cell; teardown always. Raises only KeyboardInterrupt /
        SystemExit (after teardown); other failures are recorded in the outcome."""
        out = CellOutcome(cell.id, repetition, ok=False, seed=cell_seed(cell, repetition))
        t0 = time.monotonic()
        topo = Topology(
            tun_steering=self.backend == "emulator",
            tcp_congestion=cell_stack(cell, self.quic_engine).tcp_congestion,
        )
        out.prefix = topo.prefix
        current = {"cell": cell.id, "repetition": repetition, "prefix": topo.prefix}
        self.writer.update_meta(current=current)
        with self._teardown(out) as stack:
            try:
                self._run_phases(stack, topo, cell, repetition, out)
            except Exception as e:  # the cell failed; the run goes on
                msg = f"{type(e).__name__}: {e}"
                out.errors.append(msg)
                self.writer.record_error(cell.id, repetition, None, None, msg)
        out.wall_s = time.monotonic() - t0
        out.load_avg = round(os.getloadavg()[0], 2)
        return out

    @contextlib.contextmanager
    def _teardown(self, out: CellOutcome) -> Iterator[contextlib.ExitStack]:
        """The cell's teardowns (pushed with `owned`), unwound newest first on every way out
        (agents, server, emulator, topology) and timed into `out.teardown_s`."""
        stack = contextlib.ExitStack()
        try:
            yield stack
        finally:
            td = time.monotonic()
            self.hooks.phase("teardown")
            with deferred_interrupts():  # a second Ctrl-C must not cut the teardown short
                stack.close()
            out.teardown_s = time.monotonic() - td

    def _run_phases(
        self,
        stack: contextlib.ExitStack,
        topo: Topology,
        cell: Cell,
        repetition: int,
        out: CellOutcome,
    ) -> None:
        """Set up, run the agents, collect, mark completed; raises on any failure. Every
        process it starts is owned by `stack`."""
        t0 = time.monotonic()
        if not served(cell).workloads:  # its server serves none of them (run.json `skipped`)
            self._complete(out, t0)
            return
        tag = f"{cell.id}-{repetition}"
        logs = self.writer.path / "logs"
        logs.mkdir(exist_ok=True)
        self.hooks.phase("topology")
        owned(stack, f"topology {topo.prefix}", topo.down)
        topo.up()
        self.hooks.phase("impairment")
        emu = self._start_impairment(stack, topo, cell, out.seed, tag)
        watched = [] if emu is None else [Child("emulator", emu.poll, emu.stderr_path)]
        self.hooks.phase("server")
        server_log = logs / f"{tag}-server.log"
        server_logs = self._server_logs(tag)
        server, server_ctx = self._spawn_server(stack, topo, cell, server_log, server_logs)
        emu_pid = emu.pid if emu is not None else None
        agents = [  # they load while the server starts, then wait for `go`
            self._spawn_agent(stack, topo, cell, protocol, tag, logs, server.pid, emu_pid)
            for protocol in protocol_order(cell.scenario.protocols, repetition)
        ]
        waiting = [Child(a.label, a.proc.poll, a.log) for a in agents]
        impl = self.implementation(cell)
        self._wait_server(impl, topo, server, server_ctx, server_log, [*watched, *waiting])
        watched += [Child("server", server.poll, server_log), *waiting]
        out.setup_s = time.monotonic() - t0
        results: list[tuple[str, dict[str, Any]]] = []
        senders: dict[str, pd.DataFrame] = {}  # protocol → its server's sender samples
        phase_starts: list[int] = []  # emulator clock (ns) at each protocol's reseed
        for agent in agents:
            self.hooks.phase(agent.protocol)
            watched = [c for c in watched if c.label != agent.label]  # its exit ends its turn
            if emu is not None:
                if phase_starts:  # the last protocol's connection close must not get index 0
                    time.sleep(SETTLE_RTTS * cell.link.base_rtt_ms / 1e3 + SETTLE_EXTRA_S)
                phase_starts.append(emu.reseed())  # the same link decisions for each protocol
            result = self._run_sampled(topo, cell, agent, watched, out, senders)
            out.workload_s += sum(w["wall_s"] for w in result["workloads"])
            results.append((agent.protocol, result))
        self.hooks.phase("collect")
        tc = time.monotonic()
        check_alive(watched, "the collection")  # one that died after the last agent's end
        drop_logs: list[pd.DataFrame | None] = [None] * len(results)
        tcp_sent: list[pd.DataFrame | None] = [None] * len(results)  # per phase
        if emu is not None:
            report = emu.stop()
            out.problems = report.problems()
            drop_logs = list(phase_drops(report.drops(), phase_starts))
            tcp_sent = list(phase_drops(report.tcp_sent(), phase_starts))
        h2_sent = next((t for (p, _), t in zip(results, tcp_sent, strict=True) if p == "h2"), None)
        measured = read_server_logs(server_logs, h2_sent)
        quic_senders = measured.quic_senders
        if quic_senders is not None:
            senders["h3"] = quic_senders
        if "h3" in out.transport:
            out.transport["h3"]["sender_state"] = {
                "samples": 0 if quic_senders is None else len(quic_senders),
                "error": None if quic_senders is not None else "the server logs no QUIC state",
            }
        departures = measured.departures
        frames = []
        for (protocol, result), drops in zip(results, drop_logs, strict=True):
            frame, errors = cell_frame(
                cell,
                repetition,
                protocol,
                impl.name,
                result,
                emulator=emu is not None,
                drops=drops,
                senders=senders.get(protocol),
                departures=departures.get(protocol),
            )
            for kind, err in errors:
                out.errors.append(f"{protocol}/{kind}: {err}")
                self.writer.record_error(cell.id, repetition, protocol, kind, err)
            if len(frame):
                frames.append(frame)
        if frames:
            self.writer.append_samples(pd.concat(frames, ignore_index=True))
        out.ok = True
        self._stage_record(out)  # persisted with the completed pair, in one write
        self.writer.mark_completed(cell.id, repetition)
        out.collect_s = time.monotonic() - tc

    def _start_impairment(
        self, stack: contextlib.ExitStack, topo: Topology, cell: Cell, seed: int, tag: str
    ) -> EmulatorProcess | None:
        """Start the emulator (owned by `stack`) or apply tc netem (it goes with the router
        namespace); the emulator, or None with netem."""
        if self.backend != "emulator":
            self._apply_netem(topo, cell)
            return None
        out_dir = self.writer.path / "emulator" / tag
        emu = EmulatorProcess(topo, cell.link, seed, out_dir, realtime=True)
        owned(stack, f"emulator of {topo.prefix}", emu.kill)
        emu.start()
        return emu

    def _apply_netem(self, topo: Topology, cell: Cell) -> None:
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

    def implementation(self, cell: Cell) -> ServerImplementation:
        """The server implementation of `cell` (its `server:`, a matrix axis like any other)."""
        return registry.get(cell.scenario.server)

    def server_context(self, cell: Cell) -> ServerContext:
        stack = cell_stack(cell, self.quic_engine)
        return ServerContext(
            host="::",  # dual-stack: the cell's address_family picks the clients' address
            port=SERVER_PORT,
            workdir=self.workdir / "server",
            cert_dir=self.cert_dir,
            bytes_sizes=bytes_sizes(cell),
            tcp_congestion=stack.tcp_congestion,
            max_streams=stack.max_concurrent_streams,
        )

    def _server_logs(self, tag: str) -> ServerLogs:
        """Where the server of repetition `tag` writes what it measures of itself: kept in the
        results directory (`server/<tag>/`) as raw evidence, like the emulator's drop log."""
        return ServerLogs.under(self.writer.path / "server" / tag)

    def _spawn_server(
        self,
        stack: contextlib.ExitStack,
        topo: Topology,
        cell: Cell,
        log: Path,
        server_logs: ServerLogs,
    ) -> tuple[subprocess.Popen[bytes], ServerContext]:
        """Start the server in the server namespace (not yet ready; owned by `stack`), telling
        it where to log its QUIC sender state and its watch events' departures (a server that
        cannot ignores it); (process, context)."""
        ctx = self.server_context(cell)
        impl = self.implementation(cell)
        spec = impl.launch(ctx)
        argv = list(spec.argv)
        if impl.name == "reference":
            argv += reference_serve_args(cell_stack(cell, self.quic_engine))
        env = {**os.environ, **server_logs.env(), **spec.env}
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
        owned(stack, f"server {proc.pid}", functools.partial(stop_process, proc, STOP_GRACE_S))
        return proc, ctx

    def _wait_server(
        self,
        impl: ServerImplementation,
        topo: Topology,
        proc: subprocess.Popen[bytes],
        ctx: ServerContext,
        log: Path,
        watched: Sequence[Child],
    ) -> None:
        """Poll the implementation's readiness check from inside the server namespace (and the
        `watched` children meanwhile)."""
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise PeerError(f"server exited with {proc.returncode}: {tail(log)}")
            check_alive(watched, "the server's start")
            with nsenter.enter(topo.server_ns):
                if impl.ready(ctx, timeout_s=0.2):
                    return
            if time.monotonic() > deadline:
                raise PeerError(f"server not ready after {SERVER_READY_TIMEOUT_S} s: {tail(log)}")

    def _spawn_agent(
        self,
        stack: contextlib.ExitStack,
        topo: Topology,
        cell: Cell,
        protocol: str,
        tag: str,
        logs: Path,
        server_pid: int,
        emulator_pid: int | None,
    ) -> _Agent:
        """Start the agent of one protocol (owned by `stack`); it loads and waits for `go`
        (see `_run_agent`)."""
        out_file = self.workdir / f"{tag}-{protocol}.json"
        work = served(cell)
        cfg = agent_config(
            cell,
            self.quic_engine,
            workloads=work.workloads,
            protocol=protocol,
            host=server_address(topo, cell),
            port=SERVER_PORT,
            ca_file=str(self.cert_dir / "ca.pem"),  # every server gets the lab's leaf
            early_data_header=self.implementation(cell).early_data_header,
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
            for w in work.workloads
        )
        argv = agent_argv(cell, cfg_file)
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                topo.run_in(topo.client_ns, argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=f,
                start_new_session=True,
            )
        stop = functools.partial(stop_process, proc, AGENT_STOP_GRACE_S)
        owned(stack, f"{protocol} agent {proc.pid}", stop)
        return _Agent(protocol, proc, out_file, log, limit, indices=work.indices)

    def _run_agent(self, agent: _Agent, watched: Sequence[Child]) -> dict[str, Any]:
        """Wait for the agent's `ready`, say `go`, wait for it to finish while watching the
        other children (ChildExited as soon as one has died); its result dict."""
        proc = agent.proc
        assert proc.stdin is not None and proc.stdout is not None
        during = f"the {agent.protocol} workloads"
        try:
            ready = wait_readable(proc.stdout, AGENT_READY_TIMEOUT_S, watched, during)
            line = proc.stdout.readline() if ready else b""
            if line.strip() != b"ready":
                raise RunError(
                    f"{agent.protocol} agent did not start (rc {proc.poll()}): {tail(agent.log)}"
                )
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            t_go = time.monotonic()
            rc = wait_exit(proc, agent.limit, watched, during)
            if rc is None:
                raise RunError(f"{agent.protocol} agent did not finish within {agent.limit:.0f} s")
            agent.wall_s = time.monotonic() - t_go
            check_alive(watched, during)  # it may have ended early because another one died
        finally:
            stop_process(proc, 1.0)
            proc.stdout.close()
        if rc != 0 or not agent.out_file.exists():
            raise RunError(f"{agent.protocol} agent exited with {rc}: {tail(agent.log)}")
        return restore_indices(json.loads(agent.out_file.read_text()), agent.indices)

    def _run_sampled(
        self,
        topo: Topology,
        cell: Cell,
        agent: _Agent,
        watched: Sequence[Child],
        out: CellOutcome,
        senders: dict[str, pd.DataFrame],
    ) -> dict[str, Any]:
        """`_run_agent` with the inet_diag sampler running beside it; what the senders used
        goes into `out.transport[protocol]` (also when the agent fails). In an h2 phase the
        server's TCP sender state is sampled too (lab.run.sender_sampler) into
        `senders["h2"]`; how many samples, or why none, into `out.transport["h2"]`."""
        family = socket.AF_INET6 if cell.scenario.address_family == "ipv6" else socket.AF_INET
        sampler: Sampler | None = None
        unavailable = Sampled(Seen(), Seen(), 0, 0.0)
        try:
            sampler = Sampler(
                topo.server_ns,
                topo.client_ns,
                SERVER_PORT,
                transports=("tcp",) if agent.protocol == "h2" else ("udp",),
                client_families=(family,),
            ).start()
        except OSError as e:  # no sock_diag here: the run goes on without the measurement
            unavailable.error = f"inet_diag unavailable: {e}"
        tcp_senders: TcpSenderSampler | None = None
        sender_error: str | None = None
        if agent.protocol == "h2":
            try:
                tcp_senders = TcpSenderSampler(topo.server_ns, SERVER_PORT).start()
            except OSError as e:  # no tcp_info dump here: no sender-state metrics
                sender_error = f"tcp_info unavailable: {e}"
        result: dict[str, Any] = {}
        try:
            result = self._run_agent(agent, watched)
        finally:
            record = transport_record(
                agent.protocol,
                server=cell.scenario.server,
                client=cell.scenario.client,
                stack=cell_stack(cell, self.quic_engine),
                sampled=sampler.stop() if sampler is not None else unavailable,
                agent_result=result,
            )
            if tcp_senders is not None:
                frame = tcp_senders.stop()
                sender_error = tcp_senders.error
                senders["h2"] = frame
                record["sender_state"] = {"samples": len(frame), "error": sender_error}
            elif sender_error is not None:
                record["sender_state"] = {"samples": 0, "error": sender_error}
            out.transport[agent.protocol] = record
        return result

    def _complete(self, out: CellOutcome, t0: float) -> None:
        """Mark a pair completed that has nothing to run (every workload skipped)."""
        out.ok = True
        out.setup_s = time.monotonic() - t0
        self._stage_record(out)
        self.writer.mark_completed(out.cell, out.repetition)

    # the whole run ----------------------------------------------------------------------
    def run(self, pairs: Sequence[tuple[Cell, int]]) -> tuple[list[CellOutcome], bool]:
        """Run `pairs` (skipping completed ones); (outcomes, interrupted)."""
        outcomes: list[CellOutcome] = []
        todo = [(c, r) for c, r in pairs if not self.writer.is_completed(c.id, r)]
        interrupted = False
        with contextlib.ExitStack() as stack:
            self._hold_workdir(stack)
            ensure_certs(self.cert_dir)
            self.hooks.start(len(pairs), len(pairs) - len(todo), estimate_run_s(todo))
            stack.callback(self.hooks.close)
            try:
                for cell, rep in todo:
                    self.hooks.cell_started(cell, rep)
                    outcome = self.run_cell(cell, rep)
                    outcomes.append(outcome)
                    self._record_cell(outcome)
                    self.hooks.cell_finished(outcome)
            except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM, SIGHUP: stop cleanly
                interrupted = True
        return outcomes, interrupted

    def _hold_workdir(self, stack: contextlib.ExitStack) -> None:
        """Take the run lock, then create the work directory; when `stack` unwinds (or at exit)
        the directory goes, then the lock — so `lab clean` never takes a live one for dead."""
        lock = RunLock(self.prefix)
        lock.acquire()
        owned(stack, f"run lock {self.prefix}", lock.release)
        create_workdir(self.prefix)
        rmtree = functools.partial(shutil.rmtree, self.workdir, ignore_errors=True)
        owned(stack, f"work directory {self.workdir}", rmtree)

    def _cell_record(self, o: CellOutcome) -> dict[str, Any]:
        """run.json `cell_runs` entry of one outcome (keeps an earlier `finished_utc`)."""
        earlier = self.writer.meta.get("cell_runs", {}).get(cell_key(o), {})
        return cell_record(o, earlier, datetime.now(UTC))

    def _stage_record(self, o: CellOutcome) -> None:
        """Put the outcome into run.json's in-memory meta; the next write persists it (so
        `mark_completed` and the record land in one atomic write)."""
        runs = dict(self.writer.meta.get("cell_runs", {}))
        runs[cell_key(o)] = self._cell_record(o)
        self.writer.meta["cell_runs"] = runs

    def _record_cell(self, o: CellOutcome) -> None:
        runs = dict(self.writer.meta.get("cell_runs", {}))
        runs[cell_key(o)] = self._cell_record(o)
        flagged = sorted(
            {
                *self.writer.meta.get("flagged", []),
                *([cell_key(o)] if o.problems else []),
            }
        )
        self.writer.update_meta(cell_runs=runs, flagged=flagged, current=None)


def phase_drops(drops: pd.DataFrame, starts_ns: Sequence[int]) -> list[pd.DataFrame]:
    """The drop log (or another emulator log with `time_ns`, e.g. tcp-sent.csv) split into the
    protocol phases that begin at `starts_ns` (sorted, CLOCK_MONOTONIC ns): phase i holds the
    rows from its start to the next one's."""
    times = drops["time_ns"].to_numpy()
    ends = [*starts_ns[1:], None]
    return [
        drops[(times >= a) & (times < b if b is not None else True)].reset_index(drop=True)
        for a, b in zip(starts_ns, ends, strict=True)
    ]


# --- a cell's client side -----------------------------------------------------------------
def server_address(topo: Topology, cell: Cell) -> str:
    """The server address the cell's clients connect to: IPv4 or IPv6 (`address_family`)."""
    return topo.server_v6 if cell.scenario.address_family == "ipv6" else topo.server_v4


def agent_argv(cell: Cell, config_file: Path) -> list[str]:
    """The agent of the cell's `client`: `python -m lab.run.agent` (lab) or lab-go-agent (go);
    both read the same config and speak the same ready/go protocol on stdin/stdout."""
    if cell.scenario.client == "go":
        return go.agent_argv(config_file, wait_go=True)
    return [sys.executable, "-m", "lab.run.agent", "--config", str(config_file), "--wait-go"]


def check_go_built(cells: Sequence[Cell]) -> None:
    """Raise HostNotCapable when a cell runs `server: go` or `client: go` and the Go programs
    are not built from the current sources (scripts/build-go.sh builds them)."""
    if not any("go" in (c.scenario.server, c.scenario.client) for c in cells):
        return
    status = go.build_status()
    if not status.built:
        raise HostNotCapable(f"the scenario runs the Go stacks, not ready: {status.detail}")


# --- metadata -----------------------------------------------------------------------------
def stacks_info(cells: Sequence[Cell], quic_engine: str | None = None) -> dict[str, Any]:
    """lab.run.stack.stacks_info with the version line of every external server and of the
    Go agent, asked from their binaries (5 s at most each; None when that fails)."""
    versions: dict[str, str | None] = {
        server: server_version(server)
        for server in dict.fromkeys(c.scenario.server for c in cells)
        if server != "reference"
    }
    if any(c.scenario.client == "go" for c in cells):
        versions["go_agent"] = version_line([str(go.AGENT_BINARY), "--version"])
    return _stacks_info(cells, quic_engine, versions=versions)


def server_version(server: str) -> str | None:
    """The first output line of the implementation's `version_argv` (None when it fails)."""
    return version_line(registry.get(server).version_argv)


def version_line(argv: Sequence[str]) -> str | None:
    """The first output line of `argv` (None when it fails or prints nothing)."""
    version = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=5, check=False)
        version = (p.stdout or p.stderr).strip().splitlines()[0] if (p.stdout or p.stderr) else None
    return version


def check_backend(backend: Backend, cells: Sequence[Cell]) -> None:
    """Raise RunSetupError when `backend` cannot express some cell's link."""
    if backend != "netem":
        return
    for cell in cells:
        try:
            netem_commands(cell.link, uplink_dev="x", downlink_dev="y")
        except UnsupportedByNetem as e:
            raise RunSetupError(f"cell {cell.id}: {e}") from None


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
    """(cells, repetitions, estimated seconds) of a scenario — before anything is created; the
    seconds are those of the shard's pairs with `options.shard`."""
    cells = expand_cells(scenario)
    repeat = options.repeat or scenario.repeat
    return len(cells), repeat, estimate_run_s(planned_pairs(cells, repeat, options.shard))


def planned_pairs(cells: list[Cell], repeat: int, shard: Shard | None) -> list[tuple[Cell, int]]:
    """The pairs this run does: the whole plan, or the shard's part of it."""
    pairs = plan(cells, repeat)
    return pairs if shard is None else shard_pairs(pairs, shard)


def prepare(scenario: Scenario, scenario_file: str | None, options: RunOptions) -> Prepared:
    """Create the run directory and run.json for a new run."""
    cells = expand_cells(scenario)
    try:
        for server in dict.fromkeys(c.scenario.server for c in cells):
            registry.get(server)
    except KeyError as e:
        raise RunSetupError(str(e.args[0])) from None
    skipped = skipped_record(cells)
    if not any(served(c).workloads for c in cells):  # a run with nothing to run is a mistake
        why = "; ".join(sorted({f"{s['workload']}: {s['reason']}" for s in skipped}))
        raise RunSetupError(f"no cell has a workload its server can serve ({why})")
    check_go_built(cells)
    repeat = options.repeat or scenario.repeat
    backend = options.backend or default_backend()
    check_backend(backend, cells)
    now = datetime.now(UTC)
    shard = options.shard
    suffix = secrets.token_hex(2) + ("" if shard is None else f"-{shard.label}")
    path = options.out_dir / make_run_id(scenario.name, now, suffix)
    whole = plan(cells, repeat)
    pairs = planned_pairs(cells, repeat, shard)
    writer = RunWriter.create(
        path,
        scenario=resolved(scenario),
        seed=scenario.seed,
        cells=[
            {
                "cell": c.id,
                "axes": c.axes,
                "link": c.link.model_dump(mode="json"),
                "stack": cell_stack(c, options.quic_engine).model_dump(mode="json"),
                "server": c.scenario.server,
                "client": c.scenario.client,
                "address_family": c.scenario.address_family,
            }
            for c in cells
        ],
        scenario_file=scenario_file,
        impairment=impairment_info(backend, cells),
        stacks=stacks_info(cells, options.quic_engine),
        extra={
            "repeat": repeat,
            "quic_engine": cell_stack(cells[0], options.quic_engine).quic_engine,
            "quic_engine_override": options.quic_engine,
            "implementation": scenario.server,
            "client": scenario.client,
            # workloads a cell's server cannot serve: left out, with the reason
            "skipped": skipped,
            # each protocol's phase restarts the emulator's link models from the seed (netem
            # cannot be restarted from a seed)
            "link_model_reseeded_per_protocol": backend == "emulator",
            "plan": plan_record(whole, estimate_run_s(whole)),
            "shard": None
            if shard is None
            else shard_record(shard.index, shard.count, pairs, estimate_run_s(pairs)),
            "machines": [machine_record(machine_info(), now, 0)],
        },
        now=now,
    )
    return Prepared(
        scenario, cells, pairs, pairs, writer, backend, repeat, options.quic_engine, False
    )


def prepare_resume(path: Path) -> Prepared:
    """Reopen an interrupted run; the scenario, backend and repeat come from its run.json."""
    version = read_meta(path).get("schema_version")
    if version != SCHEMA_VERSION:  # its samples would mix two definitions of the HOL metrics
        raise RunSetupError(
            f"{path}: written with results schema {version}; this lab resumes only schema "
            f"{SCHEMA_VERSION} runs (start the scenario again)"
        )
    writer = open_for_resume(path)
    meta = writer.meta
    doc = {k: v for k, v in meta["scenario"].items() if k in Scenario.model_fields}
    scenario = Scenario.model_validate(doc)
    cells = expand_cells(scenario)
    repeat = int(meta.get("repeat") or scenario.repeat)
    backend: Backend = meta.get("impairment", {}).get("backend") or default_backend()
    pairs = plan(cells, repeat)
    if meta.get("shard"):  # a shard resumes only its own pairs
        mine = {(str(c), int(r)) for c, r in meta["shard"]["pairs"]}
        pairs = [(c, r) for c, r in pairs if (c.id, r) in mine]
    todo = [(c, r) for c, r in pairs if not writer.is_completed(c.id, r)]
    here = machine_record(machine_info(), datetime.now(UTC), len(writer.completed))
    writer.update_meta(machines=[*meta.get("machines", []), here])
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
    with sigterm_as_interrupt():
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
    status: RunStatus = "interrupted" if interrupted else "complete"
    results = prep.writer.finish(status)
    return RunOutcome(prep.writer.path, status, results, outcomes, wall, workload)
