"""libpq through ctypes (orchestrator.db.libpq): the background catalog read's driver.

It must parse connection strings as psycopg does, quote and send the very statements
psycopg's read sends, and report failures as psycopg's read does (transient when the
connection failed), on a real server.
"""

from __future__ import annotations

import socket
import threading
import time

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.db import catalog, catalog_read, libpq, reading
from orchestrator.db.retry import RetryPolicy
from orchestrator.errors import DatabaseError

TRACKING = {"schema": "drizzle", "table": "__drizzle_migrations"}

CONNECTION_STRINGS = [
    "postgresql://alice:s3cret@db.example.com:6543/app?sslmode=require",
    "postgres://db.example.com/app?application_name=deploy&connect_timeout=3",
    "postgresql://u:p%40ss@h1:5432,h2:5433/db?target_session_attrs=read-write",
    "postgresql:///app?host=/var/run/postgresql",
    "host=localhost port=5432 dbname=app user=bob password='it\\'s a secret'",
    "dbname=app options='-c statement_timeout=5s'",
    "",
]
MALFORMED = [
    "postgresql://h/db?nosuchparameter=1",
    "host=localhost dbname",
    "postgresql://[::1/db",
    "dbname='unterminated",
]


def test_the_library_is_the_one_psycopg_uses() -> None:
    lib = libpq.library()
    assert lib is not None
    assert lib.version == psycopg.pq.version() >= libpq.PIPELINE_VERSION


@pytest.mark.parametrize("own", [True, False], ids=["libpq", "psycopg fallback"])
def test_connection_strings_parse_as_psycopg_parses_them(
    own: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not own:
        monkeypatch.setattr(libpq, "library", lambda: None)
    for conninfo in CONNECTION_STRINGS:
        assert libpq.parse_conninfo(conninfo) == conninfo_to_dict(conninfo), conninfo
    for conninfo in MALFORMED:
        with pytest.raises(psycopg.ProgrammingError) as theirs:
            conninfo_to_dict(conninfo)
        with pytest.raises(libpq.ConninfoError) as ours:
            libpq.parse_conninfo(conninfo)
        assert str(ours.value) == str(theirs.value).strip(), conninfo


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_the_statements_are_those_psycopg_would_send(database_url: str, conforming: str) -> None:
    """The tracking table's names quoted by libpq's PQescapeLiteral, as psycopg's client-side
    binding quotes them, with or without standard_conforming_strings."""
    url = make_conninfo(database_url, options=f"-c standard_conforming_strings={conforming}")
    lib = libpq.library()
    assert lib is not None
    for schema, table in [
        ("drizzle", "__drizzle_migrations"),
        ("it's", "back\\slash 100%"),
        ("ünï", 'a"b'),
    ]:
        with lib.connect({"dbname": url, "client_encoding": "UTF8"}) as ours:
            sent = catalog.pipeline_statements(ours.escape_literal, schema=schema, table=table)
        with psycopg.connect(url) as conn:
            assert conn.info.encoding == "utf-8"
            through_psycopg = catalog_read.connection_statements(conn, schema=schema, table=table)
            cursor = psycopg.ClientCursor(conn)
            params = {"schema": schema, "table": table}
            mogrified = [cursor.mogrify(query, params).encode() for query in catalog._PART_QUERIES]
        assert sent == through_psycopg
        assert sent[1:-1] == mogrified
        assert (b" E'" in sent[1]) == ("\\" in schema + table)  # E'' for a backslash


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_connection_is_transient(database_url: str) -> None:
    url = f"postgresql://nobody:pw@127.0.0.1:{_free_port()}/app"
    with pytest.raises(DatabaseError) as raised:
        list(reading.read_parts(url, **TRACKING))
    message = str(raised.value)
    assert message.startswith("cannot connect to postgresql://nobody:")
    assert "Connection refused" in message and "pw" not in message  # the password redacted
    assert raised.value.transient


def test_a_missing_database_is_not_transient(database_url: str) -> None:
    url = make_conninfo(database_url, dbname="no_such_database")
    with pytest.raises(DatabaseError, match='database "no_such_database" does not exist') as raised:
        list(reading.read_parts(url, **TRACKING))
    assert not raised.value.transient


def test_a_refused_part_is_not_transient(database_url: str) -> None:
    """The server refuses the tracking rows to this role: an answer, not a lost connection."""
    role = f"reader_{threading.get_ident() % 100000}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA drizzle")
        admin.execute(
            "CREATE TABLE drizzle.__drizzle_migrations (id serial, hash text, created_at bigint)"
        )
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA drizzle TO {role}")
    try:
        url = make_conninfo(database_url, user=role)
        with pytest.raises(
            DatabaseError, match="cannot read the catalog: permission denied"
        ) as raised:
            list(reading.read_parts(url, **TRACKING))
        assert not raised.value.transient
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_a_read_cut_off_midway_is_retried_from_the_start(database_url: str) -> None:
    """The server ends the backend while it waits on the tracking table (locked by another
    session): a transient failure, retried; the second attempt reads the whole snapshot."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA drizzle")
        admin.execute(
            "CREATE TABLE drizzle.__drizzle_migrations (id serial, hash text, created_at bigint)"
        )
        admin.execute("INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES ('h', 1)")
    notices: list[tuple[int, BaseException]] = []
    with psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE drizzle.__drizzle_migrations IN ACCESS EXCLUSIVE MODE")
        read = reading.CatalogRead(
            database_url, **TRACKING, retry=RetryPolicy(attempts=2, initial=0.01, max_wait=0.01)
        )
        with psycopg.connect(database_url, autocommit=True) as admin:
            for _ in range(500):
                waiting = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'orchestrator'"
                    " AND wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchall()
                if waiting:
                    break
                time.sleep(0.02)
            assert len(waiting) == 1
            admin.execute("SELECT pg_terminate_backend(%s)", waiting[0])
            locker.rollback()  # the second attempt finds the table free
            snapshot = read.snapshot(lambda attempt, error, wait: notices.append((attempt, error)))
    assert [attempt for attempt, _ in notices] == [1]
    error = notices[0][1]
    assert isinstance(error, DatabaseError) and error.transient
    assert "terminating connection" in str(error)
    assert [row.hash for row in snapshot.tracking_rows] == ["h"]
