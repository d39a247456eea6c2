"""Lock retries (issue 15): a migration queued behind a long transaction gives up after a
short lock_timeout, names who blocked it, and tries again, on a real PostgreSQL with real
concurrent sessions; the policy and the blocker selection as pure functions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from bench.folders import write_drizzle_folder
from orchestrator.analysis.effects import analyse_sql
from orchestrator.analysis.locks import conflicts, lock_mode, migration_locks, pg_mode
from orchestrator.cli import run
from orchestrator.db.backoff import (
    DEFAULT_LOCK_BUDGET_S,
    DEFAULT_LOCK_RETRIES,
    lock_retries_within,
)
from orchestrator.db.blockers import Blocker, select_blockers, wait_from_rows
from orchestrator.db.lock_retry import LockRetry, lock_retry_policy
from orchestrator.db.migrator import MigrateOptions, statement_waiting
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import read_journal
from orchestrator.migrate import migrate_database
from orchestrator.playbook.model import MigrationsSpec
from tests.conftest import suite_shadow
from tests.drizzle_helpers import expected_rows, prefix_folder, tracking_rows
from tests.release_world import World

USERS = 'CREATE TABLE "users" ("id" serial PRIMARY KEY NOT NULL, "email" text);'
ADD_NICK = 'ALTER TABLE "users" ADD COLUMN "nick" text;'
ADD_AGE = 'ALTER TABLE "users" ADD COLUMN "age" integer;'


def folder(tmp_path: Path) -> Path:
    return write_drizzle_folder(
        tmp_path / "drizzle",
        [("0000_users", [USERS]), ("0001_nick", [ADD_NICK]), ("0002_age", [ADD_AGE])],
    )


def migrate(url: str, migrations: Path, *extra: str) -> int:
    argv = ["migrate", "--yes", "--migrations", str(migrations), "--database-url", url]
    return run([*argv, "--retries", "1", *extra])


def first_table_only(url: str, tmp_path: Path) -> None:
    only = write_drizzle_folder(tmp_path / "first", [("0000_users", [USERS])])
    assert migrate(url, only) == 0


@contextmanager
def long_read(url: str, seconds: float | None) -> Iterator[int]:
    """A session reading ``users`` in an open transaction (ACCESS SHARE) for ``seconds``
    (until the block ends when None); yields its pid."""
    started = threading.Event()
    stop = threading.Event()
    pid: list[int] = []

    def hold() -> None:
        with psycopg.connect(url, application_name="slow-report") as conn:
            pid.append(conn.info.backend_pid)
            conn.execute("SELECT count(*) FROM users")
            started.set()
            stop.wait(seconds)  # None: until the block ends

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        while not started.wait(0.05):  # no clock: it reads, or it fails
            assert thread.is_alive(), "the reading session ended before it read"
        yield pid[0]
    finally:
        stop.set()
        thread.join()


def migrate_behind_endless_read(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, int]:
    """The release (users created first) migrated with a 200 ms lock timeout while a read
    that never ends holds ``users``: the exit code, stderr and the blocker's pid."""
    migrations = folder(tmp_path)
    first_table_only(url, tmp_path)
    capsys.readouterr()
    with long_read(url, None) as blocker:
        code = migrate(url, migrations, "--lock-timeout", "200ms", *extra)
    return code, capsys.readouterr().err, blocker


def columns(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
        ).fetchall()
    return {r[0] for r in rows}


def test_a_blocker_released_after_3s_is_waited_out_by_retries(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    migrations = folder(tmp_path)
    first_table_only(database_url, tmp_path)
    capsys.readouterr()
    with long_read(database_url, 3.0) as blocker:
        started = time.monotonic()
        code = migrate(database_url, migrations, "--lock-timeout", "300ms", "--lock-retries", "10")
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 0, err
    assert elapsed >= 2.0  # it did wait the blocker out
    assert "lock timeout (attempt 1/11)" in err
    assert f"pid {blocker} (slow-report, idle in transaction" in err
    assert "holds ACCESS SHARE on public.users" in err
    rows = tracking_rows(database_url)
    assert len(rows) == 3 and len({r[1] for r in rows}) == 3  # each written once
    assert {"nick", "age"} <= columns(database_url)


def test_a_blocker_that_never_ends_exhausts_the_retries_and_nothing_is_applied(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err, blocker = migrate_behind_endless_read(
        database_url, tmp_path, capsys, "--lock-retries", "2"
    )
    assert code == 21
    assert "lock timeout (attempt 2/3)" in err
    last = err.strip().splitlines()[-1]
    assert "gave up after 3 attempts" in last
    assert f"pid {blocker} (slow-report" in last and "ACCESS SHARE on public.users" in last
    assert "nothing was applied" in last
    assert len(tracking_rows(database_url)) == 1
    assert "nick" not in columns(database_url)


def test_without_retries_a_lock_timeout_stops_at_once(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err, blocker = migrate_behind_endless_read(
        database_url, tmp_path, capsys, "--lock-retries", "0"
    )
    assert code == 21
    assert "attempt" not in err and f"pid {blocker}" in err
    assert len(tracking_rows(database_url)) == 1


def test_other_sql_errors_are_not_retried(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = write_drizzle_folder(
        tmp_path / "broken",
        [("0000_users", [USERS]), ("0001_bad", ['ALTER TABLE "nowhere" ADD COLUMN "x" text;'])],
    )
    code = migrate(database_url, broken, "--lock-retries", "5")
    err = capsys.readouterr().err
    assert code == 21 and "lock timeout" not in err and "42P01" in err
    assert "attempt" not in err  # no retry, so no backoff pause before one
    assert tracking_rows(database_url) == []


def test_after_lock_retries_the_tracking_ids_are_the_ones_drizzle_writes(
    database_url: str, drizzle_fixture: Path, tmp_path: Path
) -> None:
    """Each attempt drew ids for the rows of 0009 and 0010 before 0011 timed out, and a
    rollback does not give them back (nextval is not transactional): once the blocker is
    gone, the rows are numbered 1..12 all the same, as the real migrator numbered them."""
    first = prefix_folder(drizzle_fixture, 9, tmp_path / "first")
    assert migrate(database_url, first) == 0
    with psycopg.connect(database_url, application_name="slow-report") as holder:
        holder.execute("SELECT FROM case_classification_results")  # ACCESS SHARE, held

        timeouts: list[int] = []

        def after_timeout(event: LockRetry) -> None:
            timeouts.append(event.attempt)
            if event.attempt == 2:  # the report ends after the second timeout
                holder.rollback()

        result = migrate_database(
            database_url,
            read_journal(drizzle_fixture),
            MigrateOptions(lock_timeout=0.2, lock_retries=5),
            confirm=lambda _report: True,
            retry=RetryPolicy.none(),
            on_lock_retry=after_timeout,
            shadow=suite_shadow(),
        )
    assert timeouts == [1, 2]
    assert [a.tag for a in result.applied] == [
        "0009_fat_kulan_gath",
        "0010_new_colleen_wing",
        "0011_cute_skin",
    ]
    assert tracking_rows(database_url) == expected_rows()


@contextmanager
def lock_waits(url: str) -> Iterator[set[tuple[int, str]]]:
    """Every wait for a lock on ``users`` seen while the block runs, as (pid, query_start):
    one statement's wait is one element, however long it lasts."""
    seen: set[tuple[int, str]] = set()
    stop = threading.Event()
    query = """
        SELECT a.pid, a.query_start::text FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE NOT l.granted AND l.relation = 'users'::regclass
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""

    def watch() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                seen.update(conn.execute(query).fetchall())
                stop.wait(0.01)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def test_each_attempt_queues_for_the_lock_once_and_names_statement_and_blocker(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24 case 6: finding who blocked does not queue for the lock again (each wait
    stalls the table's traffic), and the failing statement is still named."""
    migrations = folder(tmp_path)
    first_table_only(database_url, tmp_path)
    capsys.readouterr()
    with long_read(database_url, None) as blocker, lock_waits(database_url) as waits:
        code = migrate(database_url, migrations, "--lock-timeout", "1s", "--lock-retries", "1")
    err = capsys.readouterr().err
    assert code == 21, err
    assert len(waits) == 2, waits  # two attempts, one wait each
    assert len({pid for pid, _ in waits}) == 2  # each attempt on its own connection
    retry, last = [line for line in err.splitlines() if "lock timeout" in line]
    for line in (retry, last):
        assert "in 0001_nick, statement 1 (ALTER TABLE" in line
        assert f"pid {blocker} (slow-report, idle in transaction" in line
        assert "holds ACCESS SHARE on public.users" in line
    assert "nick" not in columns(database_url)


def test_deploy_prints_each_lock_retry_on_stderr_without_a_terminal(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/live-traffic.md: each retry is a line on stderr, for the deploy too (issue 24
    case 6: they reached only the audit file)."""
    world.playbook.write_text(
        world.playbook.read_text().replace(
            "lock_timeout: 5s", "lock_timeout: 300ms, lock_retries: 1"
        )
    )
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    with psycopg.connect(world.database_url, application_name="slow-report") as holder:
        holder.execute("SELECT * FROM case_classification_results LIMIT 1")  # ACCESS SHARE
        code = run(world.deploy_argv())
        holder.rollback()
    err = capsys.readouterr().err
    assert code == 21, err
    [line] = [line for line in err.splitlines() if "lock timeout (attempt" in line]
    assert "(attempt 1/2) in 0011_cute_skin, statement 1" in line
    assert "(slow-report, idle in transaction" in line
    assert "holds ACCESS SHARE on public.case_classification_results" in line


# -- pure parts ------------------------------------------------------------------------------


def test_lock_retry_policy_backs_off_exponentially_with_jitter() -> None:
    policy = lock_retry_policy(10)
    assert policy.attempts == 11
    assert lock_retry_policy(0).attempts == 1
    waits = [policy.wait(n) for n in range(1, 8)]
    for n, wait in enumerate(waits, 1):
        base = min(policy.max_wait, policy.initial * 2 ** (n - 1))
        assert base * 0.75 - 1e-9 <= wait <= min(policy.max_wait, base * 1.25) + 1e-9
    assert waits[-1] <= policy.max_wait


def test_blockers_are_the_sessions_holding_conflicting_modes() -> None:
    rows = [
        (10, "AccessShareLock", True, "public.users", "report", "idle in transaction", 8.0, []),
        (11, "RowExclusiveLock", True, "public.users", "api", "active", 0.1, []),
        (10, "AccessShareLock", True, "public.users", "report", "idle in transaction", 8.0, []),
    ]
    assert [b.pid for b in select_blockers(rows, "ACCESS EXCLUSIVE")] == [10, 11]
    assert [b.pid for b in select_blockers(rows, "SHARE")] == [11]  # CREATE INDEX: writes
    assert select_blockers(rows, "SHARE UPDATE EXCLUSIVE") == ()  # CONCURRENTLY: neither
    only = select_blockers(rows, None)[0]
    assert only == Blocker(10, "report", "idle in transaction", 8.0, "ACCESS SHARE", "public.users")
    assert only.describe() == (
        "pid 10 (report, idle in transaction for 8.0s) holds ACCESS SHARE on public.users"
    )


def test_a_seen_wait_names_its_table_mode_and_blockers() -> None:
    """The lock watch's rows: the sessions pg_blocking_pids named, with their locks on the
    table the backend waits for, and the mode it asked for (last column)."""
    rows = [
        (10, "AccessShareLock", True, "public.users", "report", "idle in transaction", 9.0,
         [10, 11], "AccessExclusiveLock"),
        (11, "RowExclusiveLock", False, "public.users", "app", "active", 0.2,
         [10, 11], "AccessExclusiveLock"),
    ]  # fmt: skip
    seen = wait_from_rows(rows)
    assert seen is not None
    assert (seen.table, seen.mode) == ("public.users", "ACCESS EXCLUSIVE")
    assert [(b.pid, b.granted) for b in seen.blockers] == [(10, True), (11, False)]
    assert wait_from_rows([]) is None


def test_the_waiting_table_names_the_first_statement_that_locks_it() -> None:
    pieces = [
        'CREATE TABLE "teams" ("id" serial PRIMARY KEY);',
        'ALTER TABLE "Users" ADD COLUMN "team_id" integer;',
        'ALTER TABLE "orders" ADD CONSTRAINT "fk" FOREIGN KEY ("u") '
        'REFERENCES "public"."Users"("id");',
    ]
    assert statement_waiting(pieces, "public.Users") == 2
    assert statement_waiting(pieces, "public.orders") == 3
    assert statement_waiting(pieces, "public.nowhere") is None


def test_lock_modes_and_conflicts() -> None:
    assert pg_mode("AccessShareLock") == "ACCESS SHARE"
    assert pg_mode("ShareUpdateExclusiveLock") == "SHARE UPDATE EXCLUSIVE"
    assert conflicts("ACCESS EXCLUSIVE", "ACCESS SHARE")
    assert not conflicts("SHARE", "SHARE")
    assert conflicts("SHARE", "ROW EXCLUSIVE")
    assert conflicts("SHARE UPDATE EXCLUSIVE", "SHARE UPDATE EXCLUSIVE")
    assert not conflicts("SHARE UPDATE EXCLUSIVE", "ROW EXCLUSIVE")


def test_each_statement_kind_takes_the_documented_mode() -> None:
    cases = {
        "ALTER TABLE t ADD COLUMN c text": "ACCESS EXCLUSIVE",
        "CREATE INDEX i ON t (a)": "SHARE",
        "CREATE INDEX CONCURRENTLY i ON t (a)": "SHARE UPDATE EXCLUSIVE",
        "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES p (id)": "SHARE ROW EXCLUSIVE",
        "ALTER TABLE t VALIDATE CONSTRAINT f": "SHARE UPDATE EXCLUSIVE",
        "UPDATE t SET a = 1": "ROW EXCLUSIVE",
    }
    for statement, mode in cases.items():
        effects = analyse_sql(statement)
        assert [lock_mode(c) for c in effects.changes] == [mode], statement
    new_table = analyse_sql("CREATE TABLE n (a int); CREATE INDEX ni ON n (a)")
    assert migration_locks(new_table) == ()  # nobody uses a table created in the migration


def test_the_retry_line_names_attempt_blocker_and_pause() -> None:
    blocker = Blocker(7, "", "active", 1.25, "ACCESS SHARE", "public.users")
    event = LockRetry(2, 11, 1.04, "0001_nick, statement 1 (ALTER ...)", (blocker,))
    assert event.line() == (
        "lock timeout (attempt 2/11) in 0001_nick, statement 1 (ALTER ...): blocked by pid 7 "
        "(no application_name, active for 1.2s) holds ACCESS SHARE on public.users; rolled "
        "back, retrying in 1.0s"
    )
    assert event.to_json()["blockers"] == [blocker.to_json()]


def test_defaults_are_a_short_lock_timeout_retried_within_about_a_minute() -> None:
    """Issue 26: safe by default under traffic. The playbook, the CLI and the migrator
    share the defaults; the retries fit the budget even with every pause at its longest."""
    spec = MigrationsSpec.model_validate({"dir": "drizzle", "schema": "drizzle"})
    assert spec.lock_timeout == 0.5 and spec.concurrent is False
    assert spec.lock_retries == DEFAULT_LOCK_RETRIES == MigrateOptions().lock_retries > 0
    assert MigrateOptions().lock_timeout == 0.5
    policy = lock_retry_policy(DEFAULT_LOCK_RETRIES)

    def pause(n: int, jitter: float) -> float:  # the n-th pause, jittered by ``jitter``
        return min(policy.max_wait, policy.initial * 2 ** (n - 1) * (1 + jitter))

    def worst(attempts: int) -> float:
        return attempts * 0.5 + sum(pause(n, policy.jitter) for n in range(1, attempts))

    assert worst(policy.attempts) <= DEFAULT_LOCK_BUDGET_S < worst(policy.attempts + 1)
    # An 8 s blocker (bench: the defaults row) is outlasted with every pause at its shortest.
    shortest = sum(pause(n, -policy.jitter) for n in range(1, policy.attempts))
    assert shortest + policy.attempts * 0.5 > 8.0
    assert lock_retries_within(60.0, 2.0) < DEFAULT_LOCK_RETRIES  # longer waits, fewer tries
    assert lock_retries_within(0.4, 0.5) == 0
    tuned = MigrationsSpec.model_validate(
        {"dir": "d", "schema": "drizzle", "lock_retries": 10, "concurrent": True}
    )
    assert tuned.lock_retries == 10 and tuned.concurrent is True
    with pytest.raises(ValueError):
        MigrationsSpec.model_validate({"dir": "d", "schema": "drizzle", "lock_retries": -1})
