"""Keeping secrets out of everything the tool writes: console, JSON, audit trail, run records.

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

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDACTED", "redact", "redact_url"]

REDACTED = "***"

# key=value conninfo: password=secret or password='se cret'
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# any URL-looking userinfo: scheme://user:secret@host. Anchored on the literal "://" (no
# scheme class in front), so scanning a large document such as a --json report stays fast.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")
# an HTTP URL's userinfo without a password (https://token@host): all of it is the secret.
_HTTP_USERINFO = re.compile(r"(https?://)([^:/@\s\"']+)(@)", re.IGNORECASE)
# an HTTP URL's query string: every value is masked, the names stay (they help debugging).
_HTTP_QUERY = re.compile(r"(https?://[^\s?#\"']*\?)([^\s#\"']*)", re.IGNORECASE)
_QUERY_VALUE = re.compile(r"(^|&)([^=&]*)=([^&]*)")


def _mask_query(match: re.Match[str]) -> str:
    query = _QUERY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}={REDACTED}", match.group(2))
    return match.group(1) + query


def redact(text: str) -> str:
    """``text`` with passwords, HTTP userinfo and HTTP query values replaced by ``***``."""
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}\3", text)
        if "http" in text or "HTTP" in text:
            text = _HTTP_USERINFO.sub(rf"\1{REDACTED}\3", text)
            text = _HTTP_QUERY.sub(_mask_query, text)
    return _CONNINFO_PASSWORD.sub(rf"\1{REDACTED}", text)


def redact_url(url: str) -> str:
    """A connection string safe to print: the password is replaced by ``***``."""
    if url.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            netloc = f"{parts.username or ''}:{REDACTED}@{host}"
            return urlunsplit(parts._replace(netloc=netloc))
        return url
    return redact(url)
