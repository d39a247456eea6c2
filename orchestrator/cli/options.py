"""Options shared by several commands, and the small conversions behind them.

Command modules import only click at module level so that ``orchestrator --help`` starts fast;
the runtime (psycopg, git, pglast, ...) is imported when a command actually runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.db.retry import RetryPolicy

Command = Callable[..., int]


def database_options(func: Command) -> Command:
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
        click.option(
            "--require-ssl",
            is_flag=True,
            help="Refuse a remote host unless sslmode is require, verify-ca or verify-full.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


STATE_DIR_HELP = "Where run records live (runs/<run-id>/). Default: .orchestrator"


def state_options(func: Command) -> Command:
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


def retry_policy(attempts: int) -> RetryPolicy:
    """The CLI's retry policy for transient connection failures."""
    from orchestrator.db.retry import RetryPolicy

    return RetryPolicy(attempts=attempts, initial=0.5, max_wait=20.0)


def on_retry(attempt: int, error: BaseException, wait: float) -> None:
    """Tell the operator a transient failure is being retried."""
    from orchestrator.cli.console import err
    from orchestrator.db.connect import redact

    err.print(
        f"[yellow]transient failure (attempt {attempt}): {redact(str(error))}; "
        f"retrying in {wait:.1f}s[/yellow]"
    )


def transport_check(url: str, require_ssl: bool) -> None:
    """Warn (one stderr line) about a remote URL without TLS; with --require-ssl, refuse."""
    import os

    from orchestrator.cli.console import err
    from orchestrator.db.connect import check_ssl

    warning = check_ssl(url, require_ssl=require_ssl, environ=os.environ)
    if warning is not None:
        err.print(f"warning: {warning}", markup=False, highlight=False)


def duration(value: str, name: str) -> float:
    """A duration option (``5s``, ``2min``) in seconds; UsageError naming the option."""
    from orchestrator.playbook import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None
