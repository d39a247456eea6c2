"""The shadow server: a PostgreSQL that is never production, where histories are replayed.

Either the server the user names (``--shadow-url``, the playbook's ``shadow: {url_env:}``: a
local container, a CI service, a Neon branch), on which each replay creates a database of
its own and drops it afterwards; or, when none is named, a throwaway local cluster started
from the server binaries (:mod:`orchestrator.sandbox.pg`) and removed afterwards. Its data
directory is a copy of one ``initdb`` made before for the same binaries, kept beside the
history cache (:func:`~orchestrator.shadow.cache.prepared_directory`,
:mod:`orchestrator.sandbox.prepared`).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

import psycopg

from orchestrator.db.connect import connect, describe
from orchestrator.db.identity import named_database
from orchestrator.db.retry import is_transient
from orchestrator.errors import DatabaseError, UsageError
from orchestrator.redaction import redact_url
from orchestrator.sandbox.pg import (
    EmbeddedPostgres,
    ServerBinariesMissing,
    create_database,
    drop_database,
    find_bindir,
    memory_directory,
    with_dbname,
)
from orchestrator.shadow.cache import prepared_directory

NO_SHADOW = (
    "no shadow server to replay the migrations on: name one with --shadow-url (or the "
    "playbook's shadow: {url_env: NAME}), or install the PostgreSQL server binaries "
    "(initdb, pg_ctl; e.g. apt-get install postgresql-15), or install PostgreSQL 18 "
    "with pip install 'orchestrator[shadow]' (as root, where the postgres OS user "
    "can reach it); see docs/shadow.md"
)


@dataclass(frozen=True)
class ShadowSpec:
    """Which shadow to use: a named server (``url``), else a throwaway local cluster."""

    url: str | None = None

    def check_not(self, production_url: str) -> None:
        """Refuse (exit 2) a shadow URL that names production's database itself.

        Replays never run in the named database (each creates one of its own beside it), but
        a shadow named as production is a mistake worth stopping at.
        """
        if self.url is not None and named_database(self.url) == named_database(production_url):
            raise UsageError(
                f"the shadow URL {redact_url(self.url)} names the production database: name "
                "another server or database (--shadow-url)"
            )


def local_major() -> int | None:
    """The major version of the local server binaries, or None without them."""
    try:
        out = subprocess.run(
            [str(find_bindir() / "pg_ctl"), "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (ServerBinariesMissing, OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


class ShadowServer:
    """A running shadow server; use as a context manager."""

    def __init__(self, spec: ShadowSpec) -> None:
        self.spec = spec
        self.description = ""
        self.major = 0
        self._cluster: EmbeddedPostgres | None = None
        self._admin_url = ""
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None

    def __enter__(self) -> ShadowServer:
        if self.spec.url is not None:
            self._admin_url = self.spec.url
            where = f"shadow server {redact_url(self.spec.url)}"
        else:
            try:
                cluster = EmbeddedPostgres(
                    prepared=prepared_directory(os.environ), parent=memory_directory()
                )
            except ServerBinariesMissing:
                raise UsageError(NO_SHADOW) from None
            cluster.start()
            self._cluster = cluster
            self._admin_url = cluster.url()
            where = "a throwaway local cluster"
        try:
            # Kept to create and drop each replay's database: a remote one's handshake is slow.
            self._admin = connect(self._admin_url, autocommit=True)
        except DatabaseError as exc:
            self.__exit__(None, None, None)
            raise DatabaseError(f"the shadow server: {exc}") from exc
        self.major = self._admin.info.server_version // 10000
        version = self._admin.info.parameter_status("server_version") or "?"
        self.description = f"PostgreSQL {version.split()[0]} on {where}"
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._admin is not None:
            self._admin.close()
        if self._cluster is not None:
            self._cluster.destroy()
            self._cluster = None
        if isinstance(error, psycopg.Error):  # the shadow failed mid-way: a lost connection
            raise DatabaseError(
                f"the shadow ({self.description}): {describe(error)}", transient=is_transient(error)
            ) from error

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new, empty database on the shadow server (its URL), dropped afterwards."""
        assert self._admin is not None, "used inside its with block"
        name = f"orchestrator_shadow_{secrets.token_hex(6)}"
        create_database(self._admin, name)
        try:
            yield with_dbname(self._admin_url, name)
        finally:
            try:
                drop_database(self._admin, name)
            except psycopg.OperationalError:  # the kept connection was lost meanwhile
                drop_database(self._admin_url, name)
