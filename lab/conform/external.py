"""The community catalogues as cases: h2spec (H2-X) and h3spec (H3-X), where installed.

Neither is in this host's package registries, so both report `unsupported` here; where the binary
is on PATH the case runs it on the client side and counts its failures (h2spec's JUnit, h3spec's
hspec summary line).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from xml.etree import ElementTree

import trio

from lab.conform.case import case
from lab.conform.context import CaseContext
from lab.conform.model import Outcome, failed, passed, unsupported

TOOL_TIMEOUT_S = 300.0
_HSPEC_SUMMARY = re.compile(r"(\d+) examples?, (\d+) failures?")


def junit_counts(xml: bytes) -> tuple[int, int]:
    """(test cases, failed or errored ones) of a JUnit document."""
    root = ElementTree.fromstring(xml)
    cases = list(root.iter("testcase"))
    bad = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    return len(cases), len(bad)


async def _run(ctx: CaseContext, argv: list[str]) -> tuple[int, str]:
    with trio.move_on_after(TOOL_TIMEOUT_S):
        done = await trio.run_process(ctx.client_argv(argv), capture_stdout=True, check=False)
        return done.returncode, done.stdout.decode(errors="replace")
    return -1, f"timed out after {TOOL_TIMEOUT_S:g} s"


@case(
    "H2-X",
    "h2",
    "h2spec: the 146 cases of the community catalogue",
    "RFC 7540 / RFC 7541",
    "SHOULD",
    needs={"h2"},
)
async def h2spec(ctx: CaseContext) -> Outcome:
    binary = shutil.which("h2spec")
    if binary is None:
        return unsupported("h2spec is not installed")
    ep = ctx.endpoint
    with tempfile.TemporaryDirectory(prefix="lab-h2spec-") as tmp:
        out = Path(tmp) / "h2spec.xml"
        argv = [binary, "-t", "-k", "-h", ep.host, "-p", str(ep.port), "-P", "/healthz"]
        await _run(ctx, [*argv, "-j", str(out)])
        if not out.exists():
            return failed("h2spec wrote no JUnit report")
        total, bad = junit_counts(out.read_bytes())
    return failed(f"{bad} of {total} failed") if bad else passed(f"{total}/{total}")


@case(
    "H3-X",
    "h3",
    "h3spec: the 49 cases of the community catalogue",
    "RFC 9000 / 9001 / 9114 / 9204",
    "SHOULD",
    needs={"h3"},
)
async def h3spec(ctx: CaseContext) -> Outcome:
    binary = shutil.which("h3spec")
    if binary is None:
        return unsupported("h3spec is not installed")
    ep = ctx.endpoint
    _rc, text = await _run(ctx, [binary, ep.host, str(ep.port), "-n", "-t", "5000"])
    m = _HSPEC_SUMMARY.search(text)
    if m is None:
        return failed("no hspec summary line in h3spec's output")
    total, bad = int(m[1]), int(m[2])
    return failed(f"{bad} of {total} failed") if bad else passed(f"{total}/{total}")
