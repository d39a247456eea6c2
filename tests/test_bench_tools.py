"""The building blocks of ``make bench`` do what the figures rely on.

No timing targets here (those are the benchmark's job): the latency proxy forwards bytes
intact, holds them at least the configured delay, and counts the round trips it sees; the
synthetic folder has the advertised shape and applies cleanly; the drizzle-kit config names
the folder, the database and the tracking table.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import bench.__main__
import bench.traffic
from bench.drizzle_kit import PACKAGES, config_json, package_json
from bench.proxy import LatencyProxy, ProxyProcess
from bench.synthetic import SCALE, Shape, migration_sql, write_folder
from orchestrator.database import validate_database
from orchestrator.db.catalog_reader import read_catalog
from orchestrator.db.connect import connect
from orchestrator.db.migrator import MigrateOptions, apply_pending
from orchestrator.drizzle.journal import read_journal
from orchestrator.sandbox.release import EXAMPLE_MIGRATIONS
from orchestrator.validation import Verdict
from tests.conftest import suite_shadow


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A TCP server that answers each message with the same bytes (one thread per client)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65_536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    accepter = threading.Thread(target=accept, daemon=True)
    accepter.start()
    yield "127.0.0.1", port
    # Wake the blocked accept() before closing: a thread left blocked on a closed descriptor
    # would accept on whatever socket reuses that number next (another test's server).
    listener.shutdown(socket.SHUT_RDWR)
    accepter.join(timeout=5)
    listener.close()
    assert not accepter.is_alive()


def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload`` through a new connection and read back as many bytes."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = conn.recv(65_536)
            assert chunk, "connection closed early"
            received += chunk
    return received


def test_make_bench_finds_everything_it_imports() -> None:
    # `make bench` runs bench.__main__ (and its traffic scenario): a name it imports from
    # the package that no longer exists fails here, not only in a benchmark run.
    assert callable(bench.__main__.main)
    assert callable(bench.traffic.main)


def test_proxy_forwards_bytes_intact(echo_server: tuple[str, int]) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # many bursts, every byte value
    with LatencyProxy(*echo_server, round_trip_delay=0.0) as proxy:
        assert exchange(proxy.port, payload) == payload
        traffic = proxy.traffic()
    assert traffic.client_bytes == traffic.server_bytes == len(payload)
    assert traffic.connections == 1


def test_proxy_adds_at_least_its_delay_per_round_trip(echo_server: tuple[str, int]) -> None:
    delay = 0.2
    with (
        LatencyProxy(*echo_server, round_trip_delay=delay) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as conn,
    ):
        for message in (b"ping", b"pong"):
            start = time.perf_counter()
            conn.sendall(message)
            assert conn.recv(16) == message
            # A lower bound only: the proxy must hold the bytes, however busy the machine.
            assert time.perf_counter() - start >= delay * 0.95


def test_proxy_counts_one_round_trip_per_answered_request(echo_server: tuple[str, int]) -> None:
    with LatencyProxy(*echo_server, round_trip_delay=0.0) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
            for number in range(7):
                message = f"request {number}".encode()
                conn.sendall(message)
                assert conn.recv(64) == message
        assert proxy.reset().round_trips == 7
        assert proxy.traffic().round_trips == 0  # reset zeroed it


@pytest.mark.parametrize("kind", [LatencyProxy, ProxyProcess], ids=["thread", "process"])
def test_proxy_counts_sql_round_trips_of_postgres(
    database_url: str, kind: type[LatencyProxy] | type[ProxyProcess]
) -> None:
    with kind.for_url(database_url, round_trip_delay=0.0) as proxy:
        handshake = proxy.handshake_round_trips(database_url)
        assert handshake >= 1  # at least the start-up message and its answer
        with psycopg.connect(proxy.url(database_url), autocommit=True) as conn:
            proxy.reset()
            for _ in range(4):
                conn.execute("SELECT 1").fetchone()
            assert proxy.reset().round_trips == 4
            # The catalog snapshot: one statement, one exchange.
            read_catalog(conn, schema="drizzle", table="__drizzle_migrations")
            assert proxy.reset().round_trips == 1


def test_validate_reads_production_in_one_round_trip(database_url: str) -> None:
    """Production gets one catalog read: the replay runs on the shadow, never through it."""
    journal = read_journal(EXAMPLE_MIGRATIONS)
    with ProxyProcess.for_url(database_url, round_trip_delay=0.0) as proxy:
        handshake = proxy.handshake_round_trips(database_url)
        proxy.reset()
        report = validate_database(
            proxy.url(database_url), journal, MigrateOptions(), shadow=suite_shadow()
        )
        assert report.status is Verdict.NEEDS_MIGRATION
        assert proxy.reset().round_trips - handshake == 1


def test_proxy_url_keeps_user_and_database() -> None:
    proxy = LatencyProxy("127.0.0.1", 5432, round_trip_delay=0.0)
    proxy.port = 6543
    assert proxy.url("postgresql://app:s3cret@db.example:5432/shop?sslmode=disable") == (
        "postgresql://app:s3cret@127.0.0.1:6543/shop?sslmode=disable"
    )


def test_scale_folder_has_the_advertised_shape() -> None:
    files = migration_sql(SCALE)
    assert len(files) == 1_000
    text = "".join(sql for _, sql in files)
    assert text.count('CREATE TABLE "') == 5_000
    column_lines = [
        line for line in text.splitlines() if line.startswith('\t"') and "CONSTRAINT" not in line
    ]
    assert len(column_lines) == 20_000


def test_synthetic_folder_applies_and_validates(tmp_path: Path, database_url: str) -> None:
    shape = Shape(tables=40, columns_per_table=5, migrations=12, altering=3, enum_every=4)
    journal = read_journal(write_folder(tmp_path / "drizzle", shape))
    assert len(journal.migrations) == 12
    options = MigrateOptions()
    with connect(database_url) as conn:
        assert len(apply_pending(conn, journal, options)) == 12
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables is not None and tables[0] == 40
    assert (
        validate_database(database_url, journal, options, shadow=suite_shadow()).status
        is Verdict.SAFE
    )


def test_drizzle_kit_files_pin_versions_and_name_the_target(tmp_path: Path) -> None:
    assert json.loads(package_json())["dependencies"] == PACKAGES
    url = "postgresql://postgres@127.0.0.1:5555/bench_1"
    config = json.loads(config_json(url, tmp_path, schema="drizzle", table="__m"))
    assert config["dialect"] == "postgresql"
    assert config["out"] == str(tmp_path)
    assert config["dbCredentials"] == {"url": url}
    assert config["migrations"] == {"schema": "drizzle", "table": "__m"}
