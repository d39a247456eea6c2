"""``validate`` and ``migrate``: the two commands that work on one database directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from orchestrator.cli.options import (
    DatabaseTarget,
    allow_concurrent_option,
    database_options,
    lock_retries_option,
    lock_timeout_option,
)
from orchestrator.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.validation import ValidationReport


@click.command()
@database_options
def validate(target: DatabaseTarget) -> int:
    """Read-only: report the migration state of the database (SAFE, NEEDS_MIGRATION, ...)."""
    from orchestrator.database import validate_database

    url = target.url()
    report = validate_database(url, target.journal(), target.options(), **target.reading())
    show_report(report, url, target.as_json)
    return int(report.exit_code)


@click.command()
@database_options
@lock_timeout_option
@click.option(
    "--statement-timeout",
    default="5min",
    show_default=True,
    help="Abort any one statement running longer than this.",
)
@lock_retries_option
@allow_concurrent_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def migrate(
    target: DatabaseTarget,
    lock_timeout: str,
    statement_timeout: str,
    lock_retries: int,
    allow_concurrent: bool,
    yes: bool,
) -> int:
    """Apply pending migrations in one transaction, exactly as drizzle would record them."""
    from rich.markup import escape  # a tag is text, whatever brackets it holds

    from orchestrator import render
    from orchestrator.cli.console import err, interactive, out, print_json
    from orchestrator.migrate import migrate_database
    from orchestrator.redaction import redact_url

    url = target.url(writes=True)
    options = target.options(
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        lock_retries=lock_retries,
        allow_concurrent=allow_concurrent,
    )
    journal = target.journal()
    if not yes and not interactive():
        raise UsageError("migrate changes the database: pass --yes (no terminal to confirm on)")

    def confirm(report: ValidationReport) -> bool:
        if yes:
            return True
        render.validation(out, report, redact_url(url))
        tags = ", ".join(m.tag for m in report.pending)
        return click.confirm(f"Apply {tags} to {redact_url(url)}?", default=False)

    result = migrate_database(
        url,
        journal,
        options,
        confirm=confirm,
        **target.reading(),
        on_migration=None if target.as_json else lambda m: err.print(f"applying {escape(m.tag)} …"),
        on_lock_retry=lambda event: err.print(event.line(), markup=False, highlight=False),
        on_note=lambda note: err.print(note, markup=False, highlight=False),
    )
    if target.as_json:
        print_json(
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
                + escape(", ".join(a.tag for a in result.applied))
            )
        else:
            out.print("nothing to apply")
        render.validation(out, result.after, redact_url(url))
    return int(result.after.exit_code)


def show_report(report: ValidationReport, url: str, as_json: bool) -> None:
    """A validation report as JSON or as the human table."""
    from orchestrator.cli import console
    from orchestrator.redaction import redact_url
    from orchestrator.validation import Verdict

    if as_json:  # rich is not needed (nor imported) for JSON
        document = report.to_json()
        document["database"] = {**document["database"], "url": redact_url(url)}
        console.print_json(document)
    else:
        from orchestrator import render

        render.validation(console.out, report, redact_url(url))
    if report.status is Verdict.ERROR:
        message = f"error: {report.first_error(report.recommendation)}"
        console.err.print(message, markup=False)
