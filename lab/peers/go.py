"""The lab's Go programs: the `go` server under test and the Go agent (docs/peers.md, "Go").

`lab-go-server` mirrors kube-apiserver's serving stack (Go net/http with HTTP/2 from
golang.org/x/net/http2, kube-apiserver's settings, and quic-go's http3.Server on the same port)
and serves the route contract of docs/routes.md. `lab-go-agent` runs the workloads' client side
over Go's HTTP/2 transport and quic-go's HTTP/3 round-tripper; it reads the Python agent's
config and writes its output format (lab/run/agent.py).

Both are built offline by `scripts/build-go.sh` (called by scripts/install.sh) from the sources
in `go/src/labgo/` into `build/go/`, in GOPATH mode against Debian's Go packages. This module
knows where they are, whether they are built, and their command lines; it starts nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.errors import HostNotCapable

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "go" / "src" / "labgo"
BUILD_SCRIPT = REPO / "scripts" / "build-go.sh"
BUILD_DIR = REPO / "build" / "go"
SERVER_BINARY = BUILD_DIR / "lab-go-server"
AGENT_BINARY = BUILD_DIR / "lab-go-agent"
BUILD_TIMEOUT_S = 600.0

# quic-go 0.29's congestion controller, fixed (no quic.Config field): NewReno. Its sent-packet
# handler makes `congestion.NewCubicSender(..., true /* use Reno */, ...)`, the cubicSender in
# Reno mode: cwnd × 0.7 on a loss event (renoBeta; Linux's reno halves it), one datagram per
# window of ACKs in congestion avoidance, HyStart slow-start exit and pacing. Named as Linux
# names the TCP family it belongs to; Caddy 2.6 (Debian) is built with the same quic-go.
QUIC_GO_CONGESTION = "reno"
QUIC_GO_CONGESTION_DETAIL = (
    "quic-go 0.29: NewReno (cubicSender in Reno mode: β 0.7, HyStart, pacing; not configurable)"
)


@dataclass(frozen=True, slots=True)
class BuildStatus:
    """Whether both programs are built from the current sources, and a one-line detail."""

    built: bool
    detail: str


def _script(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _missing() -> str | None:
    """Why the programs cannot be built here, or None."""
    if not SOURCES.is_dir() or not BUILD_SCRIPT.exists():
        return f"Go sources not found in {SOURCES.parent.parent} (not a source checkout)"
    if shutil.which("go") is None:
        return "go not installed (scripts/install.sh installs golang-go)"
    return None


def build_status() -> BuildStatus:
    """Are lab-go-server and lab-go-agent built from the current sources? (quick: no build)"""
    missing = _missing()
    if missing is not None:
        return BuildStatus(False, missing)
    done = _script("--check", timeout_s=30)
    if done.returncode != 0:
        return BuildStatus(False, (done.stderr.strip() or "not built").removeprefix("build-go: "))
    version = subprocess.run(
        [str(SERVER_BINARY), "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()
    return BuildStatus(True, f"go server/agent built ({version.removeprefix('lab-go-server ')})")


def build() -> str:
    """Build both programs unless they are up to date; returns the script's summary line.

    Raises HostNotCapable when Go or its packages are missing or the build fails.
    """
    missing = _missing()
    if missing is not None:
        raise HostNotCapable(missing)
    done = _script(timeout_s=BUILD_TIMEOUT_S)
    if done.returncode != 0:
        raise HostNotCapable(f"scripts/build-go.sh failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def server_argv(
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    *,
    max_streams: int | None = None,
    grace_s: float | None = None,
    tcp_congestion: str | None = None,
    request_log: Path | None = None,
    warm_bytes: int | None = None,
) -> list[str]:
    """The lab-go-server command line (flags as `lab serve`'s where they apply)."""
    argv = [str(SERVER_BINARY), "--host", host, "--port", str(port)]
    argv += ["--cert", str(cert_file), "--key", str(key_file)]
    if max_streams is not None:
        argv += ["--max-streams", str(max_streams)]
    if grace_s is not None:
        argv += ["--grace", str(grace_s)]
    if tcp_congestion is not None:
        argv += ["--tcp-cc", tcp_congestion]
    if request_log is not None:
        argv += ["--request-log", str(request_log)]
    if warm_bytes is not None:
        argv += ["--warm-bytes", str(warm_bytes)]
    return argv


def agent_argv(config_file: Path, *, wait_go: bool = False) -> list[str]:
    """The lab-go-agent command line for an AgentConfig JSON file (lab.run.stack)."""
    return [str(AGENT_BINARY), "--config", str(config_file), *(["--wait-go"] if wait_go else [])]


def version_argv() -> list[str]:
    """Prints e.g. `lab-go-server go1.19.8 quic-go 0.29.0-1 x/net 1:0.7.0+dfsg-1 x/sys 0.3.0-1`."""
    return [str(SERVER_BINARY), "--version"]


def parse_versions(line: str) -> dict[str, str]:
    """{"go": "go1.19.8", "quic-go": "0.29.0-1", "x/net": …, "x/sys": …} from a `--version`
    line (the program's name first, then name/version pairs); {} for anything else."""
    words = line.split()[1:]
    if len(words) < 2 or not words[0].startswith("go"):
        return {}
    out = {"go": words[0]}
    out.update(zip(words[1::2], words[2::2], strict=False))
    return out
