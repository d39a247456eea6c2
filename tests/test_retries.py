"""Every database command rides out a server that comes up late, under one retry policy.

The server is down when the command starts and comes up two seconds later (a Neon compute
waking from suspend looks like this to a client): with ``--retries 5`` each command succeeds,
and so do the dry run and resume under the playbook's retry policy (the same default).
The policy is one: the same default for the CLI and the playbook, exponential with jitter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli import run
from orchestrator.commands import migrate_database
from orchestrator.db.backoff import DEFAULT_ATTEMPTS
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import read_journal
from orchestrator.engine.run import resume
from orchestrator.playbook import RetrySpec
from orchestrator.testing.pg import EmbeddedPostgres, create_database, with_dbname
from orchestrator.testing.release import EXAMPLE_MIGRATIONS
from tests.drizzle_helpers import prefix_folder, run_sql, tracking_rows
from tests.release_world import build_world

LATE_S = 2.0


@pytest.fixture
def late_server(own_cluster: EmbeddedPostgres, tmp_path: Path) -> Iterator[str]:
    """A database with the first 9 migrations applied and the 10th run by hand."""
    create_database(own_cluster.url(), "app")
    url = with_dbname(own_cluster.url(), "app")
    prefix = prefix_folder(EXAMPLE_MIGRATIONS, 9, tmp_path / "prefix")
    migrate_database(
        url, read_journal(prefix), MigrateOptions(), confirm=lambda _r: True, retry=ONCE
    )
    own_cluster.stop()
    starter = threading.Timer(LATE_S, own_cluster.start)
    starter.start()
    try:
        yield url
    finally:
        starter.join()


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
    create_database(own_cluster.url(), "app")
    url = with_dbname(own_cluster.url(), "app")
    prefix = prefix_folder(EXAMPLE_MIGRATIONS, 9, tmp_path / "prefix")
    migrate_database(
        url, read_journal(prefix), MigrateOptions(), confirm=lambda _r: True, retry=ONCE
    )
    run_sql(url, read_journal(EXAMPLE_MIGRATIONS).migrations[9])  # 0009 by hand, untracked
    own_cluster.stop()
    starter = threading.Timer(LATE_S, own_cluster.start)
    starter.start()
    try:
        folder = str(EXAMPLE_MIGRATIONS)
        exit_code = run(
            ["repair", "--yes", "--database-url", url, "--migrations", folder, "--retries", "5"]
        )
    finally:
        starter.join()
    assert exit_code == 10, capsys.readouterr().err  # 0009 tracked; 0010, 0011 pending
    assert len(tracking_rows(url)) == 10


def test_one_default_for_cli_and_playbook_and_waits_are_jittered() -> None:
    assert RetrySpec().attempts == DEFAULT_ATTEMPTS == RetryPolicy().attempts
    policy = RetryPolicy(initial=1.0, max_wait=100.0)
    waits = {round(policy.wait(3), 6) for _ in range(50)}
    assert len(waits) > 1, "no jitter"
    assert all(3.0 <= w <= 5.0 for w in waits)  # 4 s +- 25%


def late(cluster: EmbeddedPostgres) -> threading.Timer:
    """Stop the server now; start it again LATE_S seconds later."""
    cluster.stop()
    starter = threading.Timer(LATE_S, cluster.start)
    starter.start()
    return starter


def test_the_dry_run_rides_out_a_late_server(
    own_cluster: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_database(own_cluster.url(), "app")
    url = with_dbname(own_cluster.url(), "app")
    with build_world(tmp_path, url) as world:
        monkeypatch.setenv("DATABASE_URL", url)
        starter = late(own_cluster)
        try:
            code = run(["deploy", "--playbook", str(world.playbook), "--dry-run", "--json"])
        finally:
            starter.join()
        assert code == 0, capsys.readouterr().err


def test_resume_rides_out_a_late_server(own_cluster: EmbeddedPostgres, tmp_path: Path) -> None:
    create_database(own_cluster.url(), "app")
    url = with_dbname(own_cluster.url(), "app")
    with build_world(tmp_path, url) as world:
        record = world.deploy(confirm=lambda question: "Apply" not in question)  # declined
        assert record.state == "halted"
        starter = late(own_cluster)
        try:
            resumed = resume(record.run_id, world.store, world.interaction())
        finally:
            starter.join()
        assert resumed.state == "succeeded", resumed.halt_reason
        assert len(tracking_rows(url)) == 12
