"""The server's self-measurement files: named absolutely (the server runs in its own working
directory), read back per protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.http.departure_log import DEPARTURE_LOG_HEADER
from lab.run.server_logs import ServerLogs, read_server_logs


def test_a_relative_results_directory_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    logs = ServerLogs.under(Path("results") / "run" / "server" / "c000-0")
    for value in logs.env().values():
        path = Path(value)
        assert path.is_absolute() and path.parent == tmp_path / "results/run/server/c000-0"
    assert (tmp_path / "results/run/server/c000-0").is_dir()


def test_absent_logs_read_as_nothing_and_h3_departures_as_written(tmp_path: Path) -> None:
    logs = ServerLogs.under(tmp_path / "s")
    none = read_server_logs(logs, None)
    assert none.quic_senders is None and none.departures == {}
    logs.departures.write_text(DEPARTURE_LOG_HEADER + "h3,10,15\nh3,20,31\n")
    got = read_server_logs(logs, None).departures
    assert set(got) == {"h3"} and got["h3"]["left_ns"].tolist() == [15, 31]
