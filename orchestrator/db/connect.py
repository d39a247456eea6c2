"""Opening connections: URL checks, application_name, timeouts (redaction lives in
:mod:`orchestrator.redaction`). Connection strings are parsed by psycopg's ``conninfo_to_dict``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.db.retry import is_transient
from orchestrator.errors import DatabaseError, UsageError
from orchestrator.redaction import redact, redact_url

APPLICATION_NAME = "orchestrator"
CONNECT_TIMEOUT_S = 10
DEAD_PEER_S = 60


def check_url(url: str | None) -> str:
    """Validate a connection string before using it; bad input is a usage error (exit 2)."""
    if not url:
        raise UsageError("no database URL: pass --database-url or set DATABASE_URL")
    if "://" in url and not url.startswith(("postgres://", "postgresql://")):
        raise UsageError(f"not a PostgreSQL URL (expected postgresql://...): {redact_url(url)}")
    try:
        params = conninfo_to_dict(url)
    except (psycopg.ProgrammingError, UnicodeEncodeError) as exc:  # malformed, or not UTF-8
        first_line = str(exc).splitlines()[0] if str(exc) else "unparseable"
        if isinstance(exc, UnicodeEncodeError):
            first_line = "not UTF-8 text"
        elif redact_url(url) != url:  # libpq quotes what it choked on: maybe the password
            first_line = "cannot parse it (percent-encode @ : / % in a password: @ as %40)"
        raise UsageError(f"bad database URL {redact_url(url)}: {redact(first_line)}") from None
    if "@" in str(params.get("host")):  # the rest of a password with an "@" in it
        raise UsageError(f"bad database URL {redact_url(url)}: percent-encode @ as %40")
    port = params.get("port")
    if port is not None and not all(p.isdigit() or not p for p in str(port).split(",")):  # per host
        raise UsageError(f"bad database URL {redact_url(url)}: port {port!r} is not a number")
    if (sslmode := params.get("sslmode")) is not None and sslmode not in SSLMODES:
        raise UsageError(
            f"bad database URL {redact_url(url)}: sslmode {sslmode!r} is not one of "
            f"{', '.join(SSLMODES)}"
        )
    return url


def check_database_url(
    url: str | None, *, writes: bool, require_ssl: bool, environ: Mapping[str, str]
) -> tuple[str, list[str]]:
    """The connection string checked before any connection, and the warnings to show.

    UsageError if it is missing or malformed, if ``writes`` and it names Neon's pooled
    endpoint, or if ``require_ssl`` and a remote host goes without TLS. Warnings: a pooled
    endpoint for a read-only command, a remote host without TLS.
    """
    checked = check_url(url)
    warnings: list[str] = []
    if writes:
        refuse_pooler(checked)
    elif (problem := pooler_problem(checked)) is not None:
        warnings.append(problem)
    if (transport := check_ssl(checked, require_ssl=require_ssl, environ=environ)) is not None:
        warnings.append(transport)
    return checked, warnings


def milliseconds(seconds: float) -> str:
    """``seconds`` as a PostgreSQL timeout setting takes it: ``500ms`` (0 disables it; a
    fraction of a millisecond is one, not none)."""
    return f"{max(round(seconds * 1000), 1 if seconds > 0 else 0)}ms"


def with_application_name(url: str, name: str) -> str:
    """``url`` as a conninfo string that names its connections ``name`` (pure).

    A run puts its id there, so every connection it opens shows in ``pg_stat_activity``.
    """
    return make_conninfo(url, application_name=name)


def connect(
    url: str,
    *,
    autocommit: bool = False,
    connect_timeout: int = CONNECT_TIMEOUT_S,
    application_name: str | None = None,
    dead_peer_s: int = DEAD_PEER_S,
) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection, naming ourselves in ``pg_stat_activity``.

    The name is ``application_name``, else the one ``url`` carries (see
    :func:`with_application_name`), else ``orchestrator``. Connection failures become
    :class:`DatabaseError` (exit 30) with the password redacted. A peer that returns nothing
    (a dropped NAT entry: not even an ACK of our data or keepalive probes) for ``dead_peer_s``
    breaks the connection, where libpq's defaults wait ~2 h; a live server's kernel answers
    the probes, so a long statement is not limited.
    """
    check_url(url)
    name = application_name or conninfo_to_dict(url).get("application_name") or APPLICATION_NAME
    probe_s = max(1, dead_peer_s // 3)
    try:
        return psycopg.connect(
            url,
            autocommit=autocommit,
            connect_timeout=connect_timeout,
            application_name=str(name),
            client_encoding="UTF8",  # migration files are UTF-8, as drizzle's driver says too
            keepalives_idle=probe_s,
            keepalives_interval=probe_s,
            keepalives_count=3,  # where TCP_USER_TIMEOUT is missing (not Linux)
            tcp_user_timeout=dead_peer_s * 1000,
        )
    except psycopg.OperationalError as exc:
        raise database_error(f"cannot connect to {redact_url(url)}", exc) from exc


def describe(exc: BaseException) -> str:
    """A one-line, password-free description of a database error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return redact(lines[0] if lines else type(exc).__name__)


def database_error(what: str, exc: BaseException) -> DatabaseError:
    """``<what>: <exc on one line>``, transient when the connection failed, not the SQL."""
    return DatabaseError(f"{what}: {describe(exc)}", transient=is_transient(exc))


# --------------------------------------------------------------------------- transport security

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SECURE_SSLMODES = ("require", "verify-ca", "verify-full")
_LOCAL_NAMES = frozenset({"", "localhost"})


def is_local_host(host: str) -> bool:
    """Whether libpq's ``host`` stays on this machine: a socket path, localhost, loopback."""
    host = host.strip().strip("[]")
    if host in _LOCAL_NAMES or host.startswith(("/", "@")):  # unix socket dir, abstract socket
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost" or host.lower().endswith(".localhost")


def remote_hosts(url: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The hosts of ``url`` (URL or key=value) that are not on this machine (pure).

    As libpq does, ``host`` falls back to ``hostaddr`` and then to ``$PGHOST``/``$PGHOSTADDR``;
    a comma-separated list names several servers and each counts.
    """
    env = environ or {}
    params = conninfo_to_dict(url)
    host = params.get("host") or params.get("hostaddr") or env.get("PGHOST") or ""
    host = str(host or env.get("PGHOSTADDR") or "")
    return [h for h in host.split(",") if not is_local_host(h)]


def ssl_warning(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A one-line warning when ``url`` reaches a remote host without a TLS-enforcing sslmode.

    ``sslmode`` comes from the URL, else ``$PGSSLMODE``, else libpq's default ``prefer``,
    which silently falls back to plain text. ``None`` when the URL is fine (pure).
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return None  # check_url reports malformed URLs
    remote = remote_hosts(url, environ)
    if not remote:
        return None
    mode = str(params.get("sslmode") or (environ or {}).get("PGSSLMODE") or "prefer")
    if mode in SECURE_SSLMODES:
        return None
    return (
        f"{redact_url(url)} reaches remote host {', '.join(remote)} with sslmode={mode}: "
        "password and data may travel unencrypted; add sslmode=require (or verify-full)"
    )


def check_ssl(
    url: str, *, require_ssl: bool, environ: Mapping[str, str] | None = None
) -> str | None:
    """The :func:`ssl_warning` for ``url``; with ``require_ssl`` it is a UsageError (exit 2)."""
    warning = ssl_warning(url, environ)
    if warning is not None and require_ssl:
        raise UsageError(f"--require-ssl: {warning}")
    return warning


# --------------------------------------------------------------------------- Neon's pooler

_NEON_DOMAIN = ".neon.tech"
_POOLER_SUFFIX = "-pooler"


def neon_direct_host(url: str) -> tuple[str, str] | None:
    """``(pooled host, direct host)`` when ``url`` names Neon's pooled endpoint, else None.

    Neon's pooled host is the endpoint's first label with ``-pooler`` appended
    (``ep-x-123-pooler.us-east-2.aws.neon.tech``); the direct one drops it.
    """
    try:
        # A fully qualified name may end with a dot (``...neon.tech.``): the same host.
        host = str(conninfo_to_dict(url).get("host") or "").removesuffix(".")
    except psycopg.ProgrammingError:
        return None
    first, _, rest = host.partition(".")
    if host.lower().endswith(_NEON_DOMAIN) and first.lower().endswith(_POOLER_SUFFIX):
        return host, f"{first[: -len(_POOLER_SUFFIX)]}.{rest}"
    return None


def pooler_problem(url: str) -> str | None:
    """Why a pooled Neon URL will not do for migrating, naming the direct host; None if not."""
    if (hosts := neon_direct_host(url)) is None:
        return None
    pooled, direct = hosts
    return (
        f"{pooled} is Neon's pooled endpoint (PgBouncer in transaction mode): the session "
        "advisory lock that keeps one deploy at a time and session settings do not hold "
        f"there, and Neon advises migrating over the direct connection: use host {direct}"
    )


def refuse_pooler(url: str) -> None:
    """UsageError (exit 2, before any connection) for a pooled Neon URL."""
    if (problem := pooler_problem(url)) is not None:
        raise UsageError(problem)


def without_password(url: str) -> tuple[str, dict[str, str]]:
    """``url`` for a client program's argv (``pg_dump``, ``psql``) and its environment: the
    password goes through PGPASSWORD, kept out of argv (visible in ``ps``)."""
    params: dict[str, Any] = conninfo_to_dict(url)
    env = dict(os.environ)
    if password := params.pop("password", None):
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env
