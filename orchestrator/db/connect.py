"""Opening connections: URL checks, password redaction, application_name, timeouts."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from orchestrator.db.retry import is_transient
from orchestrator.errors import DatabaseError, UsageError

APPLICATION_NAME = "orchestrator"
CONNECT_TIMEOUT_S = 10

# key=value conninfo: password=secret or password='se cret'
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# any URL-looking userinfo: scheme://user:secret@host
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every password of a connection URL or conninfo replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    return _CONNINFO_PASSWORD.sub(r"\1***", text)


def redact_url(url: str) -> str:
    """A connection string safe to print: the password is replaced by ``***``."""
    if url.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            netloc = f"{parts.username or ''}:***@{host}"
            return urlunsplit(parts._replace(netloc=netloc))
        return url
    return redact(url)


def check_url(url: str | None) -> str:
    """Validate a connection string before using it; bad input is a usage error (exit 2)."""
    if not url:
        raise UsageError("no database URL: pass --database-url or set DATABASE_URL")
    if "://" in url and not url.startswith(("postgres://", "postgresql://")):
        raise UsageError(f"not a PostgreSQL URL (expected postgresql://...): {redact_url(url)}")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "unparseable"
        raise UsageError(f"bad database URL {redact_url(url)}: {redact(first_line)}") from None
    port = params.get("port")
    if port is not None and not str(port).isdigit():
        raise UsageError(f"bad database URL {redact_url(url)}: port {port!r} is not a number")
    return url


def connect(
    url: str, *, autocommit: bool = False, connect_timeout: int = CONNECT_TIMEOUT_S
) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection, naming ourselves in ``pg_stat_activity``.

    Connection failures become :class:`DatabaseError` (exit 30) with the password redacted.
    """
    check_url(url)
    try:
        return psycopg.connect(
            url,
            autocommit=autocommit,
            connect_timeout=connect_timeout,
            application_name=APPLICATION_NAME,
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            f"cannot connect to {redact_url(url)}: {describe(exc)}", transient=is_transient(exc)
        ) from exc


def describe(exc: BaseException) -> str:
    """A one-line, password-free description of a database error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return redact(lines[0] if lines else type(exc).__name__)
