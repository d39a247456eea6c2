"""``make bench`` (``python -m bench``): is orchestrator fast at the scale of a real app?

A throwaway PostgreSQL cluster and a generated drizzle folder (:data:`bench.synthetic.SCALE`:
1,000 migrations creating 5,000 tables and 20,000 columns, in a temporary directory). Then:

- journal: read and hash the 1,000 files;
- migrate: ``orchestrator migrate --yes`` on an empty database vs the real
  ``drizzle-kit migrate`` (npm-installed into ``bench/.drizzle-kit``; skipped without node),
  same folder, same server, as a ratio; and the round trips each one makes;
- shadow: a cold ``validate`` of a 200-migration folder of an app's size (a throwaway
  shadow cluster started, the folder replayed, the catalog read back), no history cached;
  the cluster's data directory copied from the one prepared before (and, as info, made by
  ``initdb`` as on the machine's first run);
- validate at scale on the fully applied database: wall time, and the SQL round trips counted
  on the wire by :class:`bench.proxy.LatencyProxy`; with the folder's history read from its
  on-disk cache (warm: the targets) and replayed anew on the shadow (cold: reported, no
  target);
- latency: the same through the proxy adding 50 ms per round trip; and both migrates again
  through 2 ms per round trip (a database in the same region), where the ratio is judged;
- CLI start-up: ``orchestrator --help`` and ``orchestrator validate --help``;
- traffic: migrating under live traffic, drizzle-kit vs orchestrator with its defaults and
  with more lock retries, and a concurrent index build on 1,000,000 rows
  (:mod:`bench.traffic`).

Each timing is the median of several runs. Rows marked "info" explain the others and have no
target. Exit 1 when a target is missed.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg

from bench import drizzle_kit, traffic
from bench.proxy import LatencyProxy, ProxyProcess
from bench.synthetic import SCALE, Shape, write_folder
from orchestrator.database import take_snapshot, validate_database
from orchestrator.db.migrator import MigrateOptions
from orchestrator.drizzle.journal import Journal, read_journal
from orchestrator.migrate import migrate_database
from orchestrator.sandbox.pg import EmbeddedPostgres, create_database, drop_database, with_dbname
from orchestrator.shadow import LOCAL_SHADOW, SHADOW_URL_ENV
from orchestrator.shadow.cache import CACHE_DIR_ENV
from orchestrator.validation import Verdict

REPEATS = 5  # fast figures: median of this many runs, after one warm-up
MIGRATE_REPEATS = 3  # migrate figures: median of this many runs per tool (each ~seconds)
LATENCY = 0.050  # seconds added per round trip by the proxy
# migrate through the proxy: a nearby cloud database (same region). drizzle-kit's ~16,000
# round trips at the 20-100 ms of a distant one would take 5 to 27 minutes per run.
MIGRATE_LATENCY = 0.002
MAX_LOCKS = 1024  # max_locks_per_transaction for the one-transaction migrate of 5,000 tables

TARGET_VALIDATE_S = 1.0
TARGET_COLD_VALIDATE_S = 3.0
TARGET_ROUND_TRIPS = 1
# An app's folder at 200 migrations: about the size of the fixture apps' per migration.
COLD_SHAPE = Shape(tables=120, columns_per_table=8, migrations=200, altering=40)
TARGET_MIGRATE_RATIO = 0.5
TARGET_STARTUP_S = 0.3
TARGET_JOURNAL_S = 0.25

OPTIONS = MigrateOptions()
T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    name: str
    value: str
    target: str
    ok: bool | None  # None: informative, no target

    def cells(self) -> tuple[str, str, str, str]:
        """The row's cells."""
        status = "info" if self.ok is None else ("ok" if self.ok else "MISSED")
        return self.name, self.value, self.target, status


def seconds_row(name: str, seconds: float, limit: float | None = None) -> Row:
    """A timing, checked against ``limit`` when there is one."""
    if limit is None:
        return Row(name, f"{seconds:.3f} s", "-", None)
    return Row(name, f"{seconds:.3f} s", f"< {limit:g} s", seconds < limit)


def median_seconds(func: Callable[[], T], repeats: int = REPEATS) -> tuple[float, T]:
    """Median wall time of ``repeats`` calls of ``func`` after a warm-up call, and a result."""
    result = func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def orchestrator_argv() -> list[str]:
    """How to start the ``orchestrator`` command of this environment."""
    script = Path(sys.executable).parent / "orchestrator"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "orchestrator.cli"]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output."""
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def checked(done: subprocess.CompletedProcess[str], allowed: tuple[int, ...] = (0,)) -> None:
    """Stop the benchmark when a command failed: its figures would mean nothing."""
    if done.returncode not in allowed:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"bench: {done.args[0]} exited {done.returncode}: {' | '.join(tail)}")


def allow_huge_transactions(pg: EmbeddedPostgres) -> None:
    """Raise max_locks_per_transaction and restart.

    Creating 5,000 tables in one transaction (as both migrators do) takes ~30,000 locks: a
    table, its sequence and three indexes each. The default lock table (64 x 100
    connections) runs out, "out of shared memory", for drizzle-kit and for us alike.
    """
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET max_locks_per_transaction = {MAX_LOCKS}")
    pg.stop()
    pg.start()


def tracked_rows(url: str) -> int:
    """How many tracking rows a database holds."""
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {OPTIONS.schema}.{OPTIONS.table}").fetchone()
    return int(row[0]) if row else 0


# ------------------------------------------------------------------------------------ figures


def journal_rows(folder: Path) -> tuple[list[Row], Journal]:
    """Reading and hashing the folder."""
    seconds, journal = median_seconds(lambda: read_journal(folder))
    return [
        seconds_row(
            f"journal: read + hash {len(journal.migrations)} files", seconds, TARGET_JOURNAL_S
        ),
    ], journal


def cold_shadow_rows(pg: EmbeddedPostgres, workdir: Path) -> list[Row]:
    """A first ``validate`` of an app-sized folder: a throwaway shadow cluster is started, the
    folder replayed on it and the catalog read back; no history comes from the cache. The
    target's row starts the cluster from the data directory prepared by the machine's first
    one (as every later validate does); the info row is that first one (``initdb``)."""
    folder = write_folder(workdir / "cold-drizzle", COLD_SHAPE)
    journal = read_journal(folder)
    create_database(pg.url(), "bench_cold")
    url = with_dbname(pg.url(), "bench_cold")
    cache = workdir / "cold-cache"
    os.environ[CACHE_DIR_ENV] = str(cache)
    migrate_database(url, journal, OPTIONS, confirm=lambda _r: True, shadow=LOCAL_SHADOW)

    def cold_validate(*, prepared: bool = True) -> Verdict:
        for history in (cache / "shadow").glob("*.json"):
            history.unlink()
        if not prepared:
            shutil.rmtree(cache / "clusters", ignore_errors=True)
        return validate_database(url, journal, OPTIONS, shadow=LOCAL_SHADOW).status

    seconds, verdict = median_seconds(cold_validate, repeats=3)
    first, first_verdict = median_seconds(lambda: cold_validate(prepared=False), repeats=3)
    if {verdict, first_verdict} != {Verdict.SAFE}:
        raise SystemExit(f"bench: cold validate says {verdict.value}, {first_verdict.value}")
    name = (
        f"shadow: cold validate, {COLD_SHAPE.migrations} migrations "
        f"({COLD_SHAPE.tables} tables), local shadow started"
    )
    return [
        seconds_row(name, seconds, TARGET_COLD_VALIDATE_S),
        seconds_row(f"{name} by initdb (the machine's first)", first),
    ]


class MigrateRace:
    """orchestrator migrate and drizzle-kit migrate, each on fresh databases of one server."""

    def __init__(self, pg: EmbeddedPostgres, folder: Path, workdir: Path) -> None:
        self.pg = pg
        self.folder = folder
        self.workdir = workdir
        self.databases = 0

    def fresh(self) -> str:
        """A new empty database's URL."""
        self.databases += 1
        name = f"bench_{self.databases}"
        create_database(self.pg.url(), name)
        return with_dbname(self.pg.url(), name)

    def drop(self, url: str) -> None:
        """Drop a database made by :meth:`fresh`."""
        drop_database(self.pg.url(), url.rsplit("/", 1)[-1])

    def ours(self, url: str) -> subprocess.CompletedProcess[str]:
        """``orchestrator migrate --yes`` (interpreter start-up and both validations included)."""
        argv = [*orchestrator_argv(), "migrate", "--yes", "--json"]
        return run([*argv, "--migrations", str(self.folder), "--database-url", url])

    def theirs(self, kit: drizzle_kit.DrizzleKit, url: str) -> subprocess.CompletedProcess[str]:
        """``drizzle-kit migrate`` with a config pointing at ``url``."""
        config = self.workdir / f"drizzle.config.{self.databases}.json"
        config.write_text(
            drizzle_kit.config_json(url, self.folder, schema=OPTIONS.schema, table=OPTIONS.table)
        )
        return drizzle_kit.migrate(kit, config)

    def timed(self, command: Callable[[str], subprocess.CompletedProcess[str]]) -> float:
        """Wall time of one migrate on a fresh database (dropped afterwards)."""
        url = self.fresh()
        start = time.perf_counter()
        done = command(url)
        seconds = time.perf_counter() - start
        checked(done)
        if tracked_rows(url) != len(read_journal(self.folder).migrations):
            raise SystemExit(f"bench: {done.args[0]} did not track every migration")
        self.drop(url)
        return seconds

    def timed_through(
        self, command: Callable[[str], subprocess.CompletedProcess[str]], delay: float
    ) -> float:
        """Wall time of one migrate on a fresh database reached through a ``delay`` proxy."""
        url = self.fresh()
        with LatencyProxy.for_url(url, round_trip_delay=delay) as proxy:
            start = time.perf_counter()
            done = command(proxy.url(url))
            seconds = time.perf_counter() - start
        checked(done)
        self.drop(url)
        return seconds

    def counted(self, command: Callable[[str], subprocess.CompletedProcess[str]]) -> int:
        """Round trips of one migrate through a zero-latency proxy (not timed)."""
        url = self.fresh()
        with LatencyProxy.for_url(url, round_trip_delay=0.0) as proxy:
            checked(command(proxy.url(url)))
            trips = proxy.traffic().round_trips
        self.drop(url)
        return trips


def migrate_rows(race: MigrateRace, statements: int) -> list[Row]:
    """Our migrate against drizzle-kit's, as a ratio of medians; and their round trips."""
    kit = drizzle_kit.install()
    ours: list[float] = []
    theirs: list[float] = []
    # The first migrate of a folder replays it on the shadow (validate's history, and whether
    # the release runs in one transaction); both are cached, as on a release engineer's
    # machine after the folder's first validate. The race times the migrate itself.
    race.timed(race.ours)
    for _ in range(MIGRATE_REPEATS):  # interleaved, so drift hits both alike
        ours.append(race.timed(race.ours))
        if isinstance(kit, drizzle_kit.DrizzleKit):
            theirs.append(race.timed(lambda url: race.theirs(kit, url)))
    our_seconds = statistics.median(ours)
    rows = [
        seconds_row("migrate: orchestrator migrate (CLI, empty db)", our_seconds),
        Row(
            "migrate: orchestrator round trips",
            f"{race.counted(race.ours)} ({statements} statements)",
            "-",
            None,
        ),
    ]
    if not isinstance(kit, drizzle_kit.DrizzleKit):
        note = f"skipped: {kit}"
        rows.append(Row("migrate: drizzle-kit migrate", note, "-", None))
        rows.append(Row("migrate: orchestrator / drizzle-kit", note, "-", None))
        return rows
    their_seconds = statistics.median(theirs)
    ratio = our_seconds / their_seconds
    ms = f"{MIGRATE_LATENCY * 1000:g} ms"
    ours_far = race.timed_through(race.ours, MIGRATE_LATENCY)
    theirs_far = race.timed_through(lambda url: race.theirs(kit, url), MIGRATE_LATENCY)
    far_ratio = ours_far / theirs_far
    rows += [
        seconds_row(f"migrate: drizzle-kit {drizzle_kit.PACKAGES['drizzle-kit']}", their_seconds),
        Row(
            "migrate: drizzle-kit round trips",
            str(race.counted(lambda url: race.theirs(kit, url))),
            "-",
            None,
        ),
        Row("migrate: orchestrator / drizzle-kit, loopback", f"{ratio:.2f}x", "-", None),
        seconds_row(f"migrate: orchestrator +{ms}/round trip", ours_far),
        seconds_row(f"migrate: drizzle-kit +{ms}/round trip", theirs_far),
        Row(
            f"migrate: orchestrator / drizzle-kit, +{ms}/round trip",
            f"{far_ratio:.2f}x",
            f"<= {TARGET_MIGRATE_RATIO}x",
            far_ratio <= TARGET_MIGRATE_RATIO,
        ),
    ]
    return rows


def validate_rows(url: str, folder: Path, cache: Path) -> list[Row]:
    """validate on the applied database: in-process and CLI, direct and through 50 ms, with
    the folder's history read from the cache in ``cache``; and the one cold replay that
    filled it (no target: a new folder is replayed once)."""
    os.environ[CACHE_DIR_ENV] = str(cache)  # for us and the CLI processes we start
    journal = read_journal(folder)
    start = time.perf_counter()
    report = validate_database(url, journal, OPTIONS)  # replays, and stores the history
    cold_seconds = time.perf_counter() - start
    if report.status is not Verdict.SAFE:
        raise SystemExit(f"bench: validate says {report.status.value}: {report.recommendation}")
    snapshot_seconds, snapshot = median_seconds(lambda: take_snapshot(url, OPTIONS))
    in_process, _ = median_seconds(lambda: validate_database(url, read_journal(folder), OPTIONS))
    cli = [*orchestrator_argv(), "validate", "--json", "--migrations", str(folder)]
    cli_seconds, _ = median_seconds(lambda: checked(run([*cli, "--database-url", url])), 3)

    # In a process of its own: the in-process rows must not wait for our own lock to
    # forward the server's answer (see bench.proxy.ProxyProcess).
    with ProxyProcess.for_url(url, round_trip_delay=0.0) as proxy:
        handshake = proxy.handshake_round_trips(url)
        validate_database(proxy.url(url), journal, OPTIONS)
        in_process_trips = proxy.reset().round_trips - handshake
        checked(run([*cli, "--database-url", proxy.url(url)]))
        cli_trips = proxy.reset().round_trips - handshake
    with ProxyProcess.for_url(url, round_trip_delay=LATENCY) as proxy:
        slow_url = proxy.url(url)
        slow_snapshot, _ = median_seconds(lambda: take_snapshot(slow_url, OPTIONS))
        slow, _ = median_seconds(lambda: validate_database(slow_url, read_journal(folder), OPTIONS))
        slow_cli, _ = median_seconds(lambda: checked(run([*cli, "--database-url", slow_url])), 3)

    objects = len(snapshot.objects)
    ms = f"{LATENCY * 1000:g} ms"
    return [
        seconds_row(f"snapshot: connect + read {objects} catalog objects", snapshot_seconds),
        seconds_row(f"snapshot through +{ms}/round trip", slow_snapshot),
        Row(
            "validate: SQL round trips (+ connection set-up)",
            f"{in_process_trips} (+{handshake})",
            f"<= {TARGET_ROUND_TRIPS}",
            in_process_trips <= TARGET_ROUND_TRIPS,
        ),
        Row(
            "validate: SQL round trips, CLI",
            f"{cli_trips} (+{handshake})",
            f"<= {TARGET_ROUND_TRIPS}",
            cli_trips <= TARGET_ROUND_TRIPS,
        ),
        seconds_row("validate: validate_database()", in_process, TARGET_VALIDATE_S),
        seconds_row("validate: `orchestrator validate` CLI", cli_seconds, TARGET_VALIDATE_S),
        seconds_row(f"latency: validate_database() +{ms}", slow, TARGET_VALIDATE_S),
        seconds_row(f"latency: `orchestrator validate` CLI +{ms}", slow_cli, TARGET_VALIDATE_S),
        seconds_row(f"latency: cost of +{ms} (difference)", slow - in_process),
        # The first validate of a folder (or after any migration file changed) replays it on
        # the shadow: no target, reported so the cache hides nothing.
        seconds_row(
            f"cold: validate_database(), {len(journal.migrations)} migrations replayed",
            cold_seconds,
        ),
    ]


def startup_rows() -> list[Row]:
    """Wall time of the CLI's help screens (interpreter start-up and imports)."""
    rows = []
    for args in (["--help"], ["validate", "--help"]):
        argv = [*orchestrator_argv(), *args]
        seconds, _ = median_seconds(lambda argv=argv: checked(run(argv)))  # type: ignore[misc]
        rows.append(
            seconds_row(f"start-up: orchestrator {' '.join(args)}", seconds, TARGET_STARTUP_S)
        )
    return rows


# -------------------------------------------------------------------------------------- output


def machine() -> str:
    """CPU, cores, RAM and Python of this machine, on one line."""
    cpu = platform.processor() or platform.machine()
    with_cpuinfo = Path("/proc/cpuinfo")
    if with_cpuinfo.is_file():
        for line in with_cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kib = int(meminfo.read_text().split()[1])
        ram = f", {kib / 1024 / 1024:.0f} GiB RAM"
    return f"{cpu}, {os.cpu_count()} cores{ram}, Python {platform.python_version()}"


def print_table(rows: list[Row]) -> None:
    """The result table, as markdown (so docs/performance.md can take it as is)."""
    header = ("measurement", "value", "target", "")
    cells = [header, *(row.cells() for row in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    for number, line in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if number == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main() -> int:
    """Run every benchmark; 0 when each target is met, 1 otherwise."""
    print(f"machine: {machine()}")
    # Histories are cached in a temporary directory (never the user's ~/.cache).
    # The CLI runs as installed: compiled modules cached (pip compiles them at install). A
    # shell that forbids writing bytecode would make every run compile ours anew (~0.2 s).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    rows: list[Row] = []
    with EmbeddedPostgres() as pg, tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        allow_huge_transactions(pg)
        # The bench's cluster is the shadow too: it allows the one-transaction check of
        # 5,000 tables (see allow_huge_transactions).
        os.environ[SHADOW_URL_ENV] = pg.url()
        os.environ[CACHE_DIR_ENV] = str(Path(tmp) / "cache")
        with psycopg.connect(pg.url()) as conn:
            print(f"server: {conn.execute('SELECT version()').fetchone()[0]}")  # type: ignore[index]
        workdir = Path(tmp)
        folder = write_folder(workdir / "drizzle", SCALE)
        print(
            f"folder: {SCALE.migrations} migrations, {SCALE.tables} tables, "
            f"{SCALE.tables * SCALE.columns_per_table} columns in {folder}"
        )
        found, journal = journal_rows(folder)
        rows += found
        print("shadow: a cold validate of an app-sized folder...", flush=True)
        rows += cold_shadow_rows(pg, workdir)
        os.environ[CACHE_DIR_ENV] = str(workdir / "cache")
        statements = sum(len([p for p in m.statements if p.strip()]) for m in journal.migrations)
        race = MigrateRace(pg, folder, workdir)
        print("migrate: racing orchestrator and drizzle-kit (a few minutes)...", flush=True)
        rows += migrate_rows(race, statements)
        applied = race.fresh()
        checked(race.ours(applied))
        print("validate: measuring...", flush=True)
        rows += validate_rows(applied, folder, workdir / "validate-cache")
    # That cluster is gone: the traffic rows' migrates replay on a throwaway one of their own.
    os.environ.pop(SHADOW_URL_ENV, None)
    os.environ[CACHE_DIR_ENV] = "off"
    rows += startup_rows()
    print("traffic: migrating under live traffic (about a minute)...", flush=True)
    with tempfile.TemporaryDirectory(prefix="orch-traffic-") as tmp:
        rows += [Row(*cells) for cells in traffic.measure(Path(tmp))]
    print()
    print_table(rows)
    missed = [row.name for row in rows if row.ok is False]
    if missed:
        print(f"\nbench: {len(missed)} target(s) missed: {'; '.join(missed)}")
        return 1
    print("\nbench: every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
