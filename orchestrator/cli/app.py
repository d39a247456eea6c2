"""The command group: every command, and the one place their errors become exit codes.

Every command shares one exit-code scheme (:class:`orchestrator.errors.ExitCode`). Errors
are printed as one line on stderr; a traceback never reaches the user.
"""

from __future__ import annotations

import os
import signal

import click

from orchestrator.cli import analysis, database, init, runs
from orchestrator.errors import ExitCode, OrchestratorError
from orchestrator.interrupts import signals_interrupt


@click.group(
    name="orchestrator",
    help="Take a release with Drizzle-tracked Postgres migrations to production, safely.",
)
def app() -> None:
    """The command group."""


for _command in (
    init.init,
    database.validate,
    database.migrate,
    runs.deploy,
    runs.resume,
    runs.rollback,
    runs.list_runs,
    runs.show,
    analysis.plan,
    analysis.lint,
    analysis.repair,
    analysis.inspect,
):
    app.add_command(_command)


def run_app(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the command and return its exit code (never raises)."""
    from orchestrator.cli import console

    console.forget_warnings()
    try:
        # Locks are released and a run records the interruption before exiting.
        with signals_interrupt(*STOP_SIGNALS):
            result = app.main(args=argv, standalone_mode=False, prog_name="orchestrator")
    except click.exceptions.NoArgsIsHelpError as exc:
        # `orchestrator` alone: show the help, as a usage error (nothing was asked).
        console.err.print(exc.format_message(), markup=False, highlight=False)
        return int(ExitCode.USAGE)
    except click.exceptions.UsageError as exc:
        console.err.print(f"error: {redact(exc.format_message())}", markup=False, highlight=False)
        return int(ExitCode.USAGE)
    except click.exceptions.Abort as exc:
        # click turns KeyboardInterrupt (Ctrl-C, and SIGTERM/SIGHUP, see STOP_SIGNALS)
        # into Abort; a "no" at a prompt is an Abort of its own.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, KeyboardInterrupt):
            console.err.print(f"interrupted by {str(cause) or 'SIGINT'}", markup=False)
        else:
            console.err.print("aborted: nothing was changed", markup=False)
        return int(ExitCode.USAGE)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except OrchestratorError as exc:
        console.err.print(f"error: {redact(str(exc))}", markup=False, highlight=False)
        return int(exc.exit_code)
    except KeyboardInterrupt as exc:
        console.err.print(f"interrupted{f' by {exc}' if str(exc) else ''}", markup=False)
        return int(ExitCode.ERROR)
    except Exception as exc:  # the last line of defence: one line, no traceback
        first = redact(str(exc)).splitlines()[0] if str(exc) else ""
        console.err.print(
            f"internal error: {type(exc).__name__}: {first}",
            markup=False,
            highlight=False,
        )
        if os.environ.get("ORCH_DEBUG"):
            raise
        return int(ExitCode.ERROR)
    return int(result) if isinstance(result, int) else 0


#: The signals that stop a command the way Ctrl-C does: a cancelled CI job sends SIGTERM, a
#: closed terminal SIGHUP.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def redact(text: str) -> str:
    """Mask secrets in an error message (imported late: ``--help`` does not need it)."""
    from orchestrator import redaction

    return redaction.redact(text)
