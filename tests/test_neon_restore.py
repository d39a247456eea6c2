"""``rollback RUN_ID --restore-database`` against the Neon contract double backed by real
PostgreSQL (tests/neon_double.py): each branch is a real database of the test cluster, so a
restore really puts production's schema and tracking rows back.

Also the pure part: which restore a run's record allows, and the typed confirmation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from orchestrator.audit import read_events
from orchestrator.cli import run
from orchestrator.database import validate_database
from orchestrator.db.migrator import MigrateOptions
from orchestrator.errors import UsageError
from orchestrator.neon.restore import check_confirmation, restore_plan
from orchestrator.runs import RunRecord
from tests.conftest import suite_shadow
from tests.drizzle_helpers import schema_fingerprint, tracking_rows
from tests.neon_double import NeonState
from tests.neon_world import neon_world
from tests.release_world import World
from tests.test_resume import staging_journal

__all__ = ["KEY", "backed_neon"]

KEY = "napi_r3store_k3y_never_printed_42"


@pytest.fixture
def backed_neon(
    world: World, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NeonState]:
    """The double, its branches real databases of the test cluster; its ``main`` branch is
    the world's production database; the playbook takes neon_branch backups."""
    production = str(conninfo_to_dict(world.database_url)["dbname"])
    with neon_world(world, KEY, cluster_url=server_url, production=production) as state:
        monkeypatch.setenv("NEON_API_KEY", KEY)
        monkeypatch.setenv("DATABASE_URL", world.database_url)
        yield state


def cli(world: World, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run([*argv, "--state-dir", str(world.store.state_dir)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def deployed(world: World) -> RunRecord:
    record = world.deploy(environ={"DATABASE_URL": world.database_url, "NEON_API_KEY": KEY})
    assert record.state == "succeeded", record.halt_reason
    return record


def verdict(world: World) -> tuple[str, list[str]]:
    report = validate_database(
        world.database_url, staging_journal(world), MigrateOptions(), shadow=suite_shadow()
    )
    return report.status.value, [m.tag for m in report.pending]


def test_restore_brings_production_back_to_before_the_run(
    world: World, backed_neon: NeonState, capsys: pytest.CaptureFixture[str]
) -> None:
    before, rows_before, said_before = (
        schema_fingerprint(world.database_url),
        tracking_rows(world.database_url),
        verdict(world),
    )
    record = deployed(world)
    migrated = schema_fingerprint(world.database_url)
    assert migrated != before and len(tracking_rows(world.database_url)) > len(rows_before)
    # The file changed since (a variable no one set): the restore reads the run's playbook.
    text = world.playbook.read_text()
    world.playbook.write_text(text.replace("url_env: DATABASE_URL", "url_env: UNSET_URL"))

    code, out, err = cli(
        world,
        capsys,
        "rollback",
        record.run_id,
        "--restore-database",
        "--confirm-branch",
        "main",
        "--yes",
        "--json",
    )
    document = json.loads(out)
    restore = document["database_restore"]
    assert restore["verdict_before_run"] == record.steps.validation.status
    assert restore["validation"]["status"] == said_before[0] == "NEEDS_MIGRATION"
    assert code == 10, err  # the verdict's code: the release's migrations are pending again
    assert schema_fingerprint(world.database_url) == before
    assert tracking_rows(world.database_url) == rows_before
    assert verdict(world) == said_before
    assert document["reverted_commit"]  # the code was reverted first

    [sent] = backed_neon.restores
    backup = record.steps.backup
    assert sent == {
        "branch_id": backup.parent_branch_id,
        "source_branch_id": backup.branch_id,
        "source_lsn": backup.lsn,
        "preserve_under_name": f"pre-restore-{record.run_id}",
    }
    # The migrated state is kept as a branch (a real database holding it).
    [kept] = [b for b in backed_neon.branches.values() if b["name"].startswith("pre-restore-")]
    kept_url = backed_neon.backing.url(backed_neon.databases[kept["id"]])  # type: ignore[union-attr]
    assert schema_fingerprint(kept_url) == migrated

    events = [e["event"] for e in read_events(world.store.audit_path(record.run_id))]
    for event in (
        "database_restore_confirmed",
        "database_restore_started",
        "database_restore_finished",
        "database_revalidated",
    ):
        assert event in events
    assert world.store.load(record.run_id).steps.database_restore is not None
    for path in world.store.run_dir(record.run_id).iterdir():
        assert KEY not in path.read_text(errors="replace")
    assert KEY not in out + err


def test_a_restore_whose_answer_is_lost_is_adopted_not_sent_twice(
    world: World, backed_neon: NeonState, capsys: pytest.CaptureFixture[str]
) -> None:
    before = schema_fingerprint(world.database_url)
    record = deployed(world)
    production = record.steps.backup.parent_branch_id
    earlier = backed_neon.operation("start_compute", production)  # not the restore's
    backed_neon.operations[earlier["id"]].update(status="failed", error="compute start failed")
    backed_neon.lost = ["POST /restore"]  # Neon restores, the answer never arrives
    code, out, err = cli(
        world,
        capsys,
        "rollback",
        record.run_id,
        "--restore-database",
        "--confirm-branch",
        "main",
        "--yes",
        "--json",
    )
    assert code == 10, err  # restored, validated: the release's migrations pending again
    assert backed_neon.lost == [] and len(backed_neon.restores) == 1  # exactly one restore
    restores = [r for r in backed_neon.requests if r[0] == "POST" and r[1].endswith("/restore")]
    assert len(restores) == 1
    assert schema_fingerprint(world.database_url) == before
    assert json.loads(out)["database_restore"]["preserved_as"] == f"pre-restore-{record.run_id}"


def test_after_a_code_rollback_the_database_is_restored_and_the_code_left_alone(
    world: World, backed_neon: NeonState, capsys: pytest.CaptureFixture[str]
) -> None:
    # The operator first reverts the code only; the data turns out broken: the restore must
    # not stop at reverting the code again (a second revert is empty, or reverts the revert).
    before = schema_fingerprint(world.database_url)
    record = deployed(world)
    code, _out, err = cli(world, capsys, "rollback", record.run_id, "--yes")
    assert code == 0, err
    rolled = world.store.load(record.run_id).steps.rollback
    assert rolled is not None and rolled.reverted_commit == world.origin_main()
    done = f"Code: reverted at {rolled.at} by rollback: commit {rolled.reverted_commit}."
    code, out, _err = cli(world, capsys, "rollback", record.run_id, "--plan")
    assert code == 0 and done in out and "git push" not in out  # no revert to do again
    restore = ("--restore-database", "--confirm-branch", "main", "--yes")
    code, out, err = cli(world, capsys, "rollback", record.run_id, *restore)
    assert code == 10, err  # restored, validated: the release's migrations pending again
    assert len(backed_neon.restores) == 1 and schema_fingerprint(world.database_url) == before
    assert world.origin_main() == rolled.reverted_commit  # the code was left as it was
    assert world.store.load(record.run_id).steps.rollback == rolled


def test_a_wrong_branch_name_or_no_terminal_changes_nothing(
    world: World, backed_neon: NeonState, capsys: pytest.CaptureFixture[str]
) -> None:
    record = deployed(world)
    migrated, main = schema_fingerprint(world.database_url), world.origin_main()
    requests = len(backed_neon.requests)
    code, _out, err = cli(
        world, capsys, "rollback", record.run_id, "--restore-database", "--confirm-branch", "prod"
    )
    assert code == 2 and "'prod' is not the production branch 'main'" in err
    code, _out, err = cli(world, capsys, "rollback", record.run_id, "--restore-database", "--yes")
    assert code == 2 and "--confirm-branch NAME" in err  # no terminal to type the name at
    assert schema_fingerprint(world.database_url) == migrated
    assert world.origin_main() == main  # not even the code was reverted
    assert backed_neon.requests[requests:] == []  # not one API call
    assert len(err.strip().splitlines()) == 1


def test_restore_database_says_what_to_do_for_other_backups(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    record = world.deploy()  # backup kind restore_point
    assert record.state == "succeeded", record.halt_reason
    main = world.origin_main()
    code, _out, err = cli(
        world, capsys, "rollback", record.run_id, "--restore-database", "--confirm-branch", "main"
    )
    assert code == 2
    assert "restores Neon branch and pg_dump backups only" in err and "restore_point" in err
    assert "Point-in-time restore" in err  # what to do instead
    assert world.origin_main() == main


# --------------------------------------------------------------------------- pure decisions


def record_of(backup: dict[str, Any], applied: list[str]) -> RunRecord:
    record = RunRecord(run_id="20251021T143005Z-3fa9c2", playbook="", name="release")
    # The record as an earlier run's state.json holds it.
    return RunRecord.from_json(
        {
            **record.to_json(),
            "steps": {"backup": backup, "migrate": {"applied": [{"tag": t} for t in applied]}},
        }
    )


NEON_BACKUP = {
    "kind": "neon_branch",
    "project_id": "round-river-123456",
    "branch_id": "br-pre-1",
    "branch_name": "pre-20251021T143005Z-3fa9c2",
    "parent_branch_id": "br-main-1",
    "parent_branch": "main",
    "lsn": "0/1A2B3C",
}


def test_the_restore_plan_of_a_neon_backup_names_the_exact_call() -> None:
    plan = restore_plan(record_of(NEON_BACKUP, ["0009_a", "0010_b"]))
    assert (plan.production, plan.production_id, plan.backup_id, plan.lsn) == (
        "main",
        "br-main-1",
        "br-pre-1",
        "0/1A2B3C",
    )
    assert plan.preserve_as == "pre-restore-20251021T143005Z-3fa9c2"
    assert "undoes 0009_a, 0010_b" in " ".join(plan.lines)
    check_confirmation(plan, "main")
    check_confirmation(plan, " br-main-1 ")
    with pytest.raises(UsageError, match="nothing was restored"):
        check_confirmation(plan, "Main")


def test_no_restore_without_a_neon_backup_or_without_applied_migrations() -> None:
    with pytest.raises(UsageError, match="applied no migration"):
        restore_plan(record_of(NEON_BACKUP, []))
    dump = {"kind": "pg_dump", "path": "/backups/x.dump", "sha256": "ab" * 32}
    with pytest.raises(UsageError, match=r"has pg_dump: .* --restore-database"):
        restore_plan(record_of(dump, ["0009_a"]))
    with pytest.raises(UsageError, match="has no backup"):
        restore_plan(RunRecord(run_id="r", playbook="", name="n"))
