"""The three containers of docker-compose.yml (client ⇄ router ⇄ server), for real.

    python -m lab.vm.compose router SCENARIO OUT   # in the router container (NET_ADMIN)
    python -m lab.vm.compose client OUT            # in the client container
    python -m lab.vm.compose check SCENARIO OUT    # on a Docker host (the lab vm guest)

`router` applies the scenario's first cell's link with tc netem on its two interfaces (uplink on
the server side, downlink on the client side) and keeps `tc -s` counters in OUT/router.json.
`client` fetches over h2 and h3 through the router and writes OUT/client.json. `check` is the
whole test: start dockerd (iptables' legacy backend: UML has no nftables), `docker import` the
offline image, `docker-compose up`, route client and server through the router (set from the
Docker host, so that neither container needs NET_ADMIN), run the client, collect, tear down.

Offline image: a skeleton root (empty mount points) imported with `docker import`; the host's
/usr, /etc and python prefix are bind-mounted read-only into it by a generated compose override
(docs/vm.md, "Containers"). Where a registry is reachable, the Dockerfile builds a real image.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import trio

from lab.http.fetch import fetch
from lab.link.netem import netem_commands, netem_not_expressed
from lab.scenario.load import load_scenario
from lab.scenario.matrix import expand_cells

CLIENT_NET = ("192.0.2.0/24", "192.0.2.1", "192.0.2.2")  # subnet, router, client (RFC 5737)
SERVER_NET = ("198.51.100.0/24", "198.51.100.1", "198.51.100.2")  # subnet, router, server
SERVER_PORT = 8443
IMAGE = "lab-hostroot:latest"
SKELETON_DIRS = (
    "bin",
    "dev",
    "etc",
    "lib",
    "lib64",
    "proc",
    "root",
    "run",
    "sbin",
    "sys",
    "tmp",
    "usr",
    "var/tmp",
    "work",
    "results",
)


def _sh(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def _dev_with(address: str) -> str:
    """The interface that holds `address` (in this network namespace)."""
    for entry in json.loads(_sh(["ip", "-j", "-4", "addr", "show"]).stdout):
        if any(a.get("local") == address for a in entry.get("addr_info", [])):
            return str(entry["ifname"])
    raise RuntimeError(f"no interface with {address}")


def qdisc_stats(dev: str) -> list[dict[str, Any]]:
    """`tc -s -j qdisc show dev DEV`: each qdisc's kind, options and counters."""
    return list(json.loads(_sh(["tc", "-s", "-j", "qdisc", "show", "dev", dev]).stdout or "[]"))


def router(scenario_file: str, out: Path) -> None:
    """Apply the link, then refresh OUT/router.json with the counters until stopped."""
    cell = expand_cells(load_scenario(scenario_file))[0]
    up, down = _dev_with(SERVER_NET[1]), _dev_with(CLIENT_NET[1])
    for dev in (up, down):  # no super-packets: one netem decision per MTU-sized packet
        _sh(["ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"], check=False)
    cmds = netem_commands(cell.link, uplink_dev=up, downlink_dev=down)
    for argv in cmds:
        _sh(argv)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "cell": cell.id,
        "link": cell.link.model_dump(mode="json"),
        "tc": [" ".join(c) for c in cmds],
        "not_expressed": netem_not_expressed(cell.link),
    }
    while True:
        record["qdiscs"] = {"uplink": qdisc_stats(up), "downlink": qdisc_stats(down)}
        tmp = out / "router.json.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        tmp.rename(out / "router.json")
        time.sleep(1.0)


def client(out: Path, count: int = 5, wait_s: float = 120.0) -> None:
    """Once the Docker host has routed this container through the router (OUT/routes.ready),
    `count` fetches of /bytes/1000 over h2, then over h3; TTFB and total in ms per request."""
    deadline = time.monotonic() + wait_s
    while not (out / "routes.ready").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no routes through the router (routes.ready) in time")
        time.sleep(0.2)
    url = f"https://{SERVER_NET[2]}:{SERVER_PORT}/bytes/1000"
    samples: dict[str, list[dict[str, Any]]] = {}
    for protocol in ("h2", "h3"):
        rows = []
        for _ in range(count):
            reports = trio.run(lambda p=protocol: fetch(url, protocol=p, count=1))
            for rep in reports:
                t0 = rep.timings.connect_start_ns
                for r in rep.responses:
                    first = r.first_byte_ns if r.first_byte_ns is not None else r.end_ns
                    rows.append(
                        {
                            "status": r.status,
                            "ttfb_ms": (first - t0) / 1e6,
                            "total_ms": (r.end_ns - t0) / 1e6,
                        }
                    )
        samples[protocol] = rows
    out.mkdir(parents=True, exist_ok=True)
    (out / "client.json").write_text(json.dumps(samples, indent=1))


# --- the Docker host side (check) ---------------------------------------------------------
def skeleton_tar() -> bytes:
    """A root file system of empty mount points, for `docker import`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in SKELETON_DIRS:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
    return buf.getvalue()


def hostroot_override(python: str, project: Path) -> str:
    """The compose override that runs the services on the skeleton image with the host's
    /usr, /etc and python prefix bind-mounted read-only (JSON is YAML)."""
    prefix = str(Path(python).resolve().parents[1])
    mounts = [
        "/usr:/usr:ro",
        "/etc:/etc:ro",
        "/usr/bin:/bin:ro",
        "/usr/sbin:/sbin:ro",
        "/usr/lib:/lib:ro",
        "/usr/lib64:/lib64:ro",
        f"{prefix}:{prefix}:ro",
        f"{project}:/work:ro",
        "${LAB_RESULTS:-./results}:/results",  # repeated: an override's list replaces the base's
    ]
    env = {"LAB_PYTHON": python, "PYTHONPATH": "/work"}
    service = {"image": IMAGE, "volumes": mounts, "environment": env}
    doc = {"version": "2.4", "services": {s: service for s in ("client", "router", "server")}}
    return json.dumps(doc, indent=1)


def _compose(project: Path, override: Path, *args: str) -> list[str]:
    return [
        "docker-compose",
        "-p",
        "labcompose",
        "--project-directory",
        str(project),
        "-f",
        str(project / "docker-compose.yml"),
        "-f",
        str(override),
        *args,
    ]


def _pid(container: str) -> str:
    return _sh(["docker", "inspect", "-f", "{{.State.Pid}}", container]).stdout.strip()


def route_through_router(client_id: str, server_id: str) -> None:
    """From the Docker host: client and server reach each other only through the router."""
    for cid, (net, via) in (
        (client_id, (SERVER_NET[0], CLIENT_NET[1])),
        (server_id, (CLIENT_NET[0], SERVER_NET[1])),
    ):
        _sh(["nsenter", "-t", _pid(cid), "-n", "ip", "route", "replace", net, "via", via])


def _start_dockerd(log: Path) -> subprocess.Popen[bytes]:
    for tool in ("iptables", "ip6tables"):  # UML's kernel has no nf_tables: legacy iptables
        _sh(["update-alternatives", "--set", tool, f"/usr/sbin/{tool}-legacy"], check=False)
    Path("/var/lib/docker").mkdir(parents=True, exist_ok=True)
    _sh(["mount", "-t", "tmpfs", "-o", "size=512m", "labdocker", "/var/lib/docker"])
    dockerd = subprocess.Popen(
        ["dockerd", "--storage-driver=vfs", "--iptables=true"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while _sh(["docker", "info"], check=False).returncode != 0:
        if time.monotonic() > deadline or dockerd.poll() is not None:
            raise RuntimeError(f"dockerd did not start; {log}")
        time.sleep(0.5)
    return dockerd


def check(scenario_file: str, out: Path) -> dict[str, Any]:
    """The compose test on this Docker host (run as root in the lab vm guest): returns (and
    writes to OUT/compose.json) the timings and what the three services did."""
    project = Path(__file__).resolve().parents[2]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    dockerd = _start_dockerd(Path("/tmp/dockerd.log"))
    timings = {"dockerd_s": round(time.monotonic() - t0, 1)}
    override = Path("/tmp/docker-compose.hostroot.yml")
    override.write_text(hostroot_override(sys.executable, project))
    env_argv = ["env", f"LAB_SCENARIO=/work/{Path(scenario_file)}", "LAB_RESULTS=" + str(out)]
    try:
        subprocess.run(
            ["docker", "import", "-", IMAGE], input=skeleton_tar(), check=True, capture_output=True
        )
        _sh([*env_argv, *_compose(project, override, "up", "-d")])
        ids = {
            s: _sh([*env_argv, *_compose(project, override, "ps", "-q", s)]).stdout.strip()
            for s in ("client", "router", "server")
        }
        timings["up_s"] = round(time.monotonic() - t0, 1)
        route_through_router(ids["client"], ids["server"])
        (out / "routes.ready").touch()
        code = _sh(["docker", "wait", ids["client"]]).stdout.strip()
        time.sleep(1.5)  # the router's last counters
        logs = {
            s: _sh(["docker", "logs", "--tail", "20", i], check=False).stderr[-2000:]
            for s, i in ids.items()
        }
        timings["wall_s"] = round(time.monotonic() - t0, 1)
        result = {"client_exit": int(code), "services": ids, "timings": timings, "logs": logs}
        (out / "compose.json").write_text(json.dumps(result, indent=1))
        return result
    finally:
        _sh([*env_argv, *_compose(project, override, "down", "-t", "2")], check=False)
        dockerd.terminate()
        dockerd.wait(timeout=30)


def main(argv: list[str]) -> int:
    cmd, rest = argv[1], argv[2:]
    if cmd == "router":
        router(rest[0], Path(rest[1]))
    elif cmd == "client":
        client(Path(rest[0]))
    elif cmd == "check":
        result = check(rest[0], Path(rest[1]))
        print(json.dumps(result["timings"]))
        return 0 if result["client_exit"] == 0 else 1
    else:
        print(f"unknown command {cmd!r} (router, client, check)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
