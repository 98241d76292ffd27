"""Shared fixtures. `topology`: a fresh client ⇄ router ⇄ server topology (TUN steering on, no
emulator running yet) that is always torn down, also when the test fails. `cert_dir`: the lab's
CA and leaf, once per module. `go_built`: the Go stacks, built once per session.

Tests that need real namespaces should be marked `@pytest.mark.netns`; the fixture skips when
the host cannot build a topology (not root, no /dev/net/tun).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.http.tls import ensure_certs
from lab.net import nsenter
from lab.peers import go


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun"
    return None


@pytest.fixture
def topology() -> Iterator[object]:
    """An up `lab.net.topology.Topology`; torn down after the test whatever happens."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    from lab.net.topology import Topology

    topo = Topology()
    try:
        topo.up()
        yield topo
    finally:
        topo.down()
        leftovers = [ns for ns in nsenter.list_namespaces() if ns.startswith(topo.prefix)]
        assert not leftovers, f"topology teardown left {leftovers}"


@pytest.fixture
def plain_topology() -> Iterator[object]:
    """Like `topology` but without TUN steering: the router forwards directly (netem backend)."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    from lab.net.topology import Topology

    topo = Topology(tun_steering=False)
    try:
        topo.up()
        yield topo
    finally:
        topo.down()


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the lab's CA and leaf (`ensure_certs`), issued once per module."""
    d = tmp_path_factory.mktemp("certs")
    ensure_certs(d)
    return d


@pytest.fixture(scope="session")
def go_built() -> str:
    """scripts/build-go.sh once per session (it skips itself when the sources are unchanged)."""
    if shutil.which("go") is None:
        pytest.skip("Go is not installed (scripts/install.sh installs golang-go)")
    return go.build()
