"""Synthetic Kubernetes pods: the List and watch payloads of the reference server (pure code).

Pods are deterministic functions of (namespace, index, size): pod i of namespace "default" is the
same bytes on every run. Paging follows kube-apiserver: `limit` caps the items of one response,
`metadata.continue` is an opaque token for the next page and `metadata.remainingItemCount` says
how many items follow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

LIST_RESOURCE_VERSION = 1000  # resourceVersion of the (static) collection
_TOKEN_VERSION = "lab/v1"
_NS_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PAD_SOURCE = hashlib.sha256(b"lab pod padding").hexdigest() * 2048  # 131072 hex chars
_UID_NS = uuid.UUID("6c61622d-706f-6473-0000-000000000000")


class BadListRequest(ValueError):
    """The List parameters are malformed (answered with 400)."""


def valid_namespace(ns: str) -> bool:
    """True when `ns` is a DNS-1123 label, as Kubernetes namespaces are."""
    return bool(_NS_RE.match(ns))


def _pod_dict(ns: str, i: int, padding: str) -> dict[str, object]:
    name = f"pod-{i:05d}"
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": str(uuid.uuid5(_UID_NS, f"{ns}/{name}")),
            "resourceVersion": str(LIST_RESOURCE_VERSION - 1 - i % 997),
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "labels": {"app": "lab", "shard": str(i % 16)},
            "annotations": {"lab.example/padding": padding},
        },
        "spec": {
            "nodeName": f"node-{i % 50:02d}",
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}],
        },
        "status": {"phase": "Running", "podIP": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"},
    }


def _dumps(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@lru_cache(maxsize=8192)
def pod_json(ns: str, i: int, size_bytes: int) -> bytes:
    """Pod i of `ns` as compact JSON, padded to exactly `size_bytes` (or minimal if smaller)."""
    base = _dumps(_pod_dict(ns, i, ""))
    pad = max(0, size_bytes - len(base))
    start = (i * 7919) % 4096
    if pad > len(_PAD_SOURCE) - start:
        padding = (_PAD_SOURCE * (pad // len(_PAD_SOURCE) + 2))[start : start + pad]
    else:
        padding = _PAD_SOURCE[start : start + pad]
    return _dumps(_pod_dict(ns, i, padding))


def encode_continue(start: int) -> str:
    """The continue token that resumes a List at item index `start`."""
    raw = json.dumps({"v": _TOKEN_VERSION, "rv": LIST_RESOURCE_VERSION, "start": start})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> int:
    """The item index a continue token points at; raises BadListRequest when malformed."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        obj = json.loads(raw)
        start = obj["start"]
        ok = obj["v"] == _TOKEN_VERSION and isinstance(start, int) and start >= 0
    except (binascii.Error, ValueError, KeyError, TypeError) as e:
        raise BadListRequest(f"malformed continue token: {e}") from None
    if not ok:
        raise BadListRequest("malformed continue token")
    return start


@dataclass(frozen=True)
class ListPage:
    """One page of a List: item index range [start, end) and the token for the next page."""

    start: int
    end: int
    continue_token: str  # "" on the last page
    remaining: int  # items after this page


def plan_page(total: int, limit: int, continue_token: str) -> ListPage:
    """Which items one List response carries; limit 0 means all remaining."""
    if limit < 0:
        raise BadListRequest("limit must be >= 0")
    start = decode_continue(continue_token) if continue_token else 0
    if start > total:
        raise BadListRequest("continue token beyond the end of the list")
    end = total if limit == 0 else min(total, start + limit)
    remaining = total - end
    token = encode_continue(end) if remaining > 0 else ""
    return ListPage(start, end, token, remaining)


def pod_list_json(ns: str, page: ListPage, pod_size_bytes: int) -> list[bytes]:
    """A PodList for `page`, as a list of byte pieces (join or send them in order)."""
    meta: dict[str, object] = {"resourceVersion": str(LIST_RESOURCE_VERSION)}
    if page.continue_token:
        meta["continue"] = page.continue_token
        meta["remainingItemCount"] = page.remaining
    head = b'{"kind":"PodList","apiVersion":"v1","metadata":' + _dumps(meta) + b',"items":['
    pieces = [head]
    for i in range(page.start, page.end):
        item = pod_json(ns, i, pod_size_bytes)
        pieces.append(item if i == page.start else b"," + item)
    pieces.append(b"]}")
    return pieces


def watch_event(ns: str, seq: int, stream_id: int, sent_ns: int) -> bytes:
    """One watch event as a JSON line: ADDED first, then MODIFIED, with the lab's stamps."""
    obj = {
        "type": "ADDED" if seq == 0 else "MODIFIED",
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": "pod-00000",
                "namespace": ns,
                "resourceVersion": str(LIST_RESOURCE_VERSION + seq + 1),
            },
            "status": {"phase": "Running"},
        },
        "lab": {"stream": stream_id, "seq": seq, "sent_ns": sent_ns},
    }
    return _dumps(obj) + b"\n"
