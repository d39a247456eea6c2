"""Every database command rides out a server that comes up late, under one retry policy.

The server is down when the command starts and comes up a second later (a Neon compute
waking from suspend looks like this to a client): with ``--retries 5`` each command succeeds
and shows each retry on stderr: validate, migrate, plan, inspect, repair, ``deploy`` and its
``--dry-run``, ``resume`` (whose retries also reach the run's audit trail) and the
validation after ``rollback --restore-database`` (Neon restarts the compute to restore it).
``--retries`` overrides the playbook's ``retry.attempts``; a bad value is exit 2. A deadlock
or serialization failure in the migration transaction is retried after validating again.
The policy is one: the same default for the CLI and the playbook, exponential with jitter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.audit import read_events
from orchestrator.cli import run
from orchestrator.db.backoff import DEFAULT_ATTEMPTS
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import read_journal
from orchestrator.engine.run import resume
from orchestrator.playbook import RetrySpec
from orchestrator.sandbox.pg import EmbeddedPostgres, create_database, with_dbname
from orchestrator.sandbox.release import EXAMPLE_MIGRATIONS
from tests.drizzle_helpers import migrate_prefix, run_sql, tracking_rows
from tests.release_world import build_world

LATE_S = 1.0


@pytest.fixture
def late_server(own_cluster: EmbeddedPostgres, tmp_path: Path) -> Iterator[str]:
    """A database with the first 9 migrations applied and the 10th run by hand."""
    url = app_database(own_cluster)
    migrate_prefix(url, EXAMPLE_MIGRATIONS, 9, tmp_path / "prefix")
    with server_late(own_cluster):
        yield url


ONCE = RetryPolicy.none()


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (["validate"], 10),
        (["plan"], 0),
        (["inspect"], 0),
        (["repair", "--dry-run"], 0),
        (["migrate", "--yes"], 0),
    ],
)
def test_a_command_started_while_the_server_is_down_succeeds(
    late_server: str, command: list[str], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    folder = str(EXAMPLE_MIGRATIONS)
    exit_code = run(
        [
            *command,
            "--database-url",
            late_server,
            "--migrations",
            folder,
            "--retries",
            "5",
            "--json",
        ]
    )
    err = capsys.readouterr().err
    assert exit_code == code, err
    assert time.monotonic() - started >= LATE_S * 0.9  # it did wait for the server
    assert "retry" in err.lower() or "retrying" in err.lower()
    if command[0] == "migrate":
        assert len(tracking_rows(late_server)) == 12


def test_repair_retries_its_first_connection_too(
    own_cluster: EmbeddedPostgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = app_database(own_cluster)
    migrate_prefix(url, EXAMPLE_MIGRATIONS, 9, tmp_path / "prefix")
    run_sql(url, read_journal(EXAMPLE_MIGRATIONS).migrations[9])  # 0009 by hand, untracked
    folder = str(EXAMPLE_MIGRATIONS)
    with server_late(own_cluster):
        exit_code = run(
            ["repair", "--yes", "--database-url", url, "--migrations", folder, "--retries", "5"]
        )
    assert exit_code == 10, capsys.readouterr().err  # 0009 tracked; 0010, 0011 pending
    assert len(tracking_rows(url)) == 10


def test_one_default_for_cli_and_playbook_and_waits_are_jittered() -> None:
    assert RetrySpec().attempts == DEFAULT_ATTEMPTS == RetryPolicy().attempts
    policy = RetryPolicy(initial=1.0, max_wait=100.0)
    waits = {round(policy.wait(3), 6) for _ in range(50)}
    assert len(waits) > 1, "no jitter"
    assert all(3.0 <= w <= 5.0 for w in waits)  # 4 s +- 25%


def app_database(cluster: EmbeddedPostgres) -> str:
    """The URL of a new, empty database ``app`` on ``cluster``."""
    create_database(cluster.url(), "app")
    return with_dbname(cluster.url(), "app")


def late(cluster: EmbeddedPostgres) -> threading.Timer:
    """Stop the server now; start it again LATE_S seconds later."""
    cluster.stop()
    starter = threading.Timer(LATE_S, cluster.start)
    starter.start()
    return starter


@contextmanager
def server_late(cluster: EmbeddedPostgres) -> Iterator[None]:
    """:func:`late` for the ``with`` block; leaving it waits until the server is started."""
    starter = late(cluster)
    try:
        yield
    finally:
        starter.join()


def test_the_dry_run_rides_out_a_late_server(
    own_cluster: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = app_database(own_cluster)
    with build_world(tmp_path, url) as world:
        monkeypatch.setenv("DATABASE_URL", url)
        argv = ["deploy", "--playbook", str(world.playbook), "--dry-run", "--json"]
        with server_late(own_cluster):
            code = run([*argv, "--retries", "5"])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "transient failure (attempt 1): " in err  # each retry is shown


def test_resume_rides_out_a_late_server(own_cluster: EmbeddedPostgres, tmp_path: Path) -> None:
    url = app_database(own_cluster)
    with build_world(tmp_path, url) as world:
        record = world.deploy(confirm=lambda question: "Apply" not in question)  # declined
        assert record.state == "halted"
        with server_late(own_cluster):
            resumed = resume(record.run_id, world.store, world.interaction())
        assert resumed.state == "succeeded", resumed.halt_reason
        assert len(tracking_rows(url)) == 12


# -- the migration transaction: deadlocks and serialization failures --------------------------

# Fails its first run on production only: a sequence's nextval survives the rollback of the
# transaction. The sequence is production's (made by the test), not the folder's: where it is
# missing (the shadow the folder is replayed on) the block does nothing.
FAIL_ONCE = (
    "DO $$ BEGIN IF to_regclass('public.attempts') IS NOT NULL THEN "
    "IF nextval(to_regclass('public.attempts')) = 1 THEN "
    "RAISE EXCEPTION 'provoked by the test' USING ERRCODE = '{code}'; END IF; END IF; END $$"
)


@pytest.mark.parametrize("code", ["40P01", "40001"])
@pytest.mark.parametrize("retries", [3, 1])
def test_a_deadlock_or_serialization_failure_in_the_migration_is_retried(
    database_url: str,
    tmp_path: Path,
    code: str,
    retries: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import psycopg

    from bench.folders import write_drizzle_folder

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE public.attempts")
    folder = write_drizzle_folder(
        tmp_path / "drizzle",
        [
            ("0000_first", ["CREATE TABLE first_table (id integer PRIMARY KEY)"]),
            ("0001_flaky", [FAIL_ONCE.format(code=code), "CREATE TABLE flaky (id integer)"]),
        ],
    )
    argv = ["migrate", "--yes", "--database-url", database_url, "--migrations", str(folder)]
    exit_code = run([*argv, "--retries", str(retries)])
    err = capsys.readouterr().err
    with psycopg.connect(database_url) as conn:
        runs = conn.execute("SELECT last_value FROM public.attempts").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('first_table', 'flaky')"
        ).fetchone()
    if retries == 1:  # no second attempt: the failure is the answer, nothing is applied
        assert exit_code == 21, err  # the migration failed, rolled back
        assert "transient failure" not in err and code in err
        assert tracking_rows(database_url) == [] and tables == (0,)
        return
    assert exit_code == 0, err
    assert "transient failure (attempt 1): " in err and "retrying in" in err
    assert len(tracking_rows(database_url)) == 2  # applied exactly once, both migrations
    assert tables == (2,)
    # It ran again: a failed run (the migrator then replays it, rolled back, only to name
    # the failing statement), then the committed one.
    assert runs is not None and runs[0] >= 2


# -- --retries on the run commands -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["deploy", "--playbook", "release.yaml", "--yes"],
        ["deploy", "--playbook", "release.yaml", "--dry-run"],
        ["resume", "--yes"],
        ["rollback", "20251021T143005Z-3fa9c2", "--restore-database", "--confirm-branch", "m"],
    ],
)
@pytest.mark.parametrize("bad", ["0", "-1", "x"])
def test_run_commands_refuse_a_bad_retries_value(
    argv: list[str], bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    code = run([*argv, "--retries", bad, "--state-dir", str(state)])
    assert code == 2
    assert "--retries" in capsys.readouterr().err
    assert not state.exists()  # nothing was started


def test_rollback_takes_retries_only_with_restore_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        ["rollback", "20251021T143005Z-3fa9c2", "--retries", "3", "--state-dir", str(tmp_path)]
    )
    assert code == 2
    assert "--retries only goes with --restore-database" in capsys.readouterr().err


def test_deploy_retries_overrides_the_playbook(
    own_cluster: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The playbook says 5 attempts (the default); --retries 1 means one, with no wait."""
    url = app_database(own_cluster)
    with build_world(tmp_path, url) as world:
        monkeypatch.setenv("DATABASE_URL", url)
        own_cluster.stop()
        try:
            code = run(world.deploy_argv("--retries", "1"))
        finally:
            own_cluster.start()
        err = capsys.readouterr().err
        assert code == 30, err
        # Each wait is announced on the line of the retry it precedes: none.
        assert "transient failure" not in err, "it retried when told not to"
        assert world.store.list() == []


def test_deploy_via_the_cli_rides_out_a_late_server_and_says_so(
    own_cluster: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = app_database(own_cluster)
    with build_world(tmp_path, url) as world:
        monkeypatch.setenv("DATABASE_URL", url)
        started = time.monotonic()
        with server_late(own_cluster):
            code = run(world.deploy_argv("--retries", "5", "--json"))
        err = capsys.readouterr().err
        assert code == 0, err
        assert time.monotonic() - started >= LATE_S * 0.9
        assert "transient failure (attempt 1): " in err  # each retry is shown
        assert len(tracking_rows(url)) == 12


def test_resume_via_the_cli_rides_out_a_late_server_and_records_the_retries(
    own_cluster: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = app_database(own_cluster)
    with build_world(tmp_path, url) as world:
        record = world.deploy(confirm=lambda question: "Apply" not in question)  # declined
        assert record.state == "halted"
        monkeypatch.setenv("DATABASE_URL", url)
        argv = ["resume", record.run_id, "--yes", "--retries", "5", "--json"]
        with server_late(own_cluster):
            code = run([*argv, "--state-dir", str(world.store.state_dir)])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "transient failure (attempt 1): " in err
        events = read_events(world.store.audit_path(record.run_id))
        retries = [e for e in events if e["event"] == "retry"]
        assert retries and retries[0]["attempt"] == 1  # the run's audit trail has them too
        assert len(tracking_rows(url)) == 12


def test_restore_database_rides_out_the_compute_restart(
    own_cluster: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Neon restarts production's compute to restore it: the validation after the restore
    finds the server down for a second and, with --retries 5, waits for it."""
    from tests.neon_world import neon_world

    key = "napi_late_restore_key_77"
    url = app_database(own_cluster)
    with (
        build_world(tmp_path, url) as world,
        neon_world(world, key, cluster_url=own_cluster.url(), production="app") as neon,
    ):
        record = world.deploy(environ={"DATABASE_URL": url, "NEON_API_KEY": key})
        assert record.state == "succeeded", record.halt_reason
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("NEON_API_KEY", key)
        restarts: list[threading.Timer] = []
        restore = neon.restore

        def restore_then_restart(branch_id: str, body: dict[str, object]) -> None:
            restore(branch_id, body)
            restarts.append(late(own_cluster))

        neon.restore = restore_then_restart  # type: ignore[method-assign]
        try:
            code = run(
                [
                    "rollback",
                    record.run_id,
                    "--restore-database",
                    "--confirm-branch",
                    "main",
                    "--yes",
                    "--retries",
                    "5",
                    "--state-dir",
                    str(world.store.state_dir),
                ]
            )
        finally:
            for starter in restarts:
                starter.join()
        err = capsys.readouterr().err
        assert restarts, "the restore never reached the double"
        assert code == 10, err  # the release's migrations are pending again
        assert "transient failure (attempt 1): " in err
        events = read_events(world.store.audit_path(record.run_id))
        assert any(e["event"] == "retry" for e in events)
        assert events[-1]["event"] == "database_revalidated"
