"""Database faults during a deploy, on a cluster of the test's own: restarts (fast and
immediate) during validate, migrate and monitor; a server down before the deploy starts; a
killed backend mid-migration; lock contention; a migration failing on its third statement.

Each fault is injected from the audit trail's console callback, which runs right after the
named event is on disk, so it lands exactly where the test says.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator.audit import read_events
from orchestrator.cli import run
from orchestrator.database import validate_database
from orchestrator.db.migrator import MigrateOptions
from orchestrator.engine.run import resume
from orchestrator.engine.settings import journal_at
from orchestrator.gitrepo import open_repo
from orchestrator.runs import RunRecord
from orchestrator.sandbox.pg import EmbeddedPostgres, create_database
from orchestrator.sandbox.release import git
from orchestrator.validation import Verdict
from tests.conftest import suite_shadow
from tests.drizzle_helpers import schema_fingerprint, tracking_rows
from tests.release_world import World, build_world

RETRY = "{attempts: 8, initial: 0.2s, max: 1s}"
Event = dict[str, object]


@pytest.fixture
def production(own_cluster: EmbeddedPostgres) -> str:
    create_database(own_cluster.url(), "production")
    return own_cluster.url("production")


@pytest.fixture
def world(tmp_path: Path, production: str) -> Iterator[World]:
    with build_world(
        tmp_path, production, duration="400ms", interval="100ms", retry=RETRY
    ) as built:
        yield built


def at(event: str, detail: str | None, action: Callable[[], None]) -> Callable[[Event], None]:
    """A console callback running ``action`` once, right after ``event`` (with ``detail``)."""
    done = threading.Event()

    def callback(payload: Event) -> None:
        if done.is_set() or payload.get("event") != event:
            return
        if detail is not None and detail not in (
            payload.get("step"),
            payload.get("tag"),
            payload.get("dest"),
        ):
            return
        done.set()
        action()

    callback.fired = done  # type: ignore[attr-defined]
    return callback


def release_journal(world: World):  # type: ignore[no-untyped-def]
    commit = git(world.repo.origin, "rev-parse", "staging")
    return journal_at(open_repo(world.repo.clone), commit, world.repo.migrations, "staging")


def assert_safe_once(world: World) -> None:
    """Every migration applied, every hash tracked exactly once."""
    journal = release_journal(world)
    report = validate_database(world.database_url, journal, MigrateOptions(), shadow=suite_shadow())
    assert report.status is Verdict.SAFE, report.recommendation
    hashes = Counter(h for _id, h, _c in tracking_rows(world.database_url))
    assert sorted(hashes) == sorted(m.hash for m in journal.migrations)
    assert set(hashes.values()) == {1}


def finish(world: World, record: RunRecord) -> RunRecord:
    """A run that halted cleanly must complete on resume."""
    if record.state != "succeeded":
        assert record.state in ("halted", "failed") and record.exit_code is not None
        record = resume(record.run_id, world.store, world.interaction())
    assert record.state == "succeeded", record.halt_reason
    return record


def events(world: World, record: RunRecord) -> list[str]:
    return [str(e["event"]) for e in read_events(world.store.audit_path(record.run_id))]


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_during_validate(world: World, own_cluster: EmbeddedPostgres, mode: str) -> None:
    # The server goes away as validate starts and comes back 0.6 s later: validate's
    # connection attempts are refused meanwhile, and retried.
    def outage() -> None:
        own_cluster.stop(mode)
        threading.Timer(0.6, own_cluster.start).start()

    hook = at("step_start", "validate", outage)
    record = finish(world, world.deploy(console=hook))
    assert hook.fired.is_set()  # type: ignore[attr-defined]
    names = events(world, record)
    assert "retry" in names
    # The run's lock session died with the server: it was taken again before migrate acted.
    assert "run_lock_reacquired" in names
    assert_safe_once(world)


def restart(cluster: EmbeddedPostgres, mode: str) -> None:
    """Stop the server (``fast``, or ``immediate``: a crash), then start it on the same port."""
    cluster.stop(mode)
    cluster.start()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_during_migrate(world: World, own_cluster: EmbeddedPostgres, mode: str) -> None:
    observed: list[Verdict] = []

    def restart_mid_transaction() -> None:
        restart(own_cluster, mode)
        # The migration transaction was open (0009 applied, 0010 starting): it is gone
        # entirely, the database is exactly as before the migration.
        report = validate_database(
            world.database_url, release_journal(world), MigrateOptions(), shadow=suite_shadow()
        )
        observed.append(report.status)

    hook = at("applying_migration", "0010_new_colleen_wing", restart_mid_transaction)
    record = finish(world, world.deploy(console=hook))
    assert observed == [Verdict.NEEDS_MIGRATION]
    assert "retry" in events(world, record)
    assert_safe_once(world)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_during_monitor(world: World, own_cluster: EmbeddedPostgres, mode: str) -> None:
    hook = at("check", None, lambda: restart(own_cluster, mode))
    record = finish(world, world.deploy(console=hook))
    assert hook.fired.is_set()  # type: ignore[attr-defined]
    assert_safe_once(world)
    pushed = record.steps.merge.pushed_commit
    assert git(world.repo.origin, "rev-parse", "main") == pushed


def test_server_down_before_the_deploy_is_waited_for(
    world: World, own_cluster: EmbeddedPostgres
) -> None:
    own_cluster.stop()
    threading.Timer(1.5, own_cluster.start).start()
    started = time.monotonic()
    record = world.deploy()
    assert time.monotonic() - started >= 1.5
    assert record.state == "succeeded", record.halt_reason
    assert_safe_once(world)


def test_server_down_for_good_gives_up_with_error(
    world: World,
    own_cluster: EmbeddedPostgres,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world.playbook.write_text(
        world.playbook.read_text().replace(RETRY, "{attempts: 3, initial: 0.1s, max: 0.2s}")
    )
    own_cluster.stop()
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    code = run(world.deploy_argv())
    err = capsys.readouterr().err
    assert code == 30, err
    assert "connection refused" in err.lower() or "cannot connect" in err.lower()
    *retries, last = err.strip().splitlines()
    assert last.startswith("error: ")  # one error line, after one line per retry (3 attempts)
    assert [line.split(":")[0] for line in retries] == [
        "transient failure (attempt 1)",
        "transient failure (attempt 2)",
    ]
    # The playbook's waits, not the default's: it gives up no later than they say.
    waits = [float(line.rsplit("retrying in ", 1)[1].rstrip("s")) for line in retries]
    assert all(wait <= 0.2 for wait in waits), retries
    assert world.store.list() == []  # no run was started


def test_backend_killed_mid_migration_is_retried_after_revalidation(world: World) -> None:
    def terminate_the_migration() -> None:
        with psycopg.connect(world.database_url, autocommit=True) as admin:
            killed = admin.execute(
                # production's own database: the shadow, on the same server, works in
                # databases of its own
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'orchestrator run %' "
                "AND state = 'idle in transaction' AND datname = current_database()"
            ).fetchall()
        assert len(killed) == 1

    hook = at("applying_migration", "0011_cute_skin", terminate_the_migration)
    record = world.deploy(console=hook)
    assert record.state == "succeeded", record.halt_reason
    names = events(world, record)
    assert "retry" in names
    assert names.count("applying_migration") == 6  # 3 rolled back by the kill, 3 committed
    assert_safe_once(world)


def test_lock_contention_gives_up_after_lock_timeout_and_names_the_holder(
    world: World,
) -> None:
    # Long enough that the traffic below surely sees the migration waiting.
    world.playbook.write_text(
        world.playbook.read_text().replace("lock_timeout: 5s", "lock_timeout: 2s, lock_retries: 0")
    )
    before = schema_fingerprint(world.database_url)
    traffic_waits: list[float] = []
    deployed = threading.Event()

    def traffic_behind_the_migration() -> None:
        # A query arriving while the migration waits for its lock queues behind it; it must
        # not wait longer than the migration's lock_timeout.
        with psycopg.connect(world.database_url, autocommit=True) as conn:
            waiting = "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            while not conn.execute(waiting).fetchone():
                if deployed.wait(0.01):
                    return  # the wait was missed: no traffic_waits, the test says so
            started = time.monotonic()
            conn.execute("SELECT count(*) FROM case_classification_results")
            traffic_waits.append(time.monotonic() - started)

    with psycopg.connect(world.database_url, application_name="reporting job") as holder:
        holder.execute("SELECT * FROM case_classification_results LIMIT 1")  # AccessShareLock
        traffic = threading.Thread(target=traffic_behind_the_migration)
        hook = at("applying_migration", "0011_cute_skin", traffic.start)
        record = world.deploy(console=hook)
        deployed.set()
        traffic.join()
        holder.rollback()

    assert record.state == "failed" and record.exit_code == 21
    reason = record.halt_reason or ""
    assert "lock timeout" in reason and "0011_cute_skin, statement 1" in reason
    assert (
        "reporting job" in reason and "ACCESS SHARE on public.case_classification_results" in reason
    )
    assert schema_fingerprint(world.database_url) == before  # 0009 and 0010 rolled back too
    assert traffic_waits and traffic_waits[0] < 2.0 + 1.0


def push_migration(world: World, tag: str, sql: str) -> None:
    clone = world.repo.clone
    git(clone, "switch", "staging")
    journal_path = world.repo.migrations / "meta" / "_journal.json"
    journal = json.loads(journal_path.read_text())
    last = journal["entries"][-1]
    journal["entries"].append({**last, "idx": last["idx"] + 1, "when": 1761300000000, "tag": tag})
    journal_path.write_text(json.dumps(journal, indent=2) + "\n")
    (world.repo.migrations / f"{tag}.sql").write_text(sql)
    git(clone, "add", "-A")
    git(clone, "commit", "-m", f"migration {tag}")
    git(clone, "push", "origin", "staging")
    git(clone, "switch", "main")


def test_a_migration_failing_on_its_third_statement_leaves_nothing(world: World) -> None:
    push_migration(
        world,
        "0012_three_steps",
        'CREATE TABLE "step_one" ("id" serial PRIMARY KEY);--> statement-breakpoint\n'
        'ALTER TABLE "step_one" ADD COLUMN "two" integer;--> statement-breakpoint\n'
        'ALTER TABLE "step_one" ADD COLUMN "two" integer;\n',
    )
    before = schema_fingerprint(world.database_url)
    main = git(world.repo.origin, "rev-parse", "main")
    record = world.deploy()
    assert record.state == "failed" and record.exit_code == 21
    reason = record.halt_reason or ""
    assert "0012_three_steps, statement 3" in reason
    assert 'column "two" of relation "step_one" already exists' in reason and "[42701]" in reason
    assert schema_fingerprint(world.database_url) == before  # nothing of 0009-0012 remains
    assert git(world.repo.origin, "rev-parse", "main") == main  # the code was not deployed
