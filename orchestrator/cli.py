"""The command line: parse arguments, call one function of the command layer, render.

Every command shares one exit-code scheme (:class:`orchestrator.errors.ExitCode`). Errors
are printed as one line on stderr; a traceback never reaches the user.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from orchestrator import commands, render
from orchestrator import deploy as deploy_engine
from orchestrator.audit import read_events
from orchestrator.checklist import checklist
from orchestrator.db.connect import check_url, redact, redact_url
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import RetryPolicy
from orchestrator.deploy import Interaction
from orchestrator.drizzle.journal import read_journal
from orchestrator.errors import ExitCode, OrchestratorError, UsageError
from orchestrator.playbook import load_playbook, parse_duration
from orchestrator.rehearsal import rehearse
from orchestrator.runs import RunRecord, RunStore
from orchestrator.validation import ValidationReport

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@click.group(
    name="orchestrator",
    help="Take a release with Drizzle-tracked Postgres migrations to production, safely.",
)
def app() -> None:
    """The command group."""


def database_options(func: Callable[..., int]) -> Callable[..., int]:
    """Options shared by every command that reads a database and a migrations folder."""
    options = [
        click.option(
            "--database-url",
            envvar="DATABASE_URL",
            help="Connection string (URL or key=value). Defaults to $DATABASE_URL.",
        ),
        click.option(
            "--migrations",
            "migrations",
            required=True,
            type=click.Path(path_type=Path),
            help="The Drizzle migrations folder (holding meta/_journal.json).",
        ),
        click.option(
            "--migrations-schema",
            default="drizzle",
            show_default=True,
            help="Schema of drizzle's tracking table.",
        ),
        click.option(
            "--migrations-table",
            default="__drizzle_migrations",
            show_default=True,
            help="Name of drizzle's tracking table.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document."),
        click.option(
            "--retries",
            default=3,
            show_default=True,
            type=click.IntRange(min=1),
            help="Attempts on transient connection failures.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _retry_policy(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, initial=0.5, max_wait=20.0)


def _on_retry(attempt: int, error: BaseException, wait: float) -> None:
    err.print(
        f"[yellow]transient failure (attempt {attempt}): {redact(str(error))}; "
        f"retrying in {wait:.1f}s[/yellow]"
    )


def _duration_option(value: str, name: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(redact(json.dumps(document, indent=2, default=str)) + "\n")


@app.command()
@database_options
def validate(
    migrations: Path,
    database_url: str | None,
    migrations_schema: str,
    migrations_table: str,
    as_json: bool,
    retries: int,
) -> int:
    """Read-only: report the migration state of the database (SAFE, NEEDS_MIGRATION, ...)."""
    url = check_url(database_url)
    journal = read_journal(migrations)
    options = MigrateOptions(schema=migrations_schema, table=migrations_table)
    report = commands.validate_database(
        url, journal, options, retry=_retry_policy(retries), on_retry=_on_retry
    )
    _show_report(report, url, as_json)
    return int(report.exit_code)


@app.command()
@database_options
@click.option(
    "--lock-timeout",
    default="5s",
    show_default=True,
    help="Give up waiting for a lock after this long.",
)
@click.option(
    "--statement-timeout",
    default="5min",
    show_default=True,
    help="Abort any one statement running longer than this.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def migrate(
    migrations: Path,
    database_url: str | None,
    migrations_schema: str,
    migrations_table: str,
    as_json: bool,
    retries: int,
    lock_timeout: str,
    statement_timeout: str,
    yes: bool,
) -> int:
    """Apply pending migrations in one transaction, exactly as drizzle would record them."""
    url = check_url(database_url)
    options = MigrateOptions(
        schema=migrations_schema,
        table=migrations_table,
        lock_timeout=_duration_option(lock_timeout, "--lock-timeout"),
        statement_timeout=_duration_option(statement_timeout, "--statement-timeout"),
    )
    journal = read_journal(migrations)
    if not yes and not _interactive():
        raise UsageError("migrate changes the database: pass --yes (no terminal to confirm on)")

    def confirm(report: ValidationReport) -> bool:
        if yes:
            return True
        render.validation(out, report, redact_url(url))
        tags = ", ".join(m.tag for m in report.pending)
        return click.confirm(f"Apply {tags} to {redact_url(url)}?", default=False)

    result = commands.migrate_database(
        url,
        journal,
        options,
        confirm=confirm,
        retry=_retry_policy(retries),
        on_retry=_on_retry,
        on_migration=None if as_json else lambda m: err.print(f"applying {m.tag} …"),
    )
    if as_json:
        _print_json(
            {
                "applied": [a.__dict__ for a in result.applied],
                "before": result.before.to_json(),
                "after": result.after.to_json(),
                "status": result.after.status.value,
            }
        )
    else:
        if result.applied:
            out.print(
                f"[green]applied {len(result.applied)} migration(s):[/green] "
                + ", ".join(a.tag for a in result.applied)
            )
        else:
            out.print("nothing to apply")
        render.validation(out, result.after, redact_url(url))
    return int(result.after.exit_code)


STATE_DIR_HELP = "Where run records live (runs/<run-id>/). Default: .orchestrator"


def state_options(func: Callable[..., int]) -> Callable[..., int]:
    """--state-dir and --json, shared by the run commands."""
    func = click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")(
        func
    )
    return click.option(
        "--state-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path(".orchestrator"),
        show_default=True,
        help=STATE_DIR_HELP,
    )(func)


def _interaction(yes: bool, backup_confirmed: bool, as_json: bool, what: str) -> Interaction:
    """Confirmations: --yes answers them; a terminal asks; otherwise refuse up front."""
    interactive = _interactive()
    if not yes and not interactive:
        raise UsageError(f"{what} changes production: pass --yes (no terminal to confirm on)")

    def confirm(question: str) -> bool:
        return True if yes else click.confirm(f"{question}?", default=False)

    def ask(question: str) -> bool:
        return click.confirm(f"{question}?", default=False)

    console = None if as_json else _print_event
    return Interaction(
        confirm=confirm,
        backup_confirmed=backup_confirmed,
        ask=ask if interactive else None,
        console=console,
        on_progress=_progress if interactive and not as_json else lambda _line: None,
    )


class _LiveLine:
    """One line on the terminal that progress rewrites in place; events print below it."""

    active = False

    @classmethod
    def show(cls, line: str) -> None:
        sys.stderr.write("\r\x1b[2K" + line)
        sys.stderr.flush()
        cls.active = True

    @classmethod
    def close(cls) -> None:
        if cls.active:
            sys.stderr.write("\n")
            cls.active = False


def _print_event(event: dict[str, Any]) -> None:
    line = render.event_line(event)
    if line is not None:
        _LiveLine.close()
        err.print(line, markup=False, highlight=False)


def _progress(line: str) -> None:
    _LiveLine.show(line)


def _finish_run(record: RunRecord, as_json: bool) -> int:
    if as_json:
        _print_json(record.to_json())
    else:
        render.run_summary(out, record)
    return int(record.exit_code if record.exit_code is not None else ExitCode.ERROR)


@app.command()
@click.option(
    "--playbook", required=True, type=click.Path(path_type=Path), help="The release playbook."
)
@click.option("--yes", "-y", is_flag=True, help="Answer yes to every confirmation.")
@click.option(
    "--backup-confirmed", is_flag=True, help="backup kind manual: vouch that a backup exists."
)
@click.option(
    "--dry-run", is_flag=True, help="Rehearse read-only: say what would happen, change nothing."
)
@state_options
def deploy(
    playbook: Path,
    yes: bool,
    backup_confirmed: bool,
    dry_run: bool,
    state_dir: Path,
    as_json: bool,
) -> int:
    """Walk Strategy A: backup, validate, migrate, revalidate, merge/push, monitor."""
    if dry_run:
        rehearsal = rehearse(playbook, os.environ)
        if as_json:
            _print_json(
                {
                    "dry_run": True,
                    "exit_code": int(rehearsal.exit_code),
                    "plan": rehearsal.lines,
                    "validation": rehearsal.report.to_json() if rehearsal.report else None,
                }
            )
        else:
            for line in rehearsal.lines:
                out.print(line, markup=False, highlight=False)
        return int(rehearsal.exit_code)
    interaction = _interaction(yes, backup_confirmed, as_json, "deploy")
    if not yes and not as_json:
        for line in checklist(load_playbook(playbook)):
            out.print(line, markup=False, highlight=False)
        if not click.confirm("Start the deploy?", default=False):
            raise UsageError("deploy not started: nothing was changed")
    record = deploy_engine.start(playbook, RunStore(state_dir), interaction)
    return _finish_run(record, as_json)


@app.command()
@click.argument("run_id")
@click.option("--yes", "-y", is_flag=True, help="Answer yes to every confirmation.")
@click.option(
    "--backup-confirmed", is_flag=True, help="backup kind manual: vouch that a backup exists."
)
@state_options
def resume(run_id: str, yes: bool, backup_confirmed: bool, state_dir: Path, as_json: bool) -> int:
    """Continue an interrupted or halted run; steps already done are not repeated."""
    interaction = _interaction(yes, backup_confirmed, as_json, "resume")
    record = deploy_engine.resume(run_id, RunStore(state_dir), interaction)
    return _finish_run(record, as_json)


@app.command()
@click.argument("run_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@state_options
def rollback(run_id: str, yes: bool, state_dir: Path, as_json: bool) -> int:
    """Revert a run's pushed merge (git revert + push) and print the database steps."""
    interaction = _interaction(yes, False, as_json, "rollback")
    result = deploy_engine.rollback(run_id, RunStore(state_dir), interaction)
    if as_json:
        _print_json({"reverted_commit": result.reverted_commit, "plan": result.plan})
    else:
        if result.reverted_commit:
            out.print(f"[green]reverted and pushed:[/green] {result.reverted_commit}")
        for line in result.plan:
            out.print(line, markup=False, highlight=False)
    return int(ExitCode.OK)


@app.command(name="runs")
@state_options
def list_runs(state_dir: Path, as_json: bool) -> int:
    """List recorded runs, newest first."""
    records = RunStore(state_dir).list()
    if as_json:
        _print_json({"runs": [r.to_json() for r in records]})
    else:
        render.runs_table(out, records)
    return int(ExitCode.OK)


@app.command()
@click.argument("run_id")
@state_options
def show(run_id: str, state_dir: Path, as_json: bool) -> int:
    """Print a run's timeline (transitions, steps, checks, halt and rollback plan)."""
    store = RunStore(state_dir)
    record = store.load(run_id)
    events = read_events(store.audit_path(record.run_id))
    if as_json:
        _print_json({"record": record.to_json(), "events": events})
    else:
        render.timeline(out, record, events)
    return int(ExitCode.OK)


def _show_report(report: ValidationReport, url: str, as_json: bool) -> None:
    if as_json:
        document = report.to_json()
        document["database"] = {**document["database"], "url": redact_url(url)}
        _print_json(document)
    else:
        render.validation(out, report, redact_url(url))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run a command and exit with its code; never show a traceback."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run a command and return its exit code."""
    try:
        result = app.main(args=argv, standalone_mode=False, prog_name="orchestrator")
    except click.exceptions.NoArgsIsHelpError as exc:
        # `orchestrator` alone: show the help, as a usage error (nothing was asked).
        err.print(exc.format_message(), markup=False, highlight=False)
        return int(ExitCode.USAGE)
    except click.exceptions.UsageError as exc:
        err.print(f"error: {redact(exc.format_message())}", markup=False, highlight=False)
        return int(ExitCode.USAGE)
    except click.exceptions.Abort:
        err.print("aborted: nothing was changed", markup=False)
        return int(ExitCode.USAGE)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except OrchestratorError as exc:
        err.print(f"error: {redact(str(exc))}", markup=False, highlight=False)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return int(ExitCode.ERROR)
    except Exception as exc:  # the last line of defence: one line, no traceback
        first = redact(str(exc)).splitlines()[0] if str(exc) else ""
        err.print(
            f"internal error: {type(exc).__name__}: {first}",
            markup=False,
            highlight=False,
        )
        if os.environ.get("ORCH_DEBUG"):
            raise
        return int(ExitCode.ERROR)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    main()
