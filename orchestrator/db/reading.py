"""The catalog snapshot read in a background thread, decoded by its caller as it arrives.

``validate`` spends most of its time waiting: for the connection, then for the server to
compute the snapshot. This module lets that wait overlap the caller's own work (reading the
migrations folder, loading the history model): :class:`CatalogRead` connects and reads in a
daemon thread as soon as it is made, and hands each part of the snapshot over as it comes;
:meth:`CatalogRead.snapshot` decodes the parts in the caller's thread.

The read goes through libpq itself (:mod:`orchestrator.db.libpq`): the same pipeline of
statements psycopg would send (see :func:`orchestrator.db.catalog_read.read_snapshot_parts`),
without the 0.3 s of importing psycopg, which the command line would otherwise spend before
its first byte reaches the server. Without a usable libpq, it goes through psycopg.

It imports only what the read needs, so that the command line can start a read before it
loads anything else (see :mod:`orchestrator.cli.early`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.db import libpq
from orchestrator.db.catalog import (
    CatalogSnapshot,
    pipeline_statements,
    snapshot_from_attempts,
    unreadable,
)
from orchestrator.db.connect import CONNECT_TIMEOUT_S, cannot_connect, connection_name
from orchestrator.db.retry import OnRetry, RetryPolicy, call_with_retry


@dataclass(frozen=True)
class _Part:
    attempt: int
    text: str | bytes


@dataclass(frozen=True)
class _Notice:  # a transient failure, retried
    attempt: int
    error: BaseException
    wait: float


@dataclass(frozen=True)
class _End:
    error: BaseException | None


class CatalogRead:
    """One catalog snapshot of ``url``, read in a daemon thread started at once.

    Transient failures are retried per ``retry``. The caller's thread decodes (decoding may
    import pglast, for a default only a parse can read, and two threads importing pglast at
    once can each find the other's half-made module: an ImportError).

    A daemon thread, not an executor's: when the caller gives up (a bad migrations folder
    raising UsageError), nothing waits for a slow or retrying connection to finish, not
    even the interpreter's exit.
    """

    def __init__(self, url: str, *, schema: str, table: str, retry: RetryPolicy) -> None:
        self.url = url
        self.schema = schema
        self.table = table
        self.retry = retry
        self._arrivals: queue.SimpleQueue[_Part | _Notice | _End] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="snapshot", daemon=True)
        self._thread.start()

    def reads(self, url: str, *, schema: str, table: str, retry: RetryPolicy) -> bool:
        """Whether this is the read a caller with these arguments would start."""
        return (url, schema, table, retry) == (self.url, self.schema, self.table, self.retry)

    def snapshot(self, on_retry: OnRetry | None = None) -> CatalogSnapshot:
        """The snapshot, decoded part by part as the parts arrive; the read's last error
        (DatabaseError) if it failed.

        Retry notices reach ``on_retry`` from here, in the caller's thread, in order with
        the parts: none is shown before the caller asks (a bad migrations folder is a usage
        error reported alone, never after a notice about the database).
        """
        return snapshot_from_attempts(self._parts(on_retry), schema=self.schema, table=self.table)

    def _parts(self, on_retry: OnRetry | None) -> Iterator[tuple[int, str | bytes]]:
        while True:
            item = self._arrivals.get()
            if isinstance(item, _Part):
                yield item.attempt, item.text
            elif isinstance(item, _Notice):
                if on_retry is not None:
                    on_retry(item.attempt, item.error, item.wait)
            elif item.error is not None:
                raise item.error
            else:
                return

    def _run(self) -> None:
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            for text in read_parts(self.url, schema=self.schema, table=self.table):
                self._arrivals.put(_Part(attempts, text))

        def notice(attempt: int, error: BaseException, wait: float) -> None:
            self._arrivals.put(_Notice(attempt, error, wait))

        try:
            call_with_retry(attempt, self.retry, on_retry=notice)
        except BaseException as exc:  # handed to the caller by snapshot()
            self._arrivals.put(_End(exc))
        else:
            self._arrivals.put(_End(None))


def read_parts(url: str, *, schema: str, table: str) -> Iterator[str | bytes]:
    """Connect to ``url`` and read the snapshot's JSON parts, each as it comes (see
    :func:`orchestrator.db.catalog_read.read_snapshot_parts`): through libpq when it can be
    loaded, else through psycopg. Failures are :class:`DatabaseError`, transient when the
    connection failed, as psycopg's read reports them."""
    lib = libpq.library()
    if lib is None:
        from orchestrator.db.catalog_read import read_snapshot_parts
        from orchestrator.db.connect import connect

        with connect(url) as conn:
            yield from read_snapshot_parts(conn, schema=schema, table=table)
        return
    params = {
        "dbname": url,  # expanded by libpq; the parameters after it override the URL's
        "application_name": connection_name(url),
        "connect_timeout": str(CONNECT_TIMEOUT_S),
        "client_encoding": "UTF8",  # the statements' and the parts' encoding
    }
    try:
        with lib.connect(params) as conn:
            statements = pipeline_statements(conn.escape_literal, schema=schema, table=table)
            yield from conn.pipeline(statements)
    except libpq.LibpqError as exc:
        raise (cannot_connect(url, exc) if exc.connecting else unreadable(exc)) from exc
