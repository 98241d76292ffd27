"""The HTML report in a real browser: Debian's headless Chromium, driven over the DevTools
protocol on a pipe (`--remote-debugging-pipe`: NUL-separated JSON on fds 3/4, no websocket
library needed). The page loads, every image decodes (naturalWidth > 0), nothing is fetched from
the network, and there is no console error or uncaught exception."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.make_run import make_fixture_run

from lab.evidence.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


class DevTools:
    """A minimal Chrome DevTools Protocol client over the pipe transport."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc = proc
        self._w = to_browser
        self._r = from_browser
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from chromium")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    raise EOFError("chromium closed the DevTools pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and wait for its result (events meanwhile go to `self.events`)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        """The first event named `method` (already received or arriving within `timeout`)."""
        for e in self.events:
            if e.get("method") == method:
                return e
        deadline = time.monotonic() + timeout
        while True:
            e = self._read_message(deadline)
            self.events.append(e)
            if e.get("method") == method:
                return e


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """A headless Chromium with a fresh profile; always killed and reaped."""
    assert CHROMIUM is not None
    to_r, to_w = os.pipe()  # parent writes commands, browser reads fd 3
    from_r, from_w = os.pipe()  # browser writes fd 4, parent reads
    # move the child's ends to high numbers so dup2 onto 3/4 cannot clobber them
    hi_in = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10)
    hi_out = fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
    os.close(to_r)
    os.close(from_w)

    def _wire() -> None:  # runs in the child before exec
        os.dup2(hi_in, 3)
        os.dup2(hi_out, 4)

    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--remote-debugging-pipe",
        "about:blank",
    ]
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        preexec_fn=_wire,
        pass_fds=(3, 4, hi_in, hi_out),
        start_new_session=True,
    )
    os.close(hi_in)
    os.close(hi_out)
    client = DevTools(proc, to_w, from_r)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):  # the browser may be gone already
            client.call("Browser.close")
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
        os.close(to_w)
        os.close(from_r)
        log.close()


def test_report_renders_in_chromium(browser: DevTools, tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "runs", repetitions=3)
    page = write_report(run).html
    target = browser.call("Target.createTarget", url="about:blank")["targetId"]
    session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.call(f"{domain}.enable", session)
    browser.call("Page.navigate", session, url=page.as_uri())
    browser.wait_event("Page.loadEventFired")
    result = browser.call(
        "Runtime.evaluate",
        session,
        expression=(
            "JSON.stringify({title: document.title, n: document.images.length,"
            " images: Array.from(document.images).map(i => [i.complete, i.naturalWidth,"
            " i.naturalHeight, i.src.slice(0, 22)]),"
            " headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),"
            " shown: Array.from(document.querySelectorAll('table'))"
            ".filter(t => t.checkVisibility()).map(t => t.rows[0].cells[0].textContent),"
            " closed: document.querySelectorAll('details:not([open]) table').length})"
        ),
        returnByValue=True,
    )
    info = json.loads(result["result"]["value"])
    assert info["title"].startswith("lab report: ")
    assert info["n"] == 7  # ttfb, goodput, hol_spread, excess, queue and rest CDFs, rpc_delay
    for complete, width, height, src in info["images"]:
        assert complete and width > 0 and height > 0
        assert src == "data:image/png;base64,"
    assert "Watch streams (head-of-line blocking)" in info["headings"]
    # the answers first, the environment last and collapsed
    assert info["headings"][0] == "KEP claims"
    assert info["headings"][-1] == "Scenario and environment"
    assert info["shown"][0] == "claim"  # the first visible table is the claims table
    assert "setting" not in info["shown"]  # no environment table is visible …
    assert info["closed"] >= 4  # … they are inside closed <details>

    errors = [
        e
        for e in browser.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert errors == []
    fetched = [
        e["params"]["request"]["url"]
        for e in browser.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert fetched and all(u.startswith(("file:", "data:")) for u in fetched), fetched
