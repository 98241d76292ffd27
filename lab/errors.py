"""The lab's one error tree: every error its user should see is a `LabError`.

The CLI maps them to exit codes in one place (`exit_code`) and prints one line, never a
traceback. Errors that are internal (a bug: "we did wrong") are any other exception.

    LabError                       exit 1
    ├── BadInput                   exit 2: a file or argument the user gave is wrong
    │   ├── ScenarioError          a scenario file ("FILE:LINE: field: reason")
    │   ├── ThresholdFileError     a thresholds file ("FILE:LINE: reason")
    │   ├── ResultsError           a results directory that is missing, damaged or not a run
    │   └── RunSetupError          a run that cannot start as asked (server, workload, backend)
    ├── RunError                   a run, cell or process of the lab failed
    ├── PeerError                  a server or client under test failed or misbehaved
    └── HostNotCapable             exit 2: this host lacks a privilege, module or tool
"""

from __future__ import annotations


class LabError(Exception):
    """Base of the user-facing errors; `exit_code` is the process exit code the CLI uses."""

    exit_code = 1


class BadInput(LabError):
    """A file or argument given by the user is invalid (exit 2)."""

    exit_code = 2


class ScenarioError(BadInput):
    """An invalid scenario; str() is one sentence "FILE:LINE: field.path: reason"."""

    def __init__(self, filename: str, line: int | None, field: str, reason: str) -> None:
        self.filename = filename
        self.line = line
        self.field = field
        self.reason = reason
        where = filename if line is None else f"{filename}:{line}"
        super().__init__(f"{where}: {field}: {reason}" if field else f"{where}: {reason}")


class ThresholdFileError(BadInput):
    """A thresholds file is unreadable or invalid; str() is "FILE[:LINE]: reason"."""


class ResultsError(BadInput):
    """A results directory is missing, malformed or would be overwritten."""


class RunSetupError(BadInput):
    """A run cannot start as asked (unknown server, unsupported workload, backend that cannot
    express the link)."""


class RunError(LabError):
    """A run, a cell repetition or one of the lab's own processes failed."""


class PeerError(LabError):
    """A server or client under test failed to start, to become ready or to answer."""


class HostNotCapable(LabError):
    """This host cannot do what was asked: a missing privilege, kernel module or tool (exit 2)."""

    exit_code = 2
