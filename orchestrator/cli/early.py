"""``validate``'s catalog read, started before the command line is parsed.

Against a distant database, ``orchestrator validate`` mostly waits: for the connection,
then for the server to compute the catalog snapshot. Loading click and the command modules
first (0.05 - 0.1 s) would only put off that wait. So when the arguments are plainly a
``validate`` command, the read starts at once, in a background thread
(:class:`orchestrator.db.reading.CatalogRead`), and the command takes it over once click
has parsed the same arguments (:func:`take`). Anything unusual (help, an unknown or
repeated option, a value that looks like an option) starts nothing: click alone judges it.

The URL goes through the same checks as the command's (missing, malformed, ``--require-ssl``
refusing a remote host without TLS): a URL the command would refuse is never connected to.
The read is read-only; if the command does not take it (say, a usage error), it is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.commands import CatalogRead

# validate's options (see orchestrator.cli.options.database_options): those taking a value,
# and the flags.
_VALUE_OPTIONS = (
    "--database-url",
    "--migrations",
    "--migrations-schema",
    "--migrations-table",
    "--retries",
)
_FLAGS = ("--json", "--require-ssl")
# The tracking table's defaults; the options' own (orchestrator.cli.options) are these.
DEFAULT_SCHEMA = "drizzle"
DEFAULT_TABLE = "__drizzle_migrations"

_started: CatalogRead | None = None


def plain_validate_options(args: Sequence[str]) -> dict[str, str] | None:
    """The options of ``args`` when they are plainly a ``validate`` command (pure).

    Values by option name (a flag's value is ""); None when ``args`` are anything else or
    anything unusual: not ``validate``, help, an unknown or repeated option, a missing value,
    a value starting with ``-``.
    """
    if not args or args[0] != "validate":
        return None
    options: dict[str, str] = {}
    rest = list(args[1:])
    while rest:
        name, equals, value = rest.pop(0).partition("=")
        if name in _FLAGS and not equals:
            value = ""
        elif name in _VALUE_OPTIONS:
            if not equals:
                if not rest:
                    return None
                value = rest.pop(0)
            if not value or value.startswith("-"):
                return None
        else:
            return None
        if name in options:
            return None
        options[name] = value
    return options


def start(args: Sequence[str], environ: Mapping[str, str]) -> None:
    """Start validate's catalog read if ``args`` are plainly a ``validate`` command.

    Never raises: whatever goes wrong here, the command runs as if nothing had started.
    """
    global _started
    try:
        _started = _start(args, environ)
    except Exception:
        _started = None


def _start(args: Sequence[str], environ: Mapping[str, str]) -> CatalogRead | None:
    options = plain_validate_options(args)
    if options is None:
        return None
    from orchestrator.db.backoff import DEFAULT_ATTEMPTS

    retries = int(options.get("--retries", DEFAULT_ATTEMPTS))
    if retries < 1:
        return None
    from orchestrator import commands

    return commands.start_catalog_read(
        # The option, else $DATABASE_URL when set and not empty, as click reads it.
        options.get("--database-url") or environ.get("DATABASE_URL") or None,
        schema=options.get("--migrations-schema", DEFAULT_SCHEMA),
        table=options.get("--migrations-table", DEFAULT_TABLE),
        attempts=retries,
        require_ssl="--require-ssl" in options,
        environ=environ,
    )


def take() -> CatalogRead | None:
    """The read :func:`start` started, if any, handed over once (the command checks that
    it reads what the command would: see ``validate_database``'s ``started``)."""
    global _started
    started, _started = _started, None
    return started
