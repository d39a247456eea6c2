"""``validate`` and ``migrate``: the two commands that work on one database directly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.options import (
    database_options,
    duration,
    on_retry,
    retry_policy,
    transport_check,
)
from orchestrator.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.validation import ValidationReport


@click.command()
@database_options
def validate(
    migrations: Path,
    database_url: str | None,
    migrations_schema: str,
    migrations_table: str,
    as_json: bool,
    retries: int,
    require_ssl: bool,
) -> int:
    """Read-only: report the migration state of the database (SAFE, NEEDS_MIGRATION, ...)."""
    from orchestrator import commands
    from orchestrator.db.connect import check_url
    from orchestrator.db.migrator import MigrateOptions
    from orchestrator.drizzle.journal import read_journal

    url = check_url(database_url)
    transport_check(url, require_ssl)
    journal = read_journal(migrations)
    options = MigrateOptions(schema=migrations_schema, table=migrations_table)
    report = commands.validate_database(
        url, journal, options, retry=retry_policy(retries), on_retry=on_retry
    )
    show_report(report, url, as_json)
    return int(report.exit_code)


@click.command()
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
    require_ssl: bool,
    lock_timeout: str,
    statement_timeout: str,
    yes: bool,
) -> int:
    """Apply pending migrations in one transaction, exactly as drizzle would record them."""
    from orchestrator import commands, render
    from orchestrator.cli.console import err, interactive, out, print_json
    from orchestrator.db.connect import check_url, redact_url
    from orchestrator.db.migrator import MigrateOptions
    from orchestrator.drizzle.journal import read_journal

    url = check_url(database_url)
    transport_check(url, require_ssl)
    options = MigrateOptions(
        schema=migrations_schema,
        table=migrations_table,
        lock_timeout=duration(lock_timeout, "--lock-timeout"),
        statement_timeout=duration(statement_timeout, "--statement-timeout"),
    )
    journal = read_journal(migrations)
    if not yes and not interactive():
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
        retry=retry_policy(retries),
        on_retry=on_retry,
        on_migration=None if as_json else lambda m: err.print(f"applying {m.tag} …"),
    )
    if as_json:
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
                + ", ".join(a.tag for a in result.applied)
            )
        else:
            out.print("nothing to apply")
        render.validation(out, result.after, redact_url(url))
    return int(result.after.exit_code)


def show_report(report: ValidationReport, url: str, as_json: bool) -> None:
    """A validation report as JSON or as the human table."""
    from orchestrator import render
    from orchestrator.cli.console import err, out, print_json
    from orchestrator.db.connect import redact_url
    from orchestrator.validation import Verdict

    if as_json:
        document = report.to_json()
        document["database"] = {**document["database"], "url": redact_url(url)}
        print_json(document)
    else:
        render.validation(out, report, redact_url(url))
    if report.status is Verdict.ERROR:
        errors = [f.message for f in report.findings if f.severity == "error"]
        err.print(f"error: {errors[0] if errors else report.recommendation}", markup=False)
