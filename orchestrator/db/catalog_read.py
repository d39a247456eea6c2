"""Reading the catalog snapshot (:mod:`orchestrator.db.catalog`) over a psycopg connection.

The connection may be idle (the snapshot is then read in its own READ ONLY transaction, in
one network exchange) or inside the caller's transaction (one statement of it). Any
database error becomes :class:`DatabaseError` (exit 30).
"""

from __future__ import annotations

import contextlib
import selectors
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import repeat
from typing import Any

import psycopg

from orchestrator.db.catalog import (
    SNAPSHOT_QUERY,
    CatalogSnapshot,
    pipeline_statements,
    snapshot_from_attempts,
    unreadable,
)


@contextmanager
def read_only_transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A READ ONLY transaction for the ``with`` block: a bug in a reader cannot write.

    Any database error becomes :class:`DatabaseError` (exit 30): the catalog is unreadable.
    """
    try:
        previous = conn.read_only
        conn.read_only = True
        try:
            with conn.transaction():
                yield
        finally:
            conn.read_only = previous
    except psycopg.Error as exc:
        raise unreadable(exc) from exc


def read_snapshot(conn: psycopg.Connection[Any], *, schema: str, table: str) -> CatalogSnapshot:
    """Read the snapshot in one READ ONLY transaction and one network exchange
    (DatabaseError if not)."""
    parts = read_snapshot_parts(conn, schema=schema, table=table)
    return snapshot_from_attempts(zip(repeat(1), parts), schema=schema, table=table)


# Streaming needs libpq's pipeline mode with flush requests (libpq 15). Without them the
# snapshot is read whole, by the one-message read below.
STREAMING = psycopg.pq.version() >= 150000


def read_snapshot_parts(
    conn: psycopg.Connection[Any], *, schema: str, table: str, streamed: bool = STREAMING
) -> Iterator[str | bytes]:
    """The snapshot's JSON, as the texts of one or more objects whose keys together make
    the whole document; feed them, decoded, to :class:`SnapshotDecoder` in this order.

    On an idle connection it is read in one network exchange, in one READ ONLY transaction:
    ``streamed``, part by part as the server computes them (see :func:`_stream_parts`);
    else whole, by one message (see :func:`_one_message_read`). Inside a transaction already
    begun (the caller's), whole, by one statement of that transaction. Any database error
    becomes :class:`DatabaseError`.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        try:
            row = conn.execute(
                f"SELECT ({SNAPSHOT_QUERY})::text", {"schema": schema, "table": table}
            ).fetchone()
        except psycopg.Error as exc:
            raise unreadable(exc) from exc
        assert row is not None
        yield row[0]
    elif streamed:
        yield from _stream_parts(conn, schema=schema, table=table)
    else:
        yield _one_message_read(conn, schema=schema, table=table)


def _stream_parts(conn: psycopg.Connection[Any], *, schema: str, table: str) -> Iterator[bytes]:
    """The snapshot's parts (:data:`SNAPSHOT_PARTS`), each yielded as soon as it arrives.

    ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``, one statement per part and
    ``COMMIT`` leave together in libpq's pipeline mode: one network exchange, as one
    message. Repeatable read gives every part the same snapshot of the catalog. A flush
    request follows each statement: without it the server keeps the last kilobytes of a
    part in its send buffer until the next part is computed, and the caller could not
    decode a part while the server computes the next (0.1 s at bench scale, where the
    server works 0.2 s). This drives psycopg's libpq wrapper directly (``conn.pgconn``),
    under the connection's lock; the connection is left idle, as psycopg expects it.
    """
    pgconn = conn.pgconn
    statements = connection_statements(conn, schema=schema, table=table)
    error: psycopg.Error | None = None
    try:
        with conn.lock:
            pgconn.enter_pipeline_mode()
            try:
                for statement in statements:
                    pgconn.send_query_params(statement, None)
                    pgconn.send_flush_request()
                pgconn.pipeline_sync()
                _send(pgconn)
                for result in _pipeline_results(pgconn):
                    if result.status == psycopg.pq.ExecStatus.TUPLES_OK and error is None:
                        value = result.get_value(0, 0)
                        assert value is not None  # json_build_object is never NULL
                        yield value
                    elif result.status == psycopg.pq.ExecStatus.FATAL_ERROR and error is None:
                        error = psycopg.errors.error_from_result(result, conn.info.encoding)
            finally:
                if pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF:
                    with contextlib.suppress(psycopg.Error):
                        pgconn.exit_pipeline_mode()
        if error is not None:
            raise error
    except psycopg.Error as exc:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):  # failing, the connection is lost
                conn.rollback()
        raise unreadable(exc) from exc


def connection_statements(conn: psycopg.Connection[Any], *, schema: str, table: str) -> list[bytes]:
    """:func:`~orchestrator.db.catalog.pipeline_statements` for this connection: its
    quoting, its encoding."""
    encoding = conn.info.encoding
    escaping = psycopg.pq.Escaping(conn.pgconn)
    return pipeline_statements(
        lambda text: escaping.escape_literal(text.encode(encoding)),
        schema=schema,
        table=table,
        encoding=encoding,
    )


def _send(pgconn: psycopg.pq.abc.PGconn) -> None:
    """Send what libpq holds (psycopg's connections are non-blocking)."""
    while pgconn.flush():  # 1: not all sent yet
        readable, _ = _wait(pgconn, read=True, write=True)
        if readable:  # the server may be answering already: libpq must take it in
            pgconn.consume_input()


def _pipeline_results(pgconn: psycopg.pq.abc.PGconn) -> Iterator[psycopg.pq.abc.PGresult]:
    """Every result up to the pipeline's sync (excluded), each as soon as it is complete."""
    while True:
        while pgconn.is_busy():
            _wait(pgconn, read=True)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:  # the end of one statement's results
            continue
        if result.status == psycopg.pq.ExecStatus.PIPELINE_SYNC:
            return
        yield result


def _wait(pgconn: psycopg.pq.abc.PGconn, *, read: bool, write: bool = False) -> tuple[bool, bool]:
    """Block until the connection's socket is readable (or writable); which of the two."""
    events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
    with selectors.DefaultSelector() as selector:
        selector.register(pgconn.socket, events)
        ready = 0
        while not ready:
            for _, mask in selector.select():
                ready |= mask
    return bool(ready & selectors.EVENT_READ), bool(ready & selectors.EVENT_WRITE)


def _one_message_read(conn: psycopg.Connection[Any], *, schema: str, table: str) -> str:
    """The snapshot's JSON text, read by ``BEGIN READ ONLY; <query>; COMMIT`` in one message.

    The connection is put in autocommit for the message (free: a client-side flag), so
    psycopg sends no BEGIN of its own; it is restored afterwards. On an error the server
    leaves the explicit transaction open (aborted): it is rolled back, when the connection
    still stands, before the error is reported as :class:`DatabaseError`.
    """
    idle = psycopg.pq.TransactionStatus.IDLE
    previous = conn.autocommit
    try:
        query = psycopg.ClientCursor(conn).mogrify(
            SNAPSHOT_QUERY, {"schema": schema, "table": table}
        )
        conn.autocommit = True
        try:
            cursor = conn.execute(f"BEGIN READ ONLY;\nSELECT ({query})::text;\nCOMMIT")
            cursor.nextset()  # past BEGIN's result: the query's
            row = cursor.fetchone()
        finally:
            if not conn.closed and conn.info.transaction_status != idle:
                # When that fails the connection is lost, and the server ends the transaction.
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            if not conn.closed and conn.info.transaction_status == idle:
                conn.autocommit = previous
    except psycopg.Error as exc:
        raise unreadable(exc) from exc
    assert row is not None
    text: str = row[0]
    return text
