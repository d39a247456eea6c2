"""How fast is ``validate`` on a wide schema? ``make bench`` (``python -m bench``).

A throwaway PostgreSQL cluster gets a synthetic schema (see :mod:`bench.synthetic`): 300
tables of 20 columns with keys, unique constraints, foreign keys, indexes and enums, built by
200 migrations through orchestrator's own migrator. Then we measure:

(a) the catalog snapshot: its time, and how many SQL statements and round trips it costs
    (round trips are what a remote serverless database charges tens of milliseconds for);
(b) the object model of the folder (pglast parse + catalog replay of every migration);
(c) ``validate`` end to end: read the folder, build the model, connect, snapshot, judge;
    and the same through the command line, interpreter start-up included.

Each number is compared with the target declared below; any miss exits 1.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import pq

from bench.synthetic import Shape, write_folder
from orchestrator.commands import validate_database
from orchestrator.db.catalog import CatalogSnapshot, read_snapshot
from orchestrator.db.connect import connect
from orchestrator.db.migrator import MigrateOptions, apply_pending
from orchestrator.drizzle.journal import read_journal
from orchestrator.drizzle.objects import build_object_model
from orchestrator.testing.pg import EmbeddedPostgres, create_database, with_dbname
from orchestrator.validation import Verdict

# ----------------------------------------------------------------------------- targets

SHAPE = Shape(tables=300, columns_per_table=20, migrations=200)
REPEATS = 5  # each timing is the median of this many runs (after one warm-up run)

TARGET_SNAPSHOT_SECONDS = 1.0  # one catalog snapshot of the wide schema
TARGET_SNAPSHOT_STATEMENTS = 1  # SQL statements the snapshot executes
TARGET_SNAPSHOT_ROUND_TRIPS = 3  # BEGIN READ ONLY, the snapshot, COMMIT
TARGET_OBJECT_MODEL_SECONDS = 2.0  # parse and replay 200 migrations
TARGET_VALIDATE_SECONDS = 3.0  # validate_database() end to end, folder read included
TARGET_CLI_VALIDATE_SECONDS = 6.0  # `orchestrator validate`, interpreter start-up included

T = TypeVar("T")
OPTIONS = MigrateOptions()


@dataclass(frozen=True)
class Measurement:
    """One line of the result table: what was measured, against what, and whether it passed."""

    name: str
    value: str
    target: str
    ok: bool

    def row(self) -> tuple[str, str, str, str]:
        """The cells of this measurement's table row."""
        return self.name, self.value, self.target, "ok" if self.ok else "MISSED"


def within(name: str, seconds: float, limit: float) -> Measurement:
    """A timing that must not exceed ``limit`` seconds."""
    return Measurement(name, f"{seconds:.3f} s", f"<= {limit:g} s", seconds <= limit)


def at_most(name: str, count: int, limit: int, unit: str) -> Measurement:
    """A count that must not exceed ``limit``."""
    return Measurement(name, str(count), f"<= {limit} {unit}", count <= limit)


def equals(name: str, value: object, expected: object) -> Measurement:
    """A value that must be exactly ``expected``."""
    return Measurement(name, str(value), f"= {expected}", value == expected)


class CountingConnection(psycopg.Connection[tuple[Any, ...]]):
    """A connection that records every statement its cursors execute."""

    sent: list[str]


class CountingCursor(psycopg.Cursor[tuple[Any, ...]]):
    """Records each statement on its connection before executing it."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> CountingCursor:
        connection = self.connection
        if isinstance(connection, CountingConnection):
            connection.sent.append(str(query).strip().split("\n", 1)[0][:60])
        super().execute(query, params, **kwargs)
        return self


def timed(func: Callable[[], T], repeats: int = REPEATS) -> tuple[float, T]:
    """Median seconds of ``repeats`` calls of ``func`` (after a warm-up call), and a result."""
    result = func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def wire_messages(trace: str) -> Counter[str]:
    """Messages the client sent, by type, from a libpq protocol trace."""
    sent: Counter[str] = Counter()
    for line in trace.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[0] == "F":
            sent[fields[2].strip()] += 1
    return sent


def snapshot_cost(url: str) -> tuple[list[str], Counter[str], CatalogSnapshot]:
    """Take one snapshot on an instrumented connection: statements, wire messages, result."""
    conn = CountingConnection.connect(url, cursor_factory=CountingCursor)
    conn.sent = []
    try:
        with tempfile.TemporaryFile("w+") as trace:
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            snapshot = read_snapshot(conn, schema=OPTIONS.schema, table=OPTIONS.table)
            conn.pgconn.untrace()
            trace.seek(0)
            messages = wire_messages(trace.read())
    finally:
        conn.close()
    return conn.sent, messages, snapshot


def snapshot_seconds(url: str) -> tuple[float, CatalogSnapshot]:
    """Median time of a snapshot on an open connection (what validate pays per check)."""
    with connect(url) as conn:
        return timed(lambda: read_snapshot(conn, schema=OPTIONS.schema, table=OPTIONS.table))


def cli_validate_seconds(url: str, folder: Path) -> tuple[float, int]:
    """Wall time and exit code of ``orchestrator validate --json`` in a fresh interpreter."""
    argv = [sys.executable, "-m", "orchestrator.cli", "validate", "--json"]
    argv += ["--migrations", str(folder), "--database-url", url]

    def run() -> int:
        return subprocess.run(argv, capture_output=True, check=False).returncode

    return timed(run, repeats=3)


def describe_schema(snapshot: CatalogSnapshot) -> str:
    """How big the benchmarked schema is, from the snapshot itself."""
    kinds: Counter[str] = Counter(o.kind for o in snapshot.objects if o.schema == "public")
    return ", ".join(
        f"{kinds[kind]} {label}"
        for kind, label in (
            ("table", "tables"),
            ("column", "columns"),
            ("index", "indexes"),
            ("constraint", "constraints"),
            ("enum", "enums"),
        )
    )


def print_table(measurements: list[Measurement]) -> None:
    """The result table, aligned."""
    header = ("measurement", "value", "target", "")
    rows = [header, *(m.row() for m in measurements)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for number, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))


def run_bench(pg: EmbeddedPostgres, workdir: Path) -> list[Measurement]:
    """Build the schema, measure, and return the measurements."""
    create_database(pg.url(), "bench")
    url = with_dbname(pg.url(), "bench")
    folder = write_folder(workdir / "drizzle", SHAPE)
    journal = read_journal(folder)
    print(f"folder: {len(journal.migrations)} migrations in {folder}")

    start = time.perf_counter()
    with connect(url) as conn:
        applied = apply_pending(conn, journal, OPTIONS)
    print(f"applied {len(applied)} migrations in {time.perf_counter() - start:.2f} s (one txn)")

    statements, messages, snapshot = snapshot_cost(url)
    print(f"schema: {describe_schema(snapshot)}")
    print(f"snapshot statements: {statements}")
    print(f"snapshot wire messages: {dict(sorted(messages.items()))}")
    seconds, _ = snapshot_seconds(url)
    round_trips = messages["Query"] + messages["Sync"]  # each waits for the server's answer

    model_seconds, model = timed(
        lambda: build_object_model([(m.tag, m.statements) for m in journal.migrations])
    )
    if model.unparsed:
        print(f"unparsed migrations: {dict(model.unparsed)}")

    validate_seconds, report = timed(lambda: validate_database(url, read_journal(folder), OPTIONS))
    print(f"validate verdict: {report.status.value} ({report.recommendation})")
    cli_seconds, cli_exit = cli_validate_seconds(url, folder)

    return [
        within("(a) catalog snapshot time (median)", seconds, TARGET_SNAPSHOT_SECONDS),
        equals("(a) snapshot SQL statements", len(statements), TARGET_SNAPSHOT_STATEMENTS),
        at_most(
            "(a) snapshot round trips", round_trips, TARGET_SNAPSHOT_ROUND_TRIPS, "round trips"
        ),
        within(
            f"(b) object model, {len(journal.migrations)} migrations (median)",
            model_seconds,
            TARGET_OBJECT_MODEL_SECONDS,
        ),
        within("(c) validate end to end (median)", validate_seconds, TARGET_VALIDATE_SECONDS),
        equals("(c) validate verdict", report.status.value, Verdict.SAFE.value),
        within(
            "(c) `orchestrator validate` CLI (median)", cli_seconds, TARGET_CLI_VALIDATE_SECONDS
        ),
        equals("(c) CLI exit code", cli_exit, 0),
    ]


def main() -> int:
    """Run the benchmark; 0 when every target is met, 1 otherwise."""
    print(
        f"bench: {SHAPE.tables} tables x {SHAPE.columns_per_table} columns, "
        f"{SHAPE.migrations} migrations; medians of {REPEATS} runs"
    )
    with EmbeddedPostgres() as pg, tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        measurements = run_bench(pg, Path(tmp))
    print()
    print_table(measurements)
    missed = [m.name for m in measurements if not m.ok]
    if missed:
        print(f"\nbench FAILED: {len(missed)} target(s) missed: {'; '.join(missed)}")
        return 1
    print("\nbench passed: every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
