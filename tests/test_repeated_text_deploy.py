"""A release repeating the text of a migration production already tracks, through the deploy:
drizzle writes a tracking row per journal entry, so the run's guards count rows per hash as
validate does; a row of the same hash left by the earlier entry is not the new entry's.
Real PostgreSQL, real git, a real paused (or killed) deploy."""

from __future__ import annotations

import psycopg
import pytest

from orchestrator.audit import read_events
from orchestrator.cli import run
from orchestrator.drizzle.journal import hash_sql
from orchestrator.errors import ExitCode
from orchestrator.runs import RunRecord
from tests.drizzle_helpers import tracking_rows
from tests.release_world import World, add_staging_migration
from tests.test_resume import deploy_process, kill, wait_stopped
from tests.test_resume_world import assert_halted_by, go_on

# Re-run whenever tables were added: the same text, so the same hash, each time.
GRANT = 'GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO PUBLIC;'
GRANT_HASH = hash_sql(GRANT + "\n")  # the file add_staging_migration writes
AGAIN = "0013_grant_again"


def released_with_the_grant(world: World) -> None:
    """Production after a deploy of the release with 0012_grant (GRANT) at its end."""
    add_staging_migration(world, "0012_grant", [GRANT])
    first = world.deploy()
    assert first.state == "succeeded", first.halt_reason


def grant_rows(world: World) -> int:
    """How many tracking rows have the hash of GRANT's text."""
    return [h for _id, h, _c in tracking_rows(world.database_url)].count(GRANT_HASH)


def latest_run(world: World) -> RunRecord:
    return max(world.store.list(), key=lambda r: r.created_at)


def test_a_release_that_only_repeats_a_tracked_text_is_migrated(world: World) -> None:
    released_with_the_grant(world)
    add_staging_migration(world, AGAIN, [GRANT])

    record = world.deploy()
    assert record.state == "succeeded", record.halt_reason
    assert record.steps.migrate is not None and record.steps.migrate.tags == [AGAIN]
    assert record.steps.migrate.note is None  # applied by this run, not "found applied"
    assert len(tracking_rows(world.database_url)) == 14
    assert grant_rows(world) == 2


def test_the_repeated_entrys_row_deleted_before_its_guard_halts_partial(world: World) -> None:
    released_with_the_grant(world)
    add_staging_migration(world, AGAIN, [GRANT])
    process = deploy_process(world, "step_end:migrate")
    wait_stopped(process)
    with psycopg.connect(world.database_url) as conn:  # 0013's row; 0012's stays
        conn.execute(
            "DELETE FROM drizzle.__drizzle_migrations WHERE id = "
            "(SELECT max(id) FROM drizzle.__drizzle_migrations)"
        )

    assert go_on(process) == int(ExitCode.PARTIAL)
    record = latest_run(world)
    assert_halted_by(world, record, ExitCode.PARTIAL, "migration_recorded", "validated")
    assert "does not track every migration" in str(record.halt_reason)


def test_resume_refuses_when_someone_tracked_a_repeated_text_it_did_not_plan(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    released_with_the_grant(world)
    add_staging_migration(world, "0013_priority", ['ALTER TABLE "case_threads" ADD "p" text;'])
    process = deploy_process(world, "transition:validated")
    wait_stopped(process)
    kill(process)
    # Meanwhile a colleague's branch re-runs the grant, as drizzle does: the text, its row.
    before = len(tracking_rows(world.database_url))
    with psycopg.connect(world.database_url) as conn:
        conn.execute(GRANT)
        conn.execute(
            'INSERT INTO drizzle.__drizzle_migrations ("hash", "created_at") VALUES (%s, %s)',
            (GRANT_HASH, 1_900_000_000_000),
        )
    assert grant_rows(world) == 2 and len(tracking_rows(world.database_url)) == before + 1
    monkeypatch.setenv("DATABASE_URL", world.database_url)

    code = run(["resume", "--yes", "--state-dir", str(world.store.state_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "1 migration(s) this run did not plan" in err
    record = latest_run(world)
    assert record.state == "validated"
    assert read_events(world.store.audit_path(record.run_id))[-1]["event"] == "resume_refused"
