"""notebooks/analysis.ipynb executes top to bottom (nbclient) on a fixture run, and is stored
without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from fixtures.make_run import make_fixture_run
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_executes_on_a_fixture_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_fixture_run(tmp_path, repetitions=3)
    monkeypatch.setenv("LAB_RUN", str(run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env={**os.environ})
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert str(run) in text and "status: complete" in text
    html = "".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "goodput_mbit" in html and "better" in html  # the verdict table rendered
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plots rendered
