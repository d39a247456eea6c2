"""``deploy --dry-run --rehearse-on``: rehearsals that do not touch production.

``local`` copies production's schema and tracking rows into a throwaway local PostgreSQL and
migrates that copy for real; a URL names another database (a staging copy) to migrate for
real. Production keeps no lock of the rehearsal's, and each rehearsal predicts the exit code
the real deploy then ends with: for a clean release, a failing migration, a failing monitor.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.cli import run
from orchestrator.db.identity import read_identity
from orchestrator.sandbox.pg import EmbeddedPostgres, create_database, with_dbname
from tests.drizzle_helpers import tracking_rows
from tests.lock_holder import table_locked
from tests.release_world import World, add_staging_migration, build_world, migrate_baseline
from tests.test_rehearsal import everything, push_to_staging


@pytest.fixture(autouse=True)
def _database_env(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)


def rehearse(
    world: World, capsys: pytest.CaptureFixture[str], on: str
) -> tuple[int, dict[str, Any]]:
    code = run([*world.rehearse_argv(on), "--json", "--state-dir", str(world.store.state_dir)])
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, json.loads(captured.out)


def rehearsal_locks(url: str) -> list[tuple[object, ...]]:
    """Locks held in production by any session of ours (the rehearsal's are gone or never);
    the shadow, on the same server, works in databases of its own."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT a.application_name, l.locktype, l.mode FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.application_name LIKE 'orchestrator%%' AND a.pid <> pg_backend_pid() "
            "AND a.datname = current_database()"
        ).fetchall()


def real_deploy_code(world: World) -> int:
    record = world.deploy()
    assert record.exit_code is not None
    return record.exit_code


def test_local_copy_predicts_a_clean_release_and_leaves_production_alone(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    before = everything(world)
    code, document = rehearse(world, capsys, "local")
    assert code == 0, document["plan"]
    assert "local schema-only copy" in document["rehearsed_on"]
    assert "cannot catch failures that depend on production's data" in document["rehearsed_on"]
    migrate = next(s for s in document["steps"] if s["name"] == "migrate")
    assert "3 migration(s) applied for real on the copy" in migrate["summary"]
    assert everything(world) == before
    assert rehearsal_locks(world.database_url) == []
    assert real_deploy_code(world) == code


def test_local_copy_predicts_a_failing_migration(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    push_to_staging(
        world,
        {"0012_broken.sql": 'ALTER TABLE "no_such_table" ADD COLUMN "x" integer;\n'},
        {"tag": "0012_broken", "when": 1761300000000},
    )
    before = everything(world)
    code, document = rehearse(world, capsys, "local")
    assert code == 21, document["plan"]
    assert "0012_broken" in str(document) and "no_such_table" in str(document)
    assert everything(world) == before
    assert real_deploy_code(world) == code


def test_local_copy_predicts_the_halt_of_production_down_before_the_deploy(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.health.status = 503
    code, document = rehearse(world, capsys, "local")
    assert code == 21, document["plan"]
    assert "already unhealthy before the deploy" in json.dumps(document)
    assert real_deploy_code(world) == code


def test_another_database_is_migrated_for_real_and_production_is_not(
    world: World, server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = world.database_url.rsplit("/", 1)[-1] + "_staging"
    create_database(server_url, name)
    staging = with_dbname(server_url, name)
    migrate_baseline(staging, world.repo)
    before = everything(world)
    code, document = rehearse(world, capsys, staging)
    assert code == 0, document["plan"]
    assert len(tracking_rows(staging)) == 12  # the copy got the release for real
    assert everything(world) == before  # production: not a row, not a lock
    assert rehearsal_locks(world.database_url) == []


@pytest.mark.parametrize("spelling", ["localhost", "another host name"])
def test_production_spelled_otherwise_is_refused_as_the_copy_by_its_identity(
    world: World, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    """``localhost`` for 127.0.0.1, or a name of its own for production's address (a DNS
    alias: libpq connects to ``hostaddr`` and never resolves the name): the same database,
    which its identity gives away, so it is refused (exit 2) and nothing is migrated."""
    params = conninfo_to_dict(world.database_url)
    if spelling == "localhost":
        params["host"] = "localhost"
    else:
        params.update(host="production-db.internal", hostaddr=params["host"])
    before = everything(world)
    argv = world.rehearse_argv(make_conninfo(**params))
    code = run([*argv, "--state-dir", str(world.store.state_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1] == "error: --rehearse-on names the production database itself: give a copy"
    assert everything(world) == before


def test_rehearse_on_refuses_production_itself_and_needs_dry_run(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    before = everything(world)
    code = run(
        [*world.rehearse_argv(world.database_url), "--state-dir", str(world.store.state_dir)]
    )
    assert code == 2
    assert "production database itself" in capsys.readouterr().err
    code = run(["deploy", "--playbook", str(world.playbook), "--rehearse-on", "local", "--yes"])
    assert code == 2
    assert "only goes with --dry-run" in capsys.readouterr().err
    assert everything(world) == before


LATE_S = 1.0


@contextmanager
def late(cluster: EmbeddedPostgres) -> Iterator[None]:
    """The server is down now and comes up LATE_S seconds later (a compute waking up)."""
    cluster.stop()
    starter = threading.Timer(LATE_S, cluster.start)
    starter.start()
    try:
        yield
    finally:
        starter.join()


@pytest.mark.parametrize("on", ["local", "staging"])
def test_a_rehearsal_on_a_copy_rides_out_a_late_server(
    own_cluster: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    on: str,
) -> None:
    """local: pg_dump's first connection to production is retried under the playbook's
    policy; a URL: the copy's first connection is."""
    create_database(own_cluster.url(), "app")
    url = with_dbname(own_cluster.url(), "app")
    with build_world(tmp_path / "late", url) as world:
        monkeypatch.setenv("DATABASE_URL", url)
        target = on
        if on == "staging":
            create_database(own_cluster.url(), "staging")
            target = with_dbname(own_cluster.url(), "staging")
            migrate_baseline(target, world.repo)
        started = time.monotonic()
        with late(own_cluster):
            code, document = rehearse(world, capsys, target)
        assert code == 0, document["plan"]
        assert time.monotonic() - started >= LATE_S * 0.9  # it did wait for the server
        migrate = next(s for s in document["steps"] if s["name"] == "migrate")
        assert "applied for real on the copy" in migrate["summary"]


def test_a_physical_copy_of_production_is_a_copy_it_is_migrated_and_production_is_not(
    own_cluster: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A copy made of production's files (a snapshot restored, a fork) has production's
    identity, system_identifier, database oid and name, but a server of its own: it is not
    production spelled otherwise, and it is migrated for real."""
    create_database(own_cluster.url(), "app")
    url = with_dbname(own_cluster.url(), "app")
    with build_world(tmp_path / "forked", url) as world:
        monkeypatch.setenv("DATABASE_URL", url)
        own_cluster.stop()
        fork = EmbeddedPostgres(bindir=own_cluster.bindir)
        try:
            subprocess.run(["cp", "-a", str(own_cluster.datadir), str(fork.datadir)], check=True)
            own_cluster.start()
            fork.start()
            copy = with_dbname(fork.url(), "app")
            assert read_identity(copy) == read_identity(url)
            before = everything(world)
            code, document = rehearse(world, capsys, copy)
            assert code == 0, document["plan"]
            assert len(tracking_rows(copy)) == 12  # the copy got the release for real
            assert everything(world) == before
        finally:
            fork.destroy()


def test_the_bounds_and_the_kind_are_announced_first(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run([*world.rehearse_argv("local"), "--rehearsal-lock-timeout", "300ms"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    first = captured.err.splitlines()[0]
    assert first.startswith("rehearsal on a local schema-only copy of production")
    assert "ACCESS SHARE" in first and "waited for at most 0.3s" in first
    assert "rehearsed on: a local schema-only copy" in captured.out


def test_a_sql_check_on_the_empty_copy_is_reported_as_not_predictive(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Production has a row the release's monitor check counts; the copy has none."""
    with psycopg.connect(world.database_url) as conn:
        conn.execute(
            "INSERT INTO case_classification_results (case_number, model, raw_response) "
            "VALUES ('CS0001', 'm', '{}')"
        )
    code, on_production = rehearse_default(world, capsys)
    assert code == 22, on_production["plan"]  # rolled back on production: the row is seen
    code, document = rehearse(world, capsys, "local")
    assert code == 0, document["plan"]
    monitor = next(s for s in document["steps"] if s["name"] == "monitor")
    details = "\n".join(monitor["details"])
    assert "n/a  null_service_offerings: ran on an empty copy: not predictive" in details
    assert "1 not predictive" in monitor["summary"]
    assert any("SQL checks ran on the schema-only copy" in c for c in document["caveats"])
    assert "SQL checks would read on production" in document["rehearsed_on"]
    assert real_deploy_code(world) == 22  # what the local rehearsal could not predict


def test_a_sql_check_failing_on_the_new_schema_is_still_predicted(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = (
        "    - name: ghost_rows\n      max: 0\n      query: SELECT count(*) FROM no_such_table\n"
    )
    text = world.playbook.read_text()
    world.playbook.write_text(text.replace("retry: {", ghost + "retry: {", 1))
    code, document = rehearse(world, capsys, "local")
    assert code == 22, document["plan"]
    monitor = next(s for s in document["steps"] if s["name"] == "monitor")
    assert any(d.startswith("FAIL ghost_rows") for d in monitor["details"]), monitor
    assert real_deploy_code(world) == 22


def rehearse_default(
    world: World, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    argv = ["deploy", "--playbook", str(world.playbook), "--dry-run", "--json"]
    code = run([*argv, "--state-dir", str(world.store.state_dir)])
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, json.loads(captured.out)


class LockSampler:
    """Polls production's pg_locks while a rehearsal runs: every relation lock any other
    client session holds there (autovacuum and our own backend left out)."""

    QUERY = (
        "SELECT l.mode, c.relname FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid "
        "LEFT JOIN pg_class c ON c.oid = l.relation "
        "WHERE l.locktype = 'relation' AND l.granted AND a.backend_type = 'client backend' "
        "AND l.pid <> pg_backend_pid() "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples = 0
        self.seen: set[tuple[str, str | None]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="lock-sampler") as conn:
            while not self._stop.is_set():
                rows = conn.execute(self.QUERY).fetchall()
                self.seen.update((str(mode), relname) for mode, relname in rows)
                self.samples += 1

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def modes(self) -> set[str]:
        return {mode for mode, _relname in self.seen}


@pytest.mark.parametrize("on", [None, "local"])
def test_the_local_rehearsal_holds_no_lock_stronger_than_access_share_on_production(
    world: World, capsys: pytest.CaptureFixture[str], on: str | None
) -> None:
    """A release whose last migration holds ACCESS EXCLUSIVE on a production table for half
    a second:
    the sampler sees it on production when the rehearsal runs there (the control: the
    sampler can see a strong lock), and sees nothing stronger than ACCESS SHARE (pg_dump's)
    with --rehearse-on local."""
    add_staging_migration(
        world,
        "0012_slow_note",
        [
            'ALTER TABLE "case_classification_results" ADD COLUMN "note" text;',
            "SELECT pg_sleep(0.5);",
        ],
    )
    with LockSampler(world.database_url) as sampler:
        code, document = (
            rehearse_default(world, capsys) if on is None else rehearse(world, capsys, on)
        )
    assert code == 0, document["plan"]
    assert sampler.samples > 0
    if on is None:
        assert ("AccessExclusiveLock", "case_classification_results") in sampler.seen
    else:
        assert sampler.modes <= {"AccessShareLock"}, sampler.seen
        assert "AccessShareLock" in sampler.modes  # it did watch pg_dump read the schema


def test_pg_dump_waits_for_its_locks_no_longer_than_the_lock_bound(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A session holds ACCESS EXCLUSIVE on a production table: the local rehearsal gives up
    after the lock bound instead of queueing behind it (and making traffic queue behind it)."""
    before = everything(world)
    with table_locked(world.database_url, "case_classification_results", "nightly rebuild"):
        argv = [*world.rehearse_argv("local"), "--rehearsal-lock-timeout", "300ms", "--json"]
        code = run(argv)
    captured = capsys.readouterr()
    assert code == 30, captured.err
    assert "pg_dump waited 0.3s for ACCESS SHARE on a table it reads" in captured.err
    assert "nightly rebuild" in captured.err  # who holds the lock
    assert "ACCESS EXCLUSIVE on public.case_classification_results" in captured.err
    assert "local schema-only copy" in json.loads(captured.out)["rehearsed_on"]
    assert everything(world) == before
