"""The command line: parse arguments, call the runtime's functions (validate in
:mod:`orchestrator.database`, migrate in :mod:`orchestrator.migrate`, the reports in
:mod:`orchestrator.reports`, the deploy engine in :mod:`orchestrator.engine`, ...), render the
result. The one place errors become exit codes is :func:`run`; the command group is ``app``,
its commands live in small modules (``database``, ``runs``, ``analysis``, ``init``).

Every command shares one exit-code scheme (:class:`orchestrator.errors.ExitCode`). Errors
are printed as one line on stderr; a traceback never reaches the user.
"""

from __future__ import annotations

import os
import sys

from orchestrator.errors import ExitCode, OrchestratorError


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run a command and exit with its code; never show a traceback."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the command and return its exit code (never raises)."""
    args = sys.argv[1:] if argv is None else argv
    failure: BaseException
    as_json = False
    try:
        # Imported in here, where Ctrl-C is handled: the command modules take a while to load.
        import click

        from orchestrator.cli import console
        from orchestrator.cli.app import STOP_SIGNALS, app
        from orchestrator.interrupts import signals_interrupt
        from orchestrator.redaction import given, shown

        console.forget()
        # A program reading --json reads stdout: it gets a document on an error too.
        command = app.commands.get(args[0]) if args else None
        as_json = "--json" in args and any(
            p.name == "as_json" for p in getattr(command, "params", ())
        )
        given.clear()  # the secrets an earlier command's run masked (several run in one process)
        # Locks are released and a run records the interruption before exiting.
        with signals_interrupt(*STOP_SIGNALS):
            result = app.main(args=args, standalone_mode=False, prog_name="orchestrator")
    except KeyboardInterrupt as exc:  # first: the names the clauses below use may be unbound
        print(f"interrupted by {str(exc) or 'SIGINT'}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except click.exceptions.NoArgsIsHelpError as exc:
        # `orchestrator` alone: show the help, as a usage error (nothing was asked).
        console.err.print(exc.format_message(), markup=False, highlight=False)
        return int(ExitCode.USAGE)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except (click.exceptions.UsageError, OrchestratorError) as exc:  # exit codes: 2, their own
        text = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        failure, code, line, message = exc, ExitCode(exc.exit_code), "error: ", shown().text(text)
    except click.exceptions.Abort as exc:
        # click turns KeyboardInterrupt (Ctrl-C, and SIGTERM/SIGHUP, see STOP_SIGNALS) and
        # end of input at a prompt into Abort (a run's own prompts tell them apart: cli.runs).
        cause = exc.__cause__ or exc.__context__
        failure, code, line = exc, ExitCode.USAGE, ""
        if isinstance(cause, KeyboardInterrupt):
            message = f"interrupted by {str(cause) or 'SIGINT'}"
        else:
            message = "aborted: nothing was changed"
    except Exception as exc:  # the last line of defence: one line, no traceback
        first = shown().text(str(exc)).splitlines()[0] if str(exc) else ""
        failure, code, line = exc, ExitCode.ERROR, "internal error: "
        message = f"{type(exc).__name__}: {first}"
        if os.environ.get("ORCH_DEBUG"):
            console.err.print(line + message, markup=False, highlight=False)
            raise
    else:
        return int(result) if isinstance(result, int) else 0
    console.err.print(line + message, markup=False, highlight=False)
    if as_json:
        console.print_error(message, code, failure)
    return int(code)
