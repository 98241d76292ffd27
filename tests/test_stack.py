"""The scenario's `stack:` section: validation, matrix axes, TCP_NOTSENT_LOWAT on real sockets,
and the plumbing into `lab serve` flags, the agents' settings and run.json."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from lab.cli import main
from lab.http.h2_server import SEND_BATCH_BYTES, send_batch_bytes
from lab.http.tcp import congestion_of, kernel_notsent_lowat, notsent_lowat_of, set_tcp_options
from lab.run import runner
from lab.run.agent import client_settings, context
from lab.run.stack import reference_config
from lab.scenario.load import load_scenario, parse_scenario
from lab.scenario.matrix import expand_cells, resolved
from lab.scenario.models import StackSpec

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
name: st
link: {delay_ms: 5}
workloads:
  - {kind: rpc_under_load, bulk_bytes: 100000}
"""


def test_stack_defaults_are_todays_behaviour() -> None:
    sc = parse_scenario(BASE)
    assert sc.stack == StackSpec()
    assert sc.stack.tcp_notsent_lowat_bytes is None  # the kernel's default
    assert (sc.stack.tcp_congestion, sc.stack.quic_congestion_control) == ("cubic", "cubic")
    assert sc.stack.max_concurrent_streams == 100
    assert resolved(sc)["stack"]["tcp_notsent_lowat_bytes"] is None


def test_stack_values_load() -> None:
    sc = parse_scenario(BASE + "stack: {tcp_notsent_lowat_bytes: 16384, tcp_congestion: bbr}\n")
    assert sc.stack.tcp_notsent_lowat_bytes == 16384
    assert sc.stack.tcp_congestion == "bbr"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("stack: {tcp_notsent_lowat_bytes: -1}", "stack.tcp_notsent_lowat_bytes"),
        ("stack: {quic_congestion_control: bbr}", "stack.quic_congestion_control"),
        ("stack: {max_streams: 5}", "stack.max_streams"),
        ("stack:\n  quic_engine: quiche", "stack.quic_engine"),
    ],
)
def test_bad_stack_value_file_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, field: str
) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(BASE + line + "\n")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    bad_line = 5 if "\n" not in line else 6
    assert f"{p}:{bad_line}: {field}" in err


def test_matrix_axis_on_stack() -> None:
    text = BASE + "matrix:\n  stack.tcp_notsent_lowat_bytes: [null, 16384]\n"
    cells = expand_cells(parse_scenario(text))
    assert [c.axes for c in cells] == [
        {"stack.tcp_notsent_lowat_bytes": None},
        {"stack.tcp_notsent_lowat_bytes": 16384},
    ]
    assert [c.scenario.stack.tcp_notsent_lowat_bytes for c in cells] == [None, 16384]


def test_matrix_axis_on_stack_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(BASE + "matrix:\n  stack.nope: [1]\n")
    assert main(["validate", str(p)]) == 2
    assert f"{p}:6: matrix.stack.nope: addresses no field" in capsys.readouterr().err
    p.write_text(BASE + "matrix:\n  stack.tcp_notsent_lowat_bytes: [1, -2]\n")
    assert main(["validate", str(p)]) == 2
    assert f"{p}:6: matrix.stack.tcp_notsent_lowat_bytes[1]" in capsys.readouterr().err


def test_set_tcp_options_sets_notsent_lowat_on_a_real_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        set_tcp_options(s, "cubic", notsent_lowat=16384)
        assert notsent_lowat_of(s) == 16384
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert set_tcp_options(s, "cubic") == congestion_of(s)
        assert notsent_lowat_of(s) == kernel_notsent_lowat()  # None: back to the sysctl's


def test_reference_h2_sockets_keep_the_kernels_notsent_lowat() -> None:
    """trio's SocketStream sets TCP_NOTSENT_LOWAT to 16 KiB on every socket it wraps; with no
    bound configured the reference server's accepted sockets and the lab client's must carry
    the kernel's default instead (what Go's net/http2, kube-apiserver, runs with)."""
    seen: dict[str, int | None] = {}

    async def main() -> None:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        accepted = await trio.open_tcp_stream("127.0.0.1", port)
        server_side = await listener.accept()
        seen["trio"] = notsent_lowat_of(server_side.socket)
        set_tcp_options(server_side.socket, "cubic")  # what the h2 server does after accept
        seen["server"] = notsent_lowat_of(server_side.socket)
        for s in (accepted, server_side, listener):
            await s.aclose()

    trio.run(main)
    assert seen["trio"] == 16384  # the default this guards against
    assert seen["server"] == kernel_notsent_lowat()


def test_send_batch_follows_the_bound() -> None:
    assert send_batch_bytes(None, 16384) == SEND_BATCH_BYTES
    assert send_batch_bytes(131072, 16384) == 131072
    assert send_batch_bytes(1000, 16384) == 16384  # at least one frame
    assert send_batch_bytes(10**9, 16384) == SEND_BATCH_BYTES


def _cells(extra: str = "") -> list:
    return expand_cells(parse_scenario(BASE + extra))


def test_reference_serve_args() -> None:
    (cell,) = _cells()
    assert runner.reference_serve_args(runner.cell_stack(cell)) == [
        "--quic-engine",
        "aioquic",
        "--max-streams",
        "100",
        "--cc",
        "cubic",
        "--h2-cc",
        "cubic",
    ]
    (cell,) = _cells("stack: {tcp_notsent_lowat_bytes: 16384, tcp_congestion: reno}\n")
    args = runner.reference_serve_args(runner.cell_stack(cell, quic_engine="qh3"))
    assert args[args.index("--notsent-lowat") + 1] == "16384"
    assert args[args.index("--h2-cc") + 1] == "reno"
    assert args[args.index("--quic-engine") + 1] == "qh3"  # the CLI flag wins


def test_serve_args_parse_back_into_the_reported_config() -> None:
    """The flags the runner passes mean, to `lab serve`, the config run.json reports."""
    from lab.cli import build_parser

    (cell,) = _cells("stack: {tcp_notsent_lowat_bytes: 4096, max_concurrent_streams: 7}\n")
    stack = runner.cell_stack(cell)
    args = build_parser().parse_args(["serve", *runner.reference_serve_args(stack)])
    cfg = reference_config(stack)
    assert args.notsent_lowat == cfg.h2.tcp_notsent_lowat_bytes == 4096
    assert args.max_streams == cfg.h2.max_concurrent_streams == 7
    assert (args.h2_cc or args.cc) == cfg.h2.tcp_congestion


def test_k8s_mix_caps_the_server_streams() -> None:
    sc = parse_scenario(
        "name: k\nstack: {max_concurrent_streams: 200}\n"
        "workloads: [{kind: k8s_mix, max_concurrent_streams: 50}]\n"
    )
    (cell,) = expand_cells(sc)
    assert runner.cell_stack(cell).max_concurrent_streams == 50


def test_agent_options_carry_the_cell_stack() -> None:
    cells = _cells("matrix:\n  stack.tcp_notsent_lowat_bytes: [null, 16384]\n")
    got = []
    for cell in cells:
        cfg = runner.agent_config(cell, None, protocol="h2", host="10.0.0.1", port=1, out="x")
        cfg = type(cfg).model_validate_json(cfg.model_dump_json())  # as the agent reads it
        ctx = context(cfg)
        opts = ctx.options()
        got.append(opts.h2.tcp_notsent_lowat_bytes)
        assert opts.quic.congestion_control == cell.scenario.stack.quic_congestion_control
    assert got == [None, 16384]
    h2, quic = client_settings(StackSpec(quic_engine="qh3", max_concurrent_streams=9))
    assert (quic.engine, quic.max_concurrent_streams, h2.max_concurrent_streams) == ("qh3", 9, 9)


def test_stacks_info_reports_per_cell_values_when_they_vary() -> None:
    cells = _cells("matrix:\n  stack.tcp_notsent_lowat_bytes: [null, 16384]\n")
    info = runner.stacks_info(cells)
    assert info["per_cell"] == {
        cells[0].id: StackSpec().model_dump(mode="json"),
        cells[1].id: StackSpec(tcp_notsent_lowat_bytes=16384).model_dump(mode="json"),
    }
    assert info["reference"]["h2"]["tcp_notsent_lowat_bytes"] is None
    assert info["client"]["h2"]["tcp_notsent_lowat_bytes"] is None
    same = runner.stacks_info(_cells(), quic_engine="qh3")
    assert "per_cell" not in same
    assert same["stack"]["quic_engine"] == same["reference"]["quic"]["engine"] == "qh3"


def test_shipped_sendbuffer_scenario() -> None:
    sc = load_scenario(ROOT / "scenarios" / "sendbuffer.yaml")
    assert sc.matrix == {"stack.tcp_notsent_lowat_bytes": [None, 16384]}
    assert [w.kind for w in sc.workloads] == ["rpc_under_load"]
    assert sc.link_spec.base_rtt_ms == 50
