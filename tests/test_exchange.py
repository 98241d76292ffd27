"""The request head and response record shared by the h2 and h3 clients (lab.http.exchange)."""

from __future__ import annotations

import pytest

from lab.http.exchange import Exchange, authority_of, request_head
from lab.http.types import EARLY_DATA_HEADER, RequestFailed


def test_authority_omits_only_the_default_port() -> None:
    assert authority_of("example", 443) == "example"
    assert authority_of("example", 8443) == "example:8443"


def test_request_head_lowercases_names_and_adds_content_length_for_a_body() -> None:
    head = request_head("POST", "/echo?x=1", "h:1", [("X-Trace", "A b")], b"12345")
    assert head == [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"h:1"),
        (b":path", b"/echo?x=1"),
        (b"x-trace", b"A b"),
        (b"content-length", b"5"),
    ]
    assert (b"content-length", b"0") not in request_head("GET", "/", "h", None, b"")
    assert len(request_head("GET", "/", "h", None, b"")) == 4


def test_exchange_records_chunks_first_byte_and_end() -> None:
    seen: list[tuple[bytes, int]] = []
    ex = Exchange(5, keep_body=True, on_chunk=lambda data, t: seen.append((data, t)))
    ex.request_sent_ns = 100
    ex.on_head([(b":status", b"200"), (b"content-type", b"x"), (EARLY_DATA_HEADER.encode(), b"1")])
    ex.on_data(b"", 150)  # an empty chunk is a chunk, not the first byte
    ex.on_data(b"abc", 200)
    ex.on_data(b"de", 300)
    ex.on_head([(b":status", b"500"), (b"grpc-status", b"0")])  # trailers: ignored
    ex.end(400)
    ex.end(999)  # only the first end counts
    r = ex.response()
    assert (r.stream_id, r.status, r.request_sent_ns) == (5, 200, 100)
    assert r.headers == [("content-type", "x"), (EARLY_DATA_HEADER, "1")]
    assert (r.first_byte_ns, r.end_ns, r.body_bytes, r.body) == (200, 400, 5, b"abcde")
    assert r.chunks == [(150, 0), (200, 3), (300, 2)]
    assert seen == [(b"", 150), (b"abc", 200), (b"de", 300)]
    assert r.early_data is True
    assert ex.done.is_set()


def test_exchange_without_keep_body_counts_bytes_only() -> None:
    ex = Exchange(1, keep_body=False, on_chunk=None)
    ex.on_head([(b":status", b"204"), (EARLY_DATA_HEADER.encode(), b"0")])
    ex.on_data(b"xyz", 10)
    ex.end(20)
    r = ex.response()
    assert (r.body, r.body_bytes, r.early_data) == (None, 3, False)


def test_the_first_of_fail_and_end_decides() -> None:
    failed = Exchange(1, keep_body=True, on_chunk=None)
    failed.on_head([(b":status", b"200")])
    error = RequestFailed("reset")
    failed.fail(error)
    failed.end(10)
    failed.fail(RequestFailed("later"))
    with pytest.raises(RequestFailed) as caught:
        failed.response()
    assert caught.value is error

    ended = Exchange(3, keep_body=True, on_chunk=None)
    ended.on_head([(b":status", b"200")])
    ended.end(10)
    ended.fail(RequestFailed("too late"))
    assert ended.response().end_ns == 10


def test_an_exchange_without_a_response_head_raises() -> None:
    ex = Exchange(7, keep_body=True, on_chunk=None)
    ex.end(10)
    with pytest.raises(RequestFailed, match="stream 7 ended without a response"):
        ex.response()
