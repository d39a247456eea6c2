"""Keeping secrets out of everything the tool writes: console, JSON, audit trail, run records.

Two layers. :func:`redact` masks what looks like a secret in any text; a :class:`Redactor`
also masks literal secrets known up front (the values of ``*_TOKEN``/``*_KEY`` variables,
the database password: :func:`secret_values`) and values under secret-named keys. The audit
trail and ``state.json`` of a run share one :class:`Redactor`; the CLI prints via :func:`shown`.

Three kinds of secret travel in the text we print:

* the password of a database connection string (``postgresql://user:secret@host``, or
  ``password=secret`` in key=value form);
* the userinfo of an HTTP health-check URL (``https://user:token@host``);
* query-string values of an HTTP URL (``https://host/health?token=abc``): a check URL
  often carries its credential there.

:func:`redact` masks all three in any text; it is anchored on ``://`` and ``password`` so
scanning a megabyte JSON report stays fast.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

REDACTED = "***"

# key=value conninfo: password='se cret', or unquoted up to whitespace as libpq reads it
# (password=a&b"c is one value), but for a double quote that ends a JSON string; in a URL's
# query (?password=secret&sslmode=...), up to the next parameter.
_CONNINFO_PASSWORD = re.compile(
    r"""(password\s*=\s*)('(?:[^'\\]|\\.)*'|(?<=[?&]password=)[^&\s"#]*"""
    r"""|(?:[^\s"]|"(?![\s,}\]]|$))+)""",
    re.IGNORECASE,
)
# any URL-looking userinfo: scheme://user:secret@host. Anchored on the literal "://" (no
# scheme class in front), so scanning a large document such as a --json report stays fast.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")
# an HTTP URL's userinfo without a password (https://token@host): all of it is the secret.
_HTTP_USERINFO = re.compile(r"(https?://)([^:/@\s\"']+)(@)", re.IGNORECASE)
# an HTTP URL's query string: every value is masked, the names stay (they help debugging).
_HTTP_QUERY = re.compile(r"(https?://[^\s?#\"']*\?)([^\s#\"']*)", re.IGNORECASE)
_QUERY_VALUE = re.compile(r"(^|&)([^=&]*)=([^&]*)")
_PG_USERINFO = re.compile(r"^(postgres(?:ql)?://[^:@/?#]*):[^?#]*@")


def _mask_query(match: re.Match[str]) -> str:
    query = _QUERY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}={REDACTED}", match.group(2))
    return match.group(1) + query


def redact(text: str) -> str:
    """``text`` with passwords, HTTP userinfo and HTTP query values replaced by ``***``."""
    # The case-insensitive patterns scan slowly (no literal prefix to search for): each runs
    # only when a case-folded copy holds its anchor, which costs a few ms on megabytes.
    lowered = text.casefold()
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}\3", text)
        if "http://" in lowered or "https://" in lowered:
            text = _HTTP_USERINFO.sub(rf"\1{REDACTED}\3", text)
            text = _HTTP_QUERY.sub(_mask_query, text)
    return _CONNINFO_PASSWORD.sub(rf"\1{REDACTED}", text) if "password" in lowered else text


def redact_url(url: str) -> str:
    """A connection string safe to print: the password is replaced by ``***`` (in a URL,
    up to the last "@" before its query: a password may hold an "@" left unencoded)."""
    return redact(_PG_USERINFO.sub(rf"\1:{REDACTED}@", url))


# --------------------------------------------------------------------------- known secrets

# Environment variables whose values are secrets by their name's ending (GITHUB_TOKEN,
# STRIPE_SECRET_KEY, ...), and libpq's own password variable.
_SECRET_ENV_SUFFIXES = ("_TOKEN", "_KEY", "_SECRET", "_PASSWORD", "_PASSWD", "_PAT")
_SECRET_ENV_NAMES = frozenset({"PGPASSWORD", "TOKEN", "SECRET", "PASSWORD"})
_MIN_SECRET_LENGTH = 4  # masking "1" or "yes" everywhere would garble output, not protect it

# The fields that identify what a run touched (paths, names, ids, hashes, commits, times):
# no literal masking there, so a password equal to a database or folder name cannot break a
# resume or rollback. Named here, the rest masked: a new field is masked until it is named.
IDENTIFYING = re.compile(
    r"timestamp|level|event|state|playbook|database|path|dump|repo|remote|source|target|dest"
    r"|trigger|stopped_in|kind|via|gate|ending|status|tag|migrations?|tracked_before|hash"
    r"|parent_branch|preserved_as|(\w+_)?(at|id|oid|identifier|commit|sha256|lsn|name|dir)"
)

#: Every literal secret a :class:`Redactor` was given in this process: see :func:`shown`.
given: set[str] = set()

# Keys whose values are secrets whatever they look like (compared lower-cased, '-' -> '_').
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pgpassword",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "auth",
        "cookie",
        "set_cookie",
        "private_key",
        "access_key",
        "secret_key",
        "credentials",
    }
)
# Any key containing one of these is secret too: db_password, github_token, client_secret...
_SECRET_KEY_PARTS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential")


def is_secret_env(name: str) -> bool:
    """Whether the environment variable ``name`` holds a secret by convention."""
    upper = name.upper()
    return upper in _SECRET_ENV_NAMES or upper.endswith(_SECRET_ENV_SUFFIXES)


def is_secret_key(key: str) -> bool:
    """Whether a field named ``key`` holds a secret (its value is replaced wholesale)."""
    normal = key.lower().replace("-", "_")
    return normal in SECRET_KEYS or any(part in normal for part in _SECRET_KEY_PARTS)


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """The literal secrets of an environment, longest first, for redacting output (pure).

    The values of ``*_TOKEN``, ``*_KEY``, ``*_SECRET``, ``*_PASSWORD`` (and ``PGPASSWORD``)
    variables, and the password inside any variable holding a connection string
    (``DATABASE_URL`` and friends).
    """
    found: set[str] = set()
    for name, value in environ.items():
        if is_secret_env(name):
            found.add(value)
        elif value.startswith(("postgres://", "postgresql://")) or "password=" in value:
            found.update(connection_passwords(value))
    return sorted((v for v in found if len(v) >= _MIN_SECRET_LENGTH), key=lambda v: (-len(v), v))


def connection_passwords(url: str) -> tuple[str, ...]:
    """The password of a connection string (URL or key=value), if it has one."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(url).get("password")
    except (ProgrammingError, UnicodeEncodeError):  # malformed, or not UTF-8 (from os.environ)
        return ()
    return (str(password),) if password else ()


class Redactor:
    """Masks connection passwords, secret-keyed values and known literal secrets.

    The one redactor of a run: its audit trail and its ``state.json`` go through the same
    instance, so neither can carry a secret the other masks.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        kept = [s for s in secrets if len(s) >= _MIN_SECRET_LENGTH]  # any source's: a password too
        given.update(kept)
        literals = {*kept, *(quote(s, safe="") for s in kept)}  # and as inside a URL
        # Longest first, so a secret containing another is replaced whole.
        self.literals = sorted(literals, key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` with the known secrets and anything :func:`redact` finds masked."""
        for literal in self.literals:
            text = text.replace(literal, REDACTED)
        return redact(text)

    def value(self, value: Any, key: str = "") -> Any:
        """Plain JSON data (str, numbers, lists, str-keyed dicts), strings masked (values of
        :data:`IDENTIFYING` fields by :func:`redact` only), secret-named keys' values ``***``."""
        if isinstance(value, str):
            return redact(value) if IDENTIFYING.fullmatch(key) else self.text(value)
        if isinstance(value, dict):
            return {
                self.text(k): REDACTED if is_secret_key(k) else self.value(v, k)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v, key) for v in value]
        return value


def shown() -> Redactor:
    """What the CLI prints goes through: it masks all that a run's state.json masks."""
    return Redactor([*secret_values(os.environ), *given])
