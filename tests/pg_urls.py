"""Connection strings for the tests: the same server as another role."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import psycopg


def with_user(url: str, user: str, password: str | None = None) -> str:
    """``url`` connecting as another role (URL or key=value conninfo)."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    params.pop("password", None)
    params["user"] = user
    if password is not None:
        params["password"] = password
    if url.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(url)
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))
    return psycopg.conninfo.make_conninfo("", **params)
