"""``deploy --dry-run --rehearse-on``: rehearsals that do not touch production.

``local`` copies production's schema and tracking rows into a throwaway local PostgreSQL and
migrates that copy for real; a URL names another database (a staging copy) to migrate for
real. Production keeps no lock of the rehearsal's, and each rehearsal predicts the exit code
the real deploy then ends with: for a clean release, a failing migration, a failing monitor.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from orchestrator.cli import run
from orchestrator.testing.pg import create_database, with_dbname
from tests.drizzle_helpers import tracking_rows
from tests.release_world import World, migrate_baseline, world
from tests.test_rehearsal import everything, push_to_staging

__all__ = ["world"]


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
    """Locks held in production by any session of ours (the rehearsal's are gone or never)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT a.application_name, l.locktype, l.mode FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.application_name LIKE 'orchestrator%%' AND a.pid <> pg_backend_pid()"
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
    assert everything(world) == before
    assert real_deploy_code(world) == code


def test_local_copy_predicts_a_failing_monitor(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.health.status = 503
    code, document = rehearse(world, capsys, "local")
    assert code == 22, document["plan"]
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
