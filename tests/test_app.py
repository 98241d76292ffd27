"""Routes and the 0-RTT policy of the reference server, through a fake ResponseWriter (no I/O)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys

import pytest
import trio
import trio.testing

from lab.http import app, payload, pods
from lab.http.app import PeerGone, Request, handle
from lab.http.settings import ServerConfig

CFG = ServerConfig(port=8443, pod_count=53, pod_size_bytes=700)


class FakeWriter:
    """Records what `handle` sends."""

    def __init__(self, fail_after_chunks: int | None = None):
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.chunk_ns: list[int] = []
        self.ended = False
        self._fail_after = fail_after_chunks

    async def send_headers(self, status: int, headers: list[tuple[str, str]]) -> None:
        assert self.status is None, "headers sent twice"
        self.status = status
        self.headers = dict(headers)

    async def send_data(
        self, data: bytes, end_stream: bool = False, *, stamp_ns: int | None = None
    ) -> None:
        assert self.status is not None, "data before headers"
        assert not self.ended, "data after end_stream"
        if self._fail_after is not None and len(self.chunks) >= self._fail_after:
            raise PeerGone("reset by test")
        if data:
            self.chunks.append(bytes(data))
        self.ended = end_stream

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def call(
    method: str,
    path: str,
    *,
    body: bytes = b"",
    early: bool = False,
    headers: tuple[tuple[str, str], ...] = (),
    config: ServerConfig = CFG,
    writer: FakeWriter | None = None,
    stream_id: int = 1,
) -> FakeWriter:
    w = writer or FakeWriter()
    req = Request(method, path, headers, body, "h2", stream_id, early)
    trio.run(handle, req, w, config, clock=trio.testing.MockClock(autojump_threshold=0))
    assert w.ended, "response not ended"
    return w


def test_bytes_body_is_deterministic_sized_and_random_looking():
    n = 1_000_003
    w1, w2 = call("GET", "/bytes/1000003"), call("GET", "/bytes/1000003")
    assert w1.status == 200
    assert w1.headers["content-length"] == str(n)
    assert len(w1.body) == n
    assert w1.body == w2.body == payload.body_slice(0, n)
    assert hashlib.sha256(w1.body).hexdigest() == payload.expected_sha256(n)
    assert max(len(c) for c in w1.chunks) <= payload.DEFAULT_CHUNK_BYTES < n  # streamed
    assert len(set(w1.body[:4096])) > 200  # not a repeated pattern of few byte values


def test_body_slice_matches_the_stream_at_any_offset():
    whole = payload.body_slice(0, 5000)
    assert payload.body_slice(1234, 777) == whole[1234:2011]
    assert b"".join(payload.iter_body(5000, 333)) == whole
    big = payload.body_slice(0, 3_000_000)  # beyond the cached prefix: the cipher path
    assert b"".join(payload.iter_body(3_000_000, 100_000)) == big
    assert b"".join(payload.iter_body(1 << 20)) == big[: 1 << 20]  # the cached-prefix path


def test_every_response_has_alt_svc_and_early_data_flag():
    for path in ("/healthz", "/bytes/3", "/nope", "/bytes/x"):
        w = call("GET", path)
        assert w.headers["alt-svc"] == 'h3=":8443"; ma=86400'
        assert w.headers["lab-early-data"] == "0"
    assert call("GET", "/healthz", early=True).headers["lab-early-data"] == "1"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/nope", 404),
        ("GET", "/bytes/", 404),
        ("GET", "/bytes/abc", 400),
        ("GET", "/bytes/-1", 400),
        ("GET", "/bytes/1e3", 400),
        ("GET", f"/bytes/{CFG.max_bytes_n + 1}", 400),
        ("GET", "/bytes/99999999999999999999999", 400),
        ("POST", "/bytes/1", 405),
        ("GET", "/echo", 405),
        ("GET", "/api/v1/namespaces/Bad_NS/pods", 400),
        ("GET", "/api/v1/namespaces/default/pods?limit=x", 400),
        ("GET", "/api/v1/namespaces/default/pods?limit=-1", 400),
        ("GET", "/api/v1/namespaces/default/pods?continue=!!!", 400),
        ("GET", "/api/v1/watch/namespaces/default/pods?interval_ms=0", 400),
        ("GET", "/api/v1/watch/namespaces/default/pods?count=z", 400),
    ],
)
def test_status_codes(method, path, status):
    assert call(method, path).status == status


def test_head_has_length_but_no_body_and_options_lists_methods():
    w = call("HEAD", "/bytes/12345")
    assert (w.status, w.headers["content-length"], w.body) == (200, "12345", b"")
    w = call("OPTIONS", "/echo")
    assert w.status == 204
    assert w.headers["allow"] == "OPTIONS, POST, PUT"


def test_echo_returns_the_body_and_its_type():
    w = call("POST", "/echo", body=b"hello\x00world", headers=(("content-type", "x/y"),))
    assert (w.status, w.body, w.headers["content-type"]) == (200, b"hello\x00world", "x/y")


def test_oversized_header_list_gets_431():
    big = (("x-big", "a" * CFG.max_request_header_bytes),)
    assert call("GET", "/healthz", headers=big).status == 431


def _list(query: str) -> dict:
    w = call("GET", f"/api/v1/namespaces/team-a/pods{query}")
    assert w.status == 200, w.body
    assert w.headers["content-type"] == "application/json"
    assert w.headers["content-length"] == str(len(w.body))
    return json.loads(w.body)


def test_pod_list_unpaged_has_every_pod_of_the_configured_size():
    doc = _list("")
    assert (doc["kind"], doc["apiVersion"]) == ("PodList", "v1")
    assert "continue" not in doc["metadata"]
    assert len(doc["items"]) == CFG.pod_count
    for i, item in enumerate(doc["items"]):
        assert item["metadata"]["name"] == f"pod-{i:05d}"
        assert item["metadata"]["namespace"] == "team-a"
        assert len(json.dumps(item, separators=(",", ":"))) == CFG.pod_size_bytes


@pytest.mark.parametrize("limit", [1, 7, 52, 53, 100])
def test_pod_list_paging_covers_every_pod_exactly_once(limit):
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        doc = _list(f"?limit={limit}" + (f"&continue={token}" if token else ""))
        pages += 1
        items = doc["items"]
        assert len(items) <= limit
        seen += [it["metadata"]["name"] for it in items]
        token = doc["metadata"].get("continue", "")
        if not token:
            assert "remainingItemCount" not in doc["metadata"]
            break
        assert doc["metadata"]["remainingItemCount"] == CFG.pod_count - len(seen)
    assert seen == [f"pod-{i:05d}" for i in range(CFG.pod_count)]
    assert pages == -(-CFG.pod_count // limit)


def test_pods_are_deterministic_across_processes_and_continue_tokens_round_trip():
    # Two interpreters with different hash seeds (set iteration, dict-of-set order) must
    # serve byte-identical objects, or h2 and h3 cells would not compare like for like.
    code = (
        "import sys; from lab.http import pods; sys.stdout.buffer.write(pods.pod_json('a', 3, 900))"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    assert outs[0] == outs[1] == pods.pod_json("a", 3, 900)
    assert len(outs[0]) == 900
    assert pods.pod_json("a", 3, 900) != pods.pod_json("a", 4, 900)
    assert pods.decode_continue(pods.encode_continue(41)) == 41
    with pytest.raises(pods.BadListRequest):
        pods.decode_continue("bm90IGpzb24")  # base64 of "not json"


def test_watch_events_carry_stream_seq_and_send_time():
    w = call("GET", "/api/v1/watch/namespaces/ns1/pods?interval_ms=100&count=5", stream_id=7)
    assert w.status == 200
    assert len(w.chunks) == 5  # one DATA write per event
    events = [json.loads(line) for line in w.body.decode().splitlines()]
    assert [e["type"] for e in events] == ["ADDED"] + ["MODIFIED"] * 4
    assert [e["lab"]["seq"] for e in events] == [0, 1, 2, 3, 4]
    assert {e["lab"]["stream"] for e in events} == {7}
    assert {e["object"]["metadata"]["namespace"] for e in events} == {"ns1"}
    sent = [e["lab"]["sent_ns"] for e in events]
    assert sent == sorted(sent) and sent[0] > 0


def test_watch_without_count_runs_until_the_peer_goes_away():
    w = FakeWriter(fail_after_chunks=25)
    req = Request("GET", "/api/v1/watch/namespaces/x/pods?interval_ms=10", (), b"", "h2", 1, False)
    trio.run(handle, req, w, CFG, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(w.chunks) == 25 and not w.ended  # stopped by PeerGone, quietly


def test_watch_is_scheduled_on_absolute_deadlines():
    """A slow send does not push later events back: deadlines are start + k × interval."""
    times: list[float] = []

    class SlowWriter(FakeWriter):
        async def send_data(
            self, data: bytes, end_stream: bool = False, *, stamp_ns: int | None = None
        ) -> None:
            times.append(trio.current_time())
            await trio.sleep(0.004)  # 4 ms of a 10 ms interval spent sending
            await super().send_data(data, end_stream)

    call("GET", "/api/v1/watch/namespaces/x/pods?interval_ms=10&count=20", writer=SlowWriter())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.010] * 19, abs=1e-6)


class _Spy:
    def __init__(self, fail: bool = False):
        self.calls = 0
        self.fail = fail

    async def __call__(self, r, w, cfg, m) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("route bug")
        await w.respond(200, b"spy", [])


@pytest.fixture
def spy(monkeypatch):
    s = _Spy()
    routes = tuple((p, meths, s if fn is app._echo else fn) for p, meths, fn in app.ROUTES)
    monkeypatch.setattr(app, "ROUTES", routes)
    return s


def test_unsafe_method_in_early_data_gets_425_and_never_reaches_the_route(spy):
    for method in ("POST", "PUT"):
        w = call(method, "/echo", body=b"x", early=True)
        assert w.status == 425
        assert w.headers["lab-early-data"] == "1"
    assert spy.calls == 0
    w = call("POST", "/echo", body=b"x", early=False)  # the same request after the handshake
    assert (w.status, w.body, spy.calls) == (200, b"spy", 1)


def test_safe_methods_are_served_from_early_data():
    w = call("GET", "/bytes/10", early=True)
    assert (w.status, w.headers["lab-early-data"], len(w.body)) == (200, "1", 10)
    assert call("HEAD", "/healthz", early=True).status == 200
    assert call("OPTIONS", "/healthz", early=True).status == 204


def test_a_failing_route_answers_500(monkeypatch):
    spy = _Spy(fail=True)
    routes = tuple((p, m, spy if fn is app._healthz else fn) for p, m, fn in app.ROUTES)
    monkeypatch.setattr(app, "ROUTES", routes)
    w = call("GET", "/healthz")
    assert (w.status, spy.calls) == (500, 1)
