"""The one exit-code scheme shared by every command, and the errors that map onto it.

Everything below the CLI raises one of these; the CLI (``cli/__init__.py``) turns it into a
one-line message and the matching exit code, so no traceback ever reaches the user.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, identical for every command."""

    OK = 0  # success, or verdict SAFE
    USAGE = 2  # usage error or bad input; nothing was changed
    NEEDS_MIGRATION = 10
    PARTIAL = 20  # PARTIAL_MIGRATION, or a run halted on a partial state
    GUARD_FAILED = 21  # halted by a guard or a failed check
    MONITOR_UNHEALTHY = 22
    ERROR = 30  # database unreachable or unreadable, or an unexpected failure


class OrchestratorError(Exception):
    """Base of every error the CLI knows how to report."""

    exit_code: ExitCode = ExitCode.ERROR


class UsageError(OrchestratorError):
    """Bad input (arguments, files, playbook, URL). Raised before anything changes."""

    exit_code = ExitCode.USAGE


class PartialStateError(OrchestratorError):
    """The database is in a state nobody chose (objects without tracking, holes, ...)."""

    exit_code = ExitCode.PARTIAL


class GuardError(OrchestratorError):
    """A guard or check refused to let the run go on."""

    exit_code = ExitCode.GUARD_FAILED


class MonitorUnhealthyError(OrchestratorError):
    """The post-deploy monitor window saw more failures than allowed."""

    exit_code = ExitCode.MONITOR_UNHEALTHY


class DatabaseError(OrchestratorError):
    """The database could not be reached or its catalog could not be read.

    ``transient`` marks failures of the connection (worth retrying) as opposed to answers
    from the database (an SQL error, a permission denied).
    """

    exit_code = ExitCode.ERROR

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
