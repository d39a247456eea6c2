"""Options shared by several commands, and the small conversions behind them.

Command modules import only click at module level so that ``orchestrator --help`` starts fast;
the runtime a command calls (psycopg, git, pglast, ...) is imported when it runs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.db.backoff import (
    DEFAULT_ATTEMPTS,
    DEFAULT_LOCK_BUDGET_S,
    DEFAULT_LOCK_RETRIES,
    DEFAULT_LOCK_TIMEOUT_S,
)
from orchestrator.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.db.migrator import MigrateOptions
    from orchestrator.drizzle.journal import Journal
    from orchestrator.shadow import ShadowSpec

# drizzle's own defaults for its tracking table.
DEFAULT_SCHEMA = "drizzle"
DEFAULT_TABLE = "__drizzle_migrations"
SHADOW_URL_ENV = "ORCHESTRATOR_SHADOW_URL"  # as orchestrator.shadow.SHADOW_URL_ENV

Command = Callable[..., int]
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@dataclass(frozen=True)
class DatabaseTarget:
    """What ``--database-url``, ``--migrations`` and their companions name, checked on use."""

    migrations: Path
    database_url: str | None
    schema: str
    table: str
    as_json: bool
    retries: int
    require_ssl: bool
    shadow_url: str | None = None

    def url(self, *, writes: bool = False) -> str:
        """The connection string: UsageError if missing or malformed; warns without TLS.

        ``writes``: the command changes the database, so Neon's pooled endpoint is refused
        (exit 2, before connecting); a read-only command only warns about it.
        """
        import os

        from orchestrator.cli import console
        from orchestrator.db.connect import check_database_url

        url, warnings = check_database_url(
            self.database_url, writes=writes, require_ssl=self.require_ssl, environ=os.environ
        )
        for warning in warnings:
            console.err.print(f"warning: {warning}", markup=False, highlight=False)
        return url

    def journal(self) -> Journal:
        """The migrations folder, read and checked (UsageError on bad input)."""
        return read_migrations(self.migrations)

    def options(
        self,
        *,
        lock_timeout: str | None = None,
        statement_timeout: str | None = None,
        lock_retries: int = DEFAULT_LOCK_RETRIES,
        allow_concurrent: bool = False,
    ) -> MigrateOptions:
        """The tracking table, the migration timeouts given as option text, the lock
        retries and whether non-transactional migrations may run."""
        from orchestrator.db.migrator import MigrateOptions

        timeouts: dict[str, float] = {}
        if lock_timeout is not None:
            timeouts["lock_timeout"] = duration(lock_timeout, "--lock-timeout")
        if statement_timeout is not None:
            timeouts["statement_timeout"] = duration(statement_timeout, "--statement-timeout")
        return MigrateOptions(
            schema=self.schema,
            table=self.table,
            lock_retries=lock_retries,
            allow_concurrent=allow_concurrent,
            **timeouts,
        )

    def reading(self) -> dict[str, Any]:
        """How every database command reads: ``shadow`` where the folder's history is
        replayed (``--shadow-url``, else a local cluster), ``retry`` for transient connection
        failures, and ``on_retry``."""
        from orchestrator.db.retry import RetryPolicy

        shadow, retry = shadow_spec(self.shadow_url), RetryPolicy(attempts=self.retries)
        return {"shadow": shadow, "retry": retry, "on_retry": on_retry}


def read_migrations(folder: Path) -> Journal:
    """Read a migrations folder; warn (never refuse) about files drizzle would ignore."""
    from orchestrator.cli.console import warn
    from orchestrator.drizzle.journal import read_journal, stray_file_message

    journal = read_journal(folder)
    for name in journal.stray_files:
        warn(stray_file_message(name))
    return journal


def shadow_spec(url: str | None) -> ShadowSpec:
    """The shadow server named by ``--shadow-url`` (checked), else a throwaway local one."""
    from orchestrator.db.connect import check_url
    from orchestrator.shadow import ShadowSpec

    if url is None:
        return ShadowSpec()
    try:
        return ShadowSpec(check_url(url))
    except UsageError as exc:
        raise UsageError(f"--shadow-url: {exc}") from None


migrations_option = click.option(
    "--migrations",
    required=True,
    type=click.Path(path_type=Path),
    help="The Drizzle migrations folder (holding meta/_journal.json).",
)

shadow_url_option = click.option(
    "--shadow-url",
    envvar=SHADOW_URL_ENV,
    help="A PostgreSQL server that is not production, where the migrations are "
    "replayed (each replay creates and drops a database of its own there). Default: "
    f"${SHADOW_URL_ENV}, else a throwaway local cluster.",
)


def database_options(func: Command) -> Command:
    """The options of every command that reads a database and a migrations folder.

    The command receives them as one ``target: DatabaseTarget`` argument.
    """

    @functools.wraps(func)
    def command(**kwargs: Any) -> int:
        # Each option's parameter is named after the field it fills.
        fields = dataclasses.fields(DatabaseTarget)
        target = DatabaseTarget(**{field.name: kwargs.pop(field.name) for field in fields})
        return func(target=target, **kwargs)

    options = [
        click.option(
            "--database-url",
            envvar="DATABASE_URL",
            help="Connection string (URL or key=value). Defaults to $DATABASE_URL.",
        ),
        migrations_option,
        click.option(
            "--migrations-schema",
            "schema",
            default=DEFAULT_SCHEMA,
            show_default=True,
            help="Schema of drizzle's tracking table.",
        ),
        click.option(
            "--migrations-table",
            "table",
            default=DEFAULT_TABLE,
            show_default=True,
            help="Name of drizzle's tracking table.",
        ),
        json_option,
        click.option(
            "--retries",
            default=DEFAULT_ATTEMPTS,
            show_default=True,
            type=click.IntRange(min=1),
            help="Attempts on transient connection failures.",
        ),
        click.option(
            "--require-ssl",
            is_flag=True,
            help="Refuse a remote host unless sslmode is require, verify-ca or verify-full.",
        ),
        shadow_url_option,
    ]
    wrapped: Command = command
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


lock_timeout_option = click.option(
    "--lock-timeout",
    default=f"{DEFAULT_LOCK_TIMEOUT_S * 1000:g}ms",
    show_default=True,
    help="Give up waiting for a lock after this long (traffic on the table waits as long).",
)

lock_retries_option = click.option(
    "--lock-retries",
    default=DEFAULT_LOCK_RETRIES,
    show_default=True,
    type=click.IntRange(min=0),
    help="After a lock timeout, re-run the whole migration transaction up to this many "
    "times (exponential backoff with jitter, validating again first; the default fits "
    f"about {DEFAULT_LOCK_BUDGET_S:g} s with the default --lock-timeout).",
)

allow_concurrent_option = click.option(
    "--allow-concurrent",
    is_flag=True,
    help="Run migrations holding CREATE/DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY or an "
    "ADD VALUE used later outside a transaction, statement by statement (drizzle-kit cannot).",
)


def state_options(func: Command) -> Command:
    """--state-dir and --json, shared by the run commands."""
    return click.option(
        "--state-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path(".orchestrator"),
        show_default=True,
        help="Where run records live (runs/<run-id>/).",
    )(json_option(func))


# ``--retries N`` of the run commands: attempts on transient database failures, instead of the
# playbook's ``retry.attempts`` (whose default is the same as everywhere).
retries_option = click.option(
    "--retries",
    type=click.IntRange(min=1),
    default=None,
    help="Attempts on transient connection failures, instead of the playbook's "
    f"retry.attempts (default: the playbook's, {DEFAULT_ATTEMPTS} unless it says).",
)


def on_retry(attempt: int, error: BaseException, wait: float) -> None:
    """Tell the operator a transient failure is being retried (one stderr line)."""
    from orchestrator.cli.console import err
    from orchestrator.redaction import redact

    err.print(
        f"transient failure (attempt {attempt}): {redact(str(error))}; retrying in {wait:.1f}s",
        style="yellow",
        markup=False,
        highlight=False,
    )


def duration(value: str, name: str, *, unit_required: bool = True) -> float:
    """A duration option (``5s``, ``2min``) in seconds, at least 1ms (PostgreSQL takes a
    timeout of 0 for none at all), with its unit if ``unit_required``; UsageError naming it."""
    from orchestrator.playbook import parse_duration

    try:
        seconds = parse_duration(value, unit_required=unit_required)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None
    if seconds < 0.001:
        raise UsageError(f"{name}: must be at least 1ms, not {value!r} (0 is no limit)")
    return seconds
