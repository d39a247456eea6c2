"""Migrating under live traffic: what each migrator does to the app's queries.

A load generator runs :data:`CLIENTS` connections (threads, psycopg, autocommit), each
looping over short reads and writes of the table the release alters, while one long
transaction holds an ACCESS SHARE lock on it for :data:`HOLD_S` seconds (a report, a slow
request). The release adds a column (ACCESS EXCLUSIVE). Side by side, on fresh databases of
one throwaway server:

- ``drizzle-kit migrate``: no lock_timeout, so the ALTER queues behind the long transaction
  and every client query queues behind the ALTER until it ends;
- ``orchestrator migrate`` with its defaults (lock_timeout 500 ms, retried with backoff
  within about a minute): short queues, retried until the long transaction has ended;
- ``orchestrator migrate --lock-timeout 500ms --lock-retries 20``: the same, with more
  retries.

For each: the longest and the 99th-percentile latency of the client queries that ran during
the migration, the queries that failed, and whether the migration completed. Then a
``CREATE INDEX CONCURRENTLY`` on a 1,000,000-row table under write traffic (with
``--allow-concurrent``): the longest write.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench import drizzle_kit
from bench.folders import write_drizzle_folder
from orchestrator.db.backoff import DEFAULT_LOCK_RETRIES, DEFAULT_LOCK_TIMEOUT_S
from orchestrator.sandbox.pg import EmbeddedPostgres, create_database, with_dbname

CLIENTS = 8
ROWS = 10_000
HOLD_S = 8.0  # the long transaction (the 8-second read)
SHORT_LOCK_TIMEOUT_S = 0.5
LOCK_RETRIES = 20
INDEX_ROWS = 1_000_000
TARGET_SLACK_S = 0.1  # with retries, no query waits longer than the lock timeout plus this
TARGET_DEFAULTS_MAX_S = 1.1  # issue 26: the defaults stall no query longer than about 1 s
TARGET_INDEX_WRITE_S = 1.0

ACCOUNTS = 'CREATE TABLE "accounts" ("id" serial PRIMARY KEY NOT NULL, "balance" integer);'
FILL = f"INSERT INTO accounts (balance) SELECT 0 FROM generate_series(1, {ROWS});"
ADD_TIER = 'ALTER TABLE "accounts" ADD COLUMN "tier" text;'
EVENTS = 'CREATE TABLE "events" ("id" bigserial PRIMARY KEY NOT NULL, "kind" integer);'
FILL_EVENTS = f"INSERT INTO events (kind) SELECT g % 97 FROM generate_series(1, {INDEX_ROWS}) AS g;"
EVENTS_INDEX = 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "events_kind_idx" ON "events" ("kind");'

Cells = tuple[str, str, str, bool | None]  # a result row: name, value, target, ok


@dataclass
class Load:
    """Client threads running short queries; each query's start and duration is kept."""

    url: str
    queries: Callable[[random.Random], tuple[str, tuple[object, ...]]]
    samples: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """Open the connections and start querying."""
        ready = threading.Barrier(CLIENTS + 1)
        for number in range(CLIENTS):
            thread = threading.Thread(target=self._client, args=(number, ready), daemon=True)
            thread.start()
            self.threads.append(thread)
        ready.wait()

    def _client(self, number: int, ready: threading.Barrier) -> None:
        rng = random.Random(number)
        with psycopg.connect(self.url, autocommit=True, application_name=f"app-{number}") as conn:
            ready.wait()
            while not self.stop.is_set():
                query, params = self.queries(rng)
                started = time.monotonic()
                try:
                    conn.execute(query, params)  # type: ignore[arg-type]
                except psycopg.Error as exc:
                    with self.lock:
                        self.failures.append((started, type(exc).__name__))
                    continue
                took = time.monotonic() - started
                with self.lock:
                    self.samples.append((started, took))
                time.sleep(0.002)  # a busy app, not a benchmark of the server

    def finish(self) -> None:
        """Stop the clients and wait for them."""
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def during(self, start: float, end: float) -> tuple[list[float], int]:
        """Latencies of the queries in flight during ``[start, end]``, and failures then."""
        latencies = [took for began, took in self.samples if began <= end and began + took >= start]
        failed = sum(1 for began, _ in self.failures if start <= began <= end)
        return latencies, failed


def account_queries(rng: random.Random) -> tuple[str, tuple[object, ...]]:
    """A read or a write of one account."""
    key = rng.randint(1, ROWS)
    if rng.random() < 0.5:
        return "SELECT balance FROM accounts WHERE id = %s", (key,)
    return "UPDATE accounts SET balance = balance + 1 WHERE id = %s", (key,)


def event_writes(rng: random.Random) -> tuple[str, tuple[object, ...]]:
    """A write to the big table: an insert or an update of one row."""
    if rng.random() < 0.5:
        return "INSERT INTO events (kind) VALUES (%s)", (rng.randint(0, 96),)
    return "UPDATE events SET kind = %s WHERE id = %s", (rng.randint(0, 96), rng.randint(1, 10_000))


def hold_lock(url: str, seconds: float) -> threading.Thread:
    """One long transaction reading ``accounts`` (ACCESS SHARE) for ``seconds``."""
    holding = threading.Event()

    def hold() -> None:
        with psycopg.connect(url, application_name="long-report") as conn:
            conn.execute("SELECT count(*) FROM accounts")
            holding.set()
            time.sleep(seconds)
            conn.rollback()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    holding.wait(10)
    return thread


def orchestrator_migrate(folder: Path, *extra: str) -> Callable[[str], int]:
    """``orchestrator migrate --yes`` on ``folder`` with ``extra`` options."""
    script = Path(sys.executable).parent / "orchestrator"
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "orchestrator.cli"]

    def migrate(url: str) -> int:
        done = subprocess.run(
            [*argv, "migrate", "--yes", "--migrations", str(folder), "--database-url", url, *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.returncode

    return migrate


def kit_migrate(kit: drizzle_kit.DrizzleKit, folder: Path, workdir: Path) -> Callable[[str], int]:
    """``drizzle-kit migrate`` on ``folder``."""

    def migrate(url: str) -> int:
        config = workdir / f"drizzle.traffic.{url.rsplit('/', 1)[-1]}.json"
        config.write_text(
            drizzle_kit.config_json(url, folder, schema="drizzle", table="__drizzle_migrations")
        )
        return drizzle_kit.migrate(kit, config).returncode

    return migrate


@dataclass(frozen=True)
class Outcome:
    """What the clients saw during one migration."""

    max_s: float
    p99_s: float
    queries: int
    failed: int
    completed: bool

    def value(self) -> str:
        """``max 5.712 s, p99 5.603 s (812 queries), 0 failed, completed``."""
        done = "completed" if self.completed else "did NOT complete"
        return (
            f"max {self.max_s:.3f} s, p99 {self.p99_s:.3f} s ({self.queries} queries), "
            f"{self.failed} failed, {done}"
        )


def p99(values: list[float]) -> float:
    """The 99th percentile (the maximum below 100 values)."""
    if len(values) < 100:
        return max(values, default=0.0)
    return statistics.quantiles(values, n=100)[98]


def tracked(url: str) -> int:
    """Tracking rows in ``url`` (0 without the table)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass('drizzle.__drizzle_migrations')").fetchone()
        if row is None or row[0] is None:
            return 0
        count = conn.execute("SELECT count(*) FROM drizzle.__drizzle_migrations").fetchone()
    return int(count[0]) if count else 0


def under_traffic(
    url: str,
    migrate: Callable[[str], int],
    queries: Callable[[random.Random], tuple[str, tuple[object, ...]]],
    expected_rows: int,
    hold_s: float | None,
) -> Outcome:
    """Run ``migrate`` while the clients (and the long transaction, if ``hold_s``) run."""
    load = Load(url, queries)
    load.start()
    time.sleep(0.5)
    holder = hold_lock(url, hold_s) if hold_s else None
    time.sleep(0.2)
    started = time.monotonic()
    code = migrate(url)
    ended = time.monotonic()
    time.sleep(0.3)
    load.finish()
    if holder is not None:
        holder.join()
    latencies, failed = load.during(started, ended)
    completed = code == 0 and tracked(url) == expected_rows
    return Outcome(max(latencies, default=0.0), p99(latencies), len(latencies), failed, completed)


def measure(workdir: Path) -> list[Cells]:
    """Every traffic figure, as result rows; the caller prints them and checks the targets."""
    rows: list[Cells] = []
    with EmbeddedPostgres() as pg:
        count = 0

        def fresh(setup: list[tuple[str, list[str]]]) -> str:
            nonlocal count
            count += 1
            name = f"traffic_{count}"
            create_database(pg.url(), name)
            url = with_dbname(pg.url(), name)
            first = write_drizzle_folder(workdir / f"setup_{count}", setup)
            if orchestrator_migrate(first)(url) != 0:
                raise SystemExit("bench: traffic set-up migration failed")
            return url

        setup = [("0000_accounts", [ACCOUNTS, FILL])]
        release = write_drizzle_folder(workdir / "traffic", [*setup, ("0001_tier", [ADD_TIER])])
        kit = drizzle_kit.install()
        contenders: list[tuple[str, Callable[[str], int] | None, str]] = [
            (
                "drizzle-kit migrate",
                kit_migrate(kit, release, workdir)
                if isinstance(kit, drizzle_kit.DrizzleKit)
                else None,
                f"skipped: {kit}" if isinstance(kit, str) else "",
            ),
            (
                f"orchestrator migrate (defaults: lock_timeout "
                f"{DEFAULT_LOCK_TIMEOUT_S * 1000:g}ms, {DEFAULT_LOCK_RETRIES} retries)",
                orchestrator_migrate(release),
                "",
            ),
            (
                f"orchestrator migrate --lock-timeout {SHORT_LOCK_TIMEOUT_S * 1000:g}ms "
                f"--lock-retries {LOCK_RETRIES}",
                orchestrator_migrate(
                    release,
                    "--lock-timeout",
                    f"{SHORT_LOCK_TIMEOUT_S * 1000:g}ms",
                    "--lock-retries",
                    str(LOCK_RETRIES),
                ),
                "",
            ),
        ]
        for label, migrate, note in contenders:
            name = f"traffic: {label}, {CLIENTS} clients + {HOLD_S:g} s lock"
            if migrate is None:
                rows.append((name, note, "-", None))
                continue
            outcome = under_traffic(fresh(setup), migrate, account_queries, 2, HOLD_S)
            if label.startswith("drizzle-kit"):
                rows.append((name, outcome.value(), "-", None))
                continue
            if "--lock-retries" in label:
                limit = SHORT_LOCK_TIMEOUT_S + TARGET_SLACK_S
            else:
                limit = TARGET_DEFAULTS_MAX_S
            ok = outcome.completed and outcome.max_s <= limit
            rows.append((name, outcome.value(), f"max <= {limit:g} s, completes", ok))

        big = [("0000_events", [EVENTS, FILL_EVENTS])]
        index_release = write_drizzle_folder(
            workdir / "index", [*big, ("0001_events_kind", [EVENTS_INDEX])]
        )
        outcome = under_traffic(
            fresh(big),
            orchestrator_migrate(index_release, "--allow-concurrent", "--lock-retries", "5"),
            event_writes,
            2,
            None,
        )
        rows.append(
            (
                f"traffic: CREATE INDEX CONCURRENTLY on {INDEX_ROWS:,} rows, {CLIENTS} writers",
                outcome.value(),
                f"max write <= {TARGET_INDEX_WRITE_S:g} s, completes",
                outcome.completed and outcome.max_s <= TARGET_INDEX_WRITE_S,
            )
        )
    return rows


def main() -> int:
    """``python -m bench.traffic``: only these figures; exit 1 when a target is missed."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="orch-traffic-") as tmp:
        rows = measure(Path(tmp))
    for name, value, target, ok in rows:
        status = "info" if ok is None else ("ok" if ok else "MISSED")
        print(f"| {name} | {value} | {target} | {status} |")
    return 1 if any(ok is False for *_, ok in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
