"""orchestrator deploy end to end: real PostgreSQL, a real bare origin and clone, a real
local health endpoint."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.audit import read_events
from orchestrator.cli import run
from orchestrator.drizzle.journal import read_journal
from orchestrator.engine.run import resume, rollback
from orchestrator.errors import ExitCode, UsageError
from orchestrator.sandbox.pg import EmbeddedPostgres
from orchestrator.sandbox.release import git
from tests.conftest import suite_shadow
from tests.drizzle_helpers import schema_fingerprint, tracking_rows
from tests.lock_holder import table_locked
from tests.pg_urls import with_user
from tests.playbooks import write_playbook
from tests.release_world import (
    TRANSITIONS_OF_A_FULL_DEPLOY,
    World,
    build_world,
    migrate_baseline,
    transitions,
)


def test_full_deploy_from_needs_migration_to_succeeded(world: World) -> None:
    before = world.origin_main()
    record = world.deploy()
    assert record.state == "succeeded", record.halt_reason
    assert record.exit_code == 0
    assert transitions(record) == TRANSITIONS_OF_A_FULL_DEPLOY
    assert record.steps.migrate.tags == [
        "0009_fat_kulan_gath",
        "0010_new_colleen_wing",
        "0011_cute_skin",
    ]
    assert record.steps.validation.status == "NEEDS_MIGRATION"
    assert record.steps.revalidate.status == "SAFE"
    assert record.steps.backup.kind == "restore_point"
    assert record.steps.backup.wal_lsn
    assert len(tracking_rows(world.database_url)) == 12
    # origin/main now holds staging's pinned commit
    assert world.origin_main() != before
    assert record.source_commit == git(world.repo.origin, "rev-parse", "staging")
    assert "portfolioClassifier" in world.origin_file("app.ts")
    assert record.steps.monitor.healthy and record.steps.monitor.rounds >= 2
    assert world.health.requests >= 2
    # the record on disk is the one returned
    assert world.store.load(record.run_id).to_json() == record.to_json()


def test_audit_trail_has_every_transition_and_no_password(
    tmp_path: Path, database_url: str
) -> None:
    secret = "Sup3rS3cretPw"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE deployer LOGIN SUPERUSER PASSWORD '{secret}'".encode())
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET password_encryption = 'scram-sha-256'")
        url = with_user(database_url, "deployer", secret)
        console: list[dict[str, object]] = []
        with build_world(tmp_path, url, duration="300ms", interval="100ms") as w:
            record = w.deploy(console=console.append)
        store = w.store
        assert record.state == "succeeded", record.halt_reason
        audit = store.audit_path(record.run_id)
        events = read_events(audit)
        logged = [
            (e["trigger"], e["source"], e["dest"]) for e in events if e["event"] == "transition"
        ]
        assert logged == TRANSITIONS_OF_A_FULL_DEPLOY
        names = {e["event"] for e in events}
        assert {
            "run_started",
            "step_start",
            "step_end",
            "guard",
            "check",
            "transition",
            "run_succeeded",
        } <= names
        for path in store.run_dir(record.run_id).rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
        assert secret not in json.dumps(console)
        assert all(e["run_id"] == record.run_id for e in events)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY deployer")
            conn.execute("DROP ROLE deployer")


def test_safe_database_skips_migrate(world: World) -> None:
    migrate_baseline(world.database_url, world.repo)  # no-op; then apply the release by hand
    from orchestrator.db.migrator import MigrateOptions
    from orchestrator.db.retry import RetryPolicy
    from orchestrator.migrate import migrate_database

    git(world.repo.clone, "switch", "staging")
    migrate_database(
        world.database_url,
        read_journal(world.repo.migrations),
        MigrateOptions(),
        confirm=lambda _r: True,
        retry=RetryPolicy.none(),
        shadow=suite_shadow(),
    )
    git(world.repo.clone, "switch", "main")
    rows = tracking_rows(world.database_url)

    record = world.deploy()
    assert record.state == "succeeded", record.halt_reason
    assert ("skip_migrate", "validated", "revalidated") in transitions(record)
    assert "migrated" not in [t.dest for t in record.transitions]
    assert record.steps.migrate.applied == []
    assert tracking_rows(world.database_url) == rows
    # A fresh run found nothing "already done": there was no earlier attempt.
    events = read_events(world.store.audit_path(record.run_id))
    assert not [e for e in events if e["event"] == "step_already_done"]
    assert record.steps.migrate.note is None


def test_partial_database_halts_before_any_change(world: World) -> None:
    with psycopg.connect(world.database_url) as conn:  # half of 0009, by hand
        conn.execute('CREATE TABLE "app_settings" ("key" text PRIMARY KEY, "value" text)')
    before_db = schema_fingerprint(world.database_url)
    before_git = world.origin_main()
    record = world.deploy()
    assert record.state == "halted"
    assert record.exit_code == 20
    assert "PARTIAL_MIGRATION" in (record.halt_reason or "")
    assert schema_fingerprint(world.database_url) == before_db
    assert world.origin_main() == before_git
    assert any("nothing was merged" in line for line in record.rollback_plan)
    assert any("applied no migration" in line for line in record.rollback_plan)


def test_merge_conflict_halts_in_preflight_with_everything_as_it_was(world: World) -> None:
    clone = world.repo.clone
    (clone / "app.ts").write_text("export const classify = hotfix;\n")
    git(clone, "commit", "-am", "Hotfix on main")
    git(clone, "push", "origin", "main")
    before_db = schema_fingerprint(world.database_url)
    before_origin = world.origin_main()
    head, status = git(clone, "rev-parse", "HEAD"), git(clone, "status", "--porcelain")

    record = world.deploy()
    assert record.state == "halted" and record.exit_code == 21
    assert "app.ts" in (record.halt_reason or "")
    assert [t.dest for t in record.transitions] == ["halted"]
    assert record.steps.backup is None
    assert schema_fingerprint(world.database_url) == before_db
    assert world.origin_main() == before_origin
    assert git(clone, "rev-parse", "HEAD") == head
    assert git(clone, "status", "--porcelain") == status
    assert git(clone, "branch", "--show-current") == "main"


def test_rejected_push_halts(world: World) -> None:
    hook = world.repo.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = world.origin_main()
    record = world.deploy()
    assert record.state == "halted" and record.exit_code == 21
    assert record.steps.halt.stopped_in == "revalidated"
    assert world.origin_main() == before
    # the database was migrated: the plan says so and names the restore point
    plan = "\n".join(record.rollback_plan)
    assert "0011_cute_skin" in plan and record.steps.backup.wal_lsn in plan
    assert "nothing was merged or pushed" in plan

    # Once the push is possible again, resume picks up where the run stopped.
    hook.unlink()
    resumed = resume(record.run_id, world.store, world.interaction())
    assert resumed.state == "succeeded", resumed.halt_reason
    assert world.origin_main() == resumed.steps.merge.pushed_commit != before
    assert [t.trigger for t in resumed.transitions][-5:] == [
        "resume",
        "merge",
        "go_live",
        "monitor",
        "finish",
    ]
    assert len(tracking_rows(world.database_url)) == 12
    assert resumed.halt_reason is None and resumed.rollback_plan == []


def test_production_down_before_the_deploy_halts_in_preflight_with_nothing_changed(
    world: World,
) -> None:
    world.health.status = 503
    before = world.origin_main()
    fingerprint = schema_fingerprint(world.database_url)
    record = world.deploy()
    assert record.state == "halted" and record.exit_code == 21
    assert "already unhealthy before the deploy" in str(record.halt_reason)
    assert record.steps.backup is None and record.steps.migrate is None
    assert schema_fingerprint(world.database_url) == fingerprint
    assert world.origin_main() == before


def break_production_once_live(world: World) -> Callable[[dict[str, Any]], None]:
    """A console callback that makes the health endpoint fail once the release is live."""

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "transition" and event.get("dest") == "live":
            world.health.status = 503

    return on_event


def test_unhealthy_monitor_produces_rollback_plan_and_rollback_reverts(world: World) -> None:
    before = world.origin_main()
    record = world.deploy(console=break_production_once_live(world))
    assert record.state == "halted" and record.exit_code == 22
    assert record.steps.monitor.healthy is False
    assert record.steps.monitor.ended_early is True
    assert "monitor unhealthy" in (record.halt_reason or "")
    assert "(allowed 0)" in (record.halt_reason or "")
    plan = "\n".join(record.rollback_plan)
    merge = record.steps.merge
    # The release fast-forwarded main: its range is undone as one commit (revert_commands).
    assert merge.fast_forward and "git push origin main" in plan
    assert (
        f"git cherry-pick \"$(git commit-tree '{merge.previous_target_commit}^{{tree}}' "
        f"-p {merge.pushed_commit} " in plan
    )
    assert record.steps.backup.wal_lsn in plan

    released_tree = git(world.repo.origin, "rev-parse", "main^{tree}")
    result = rollback(record.run_id, world.store, world.interaction())
    assert result.reverted_commit == world.origin_main()
    assert git(world.repo.origin, "rev-parse", "main^{tree}") != released_tree
    assert git(world.repo.origin, "rev-parse", "main^{tree}") == git(
        world.repo.origin, "rev-parse", f"{before}^{{tree}}"
    )
    events = read_events(world.store.audit_path(record.run_id))
    assert any(e["event"] == "rollback_pushed" for e in events)


def test_declined_migration_halts_with_nothing_changed(world: World) -> None:
    before = schema_fingerprint(world.database_url)
    asked: list[str] = []

    def decline(question: str) -> bool:
        asked.append(question)
        return False

    record = world.deploy(confirm=decline)
    assert record.state == "halted" and record.exit_code == 21
    assert any("0009_fat_kulan_gath" in q for q in asked)
    assert schema_fingerprint(world.database_url) == before


def test_interrupted_deploy_resumes_without_applying_twice(world: World) -> None:
    class Crash(KeyboardInterrupt):
        pass

    def crash_after_migrate(event: dict[str, object]) -> None:
        if event.get("event") == "step_end" and event.get("step") == "migrate":
            raise Crash()

    interrupted = world.deploy(console=crash_after_migrate)  # migrated: not "nothing changed"
    assert interrupted.exit_code == ExitCode.PARTIAL
    assert interrupted.halt_reason == (
        "interrupted by SIGINT halfway through the release (state validated): "
        f"resume with `orchestrator resume {interrupted.run_id}`"
    )
    assert interrupted.rollback_plan  # reported as a halt is, with what to undo
    [record] = world.store.list()
    # the migration committed, the transition was not recorded: the record says "validated"
    assert record.state == "validated" and record.exit_code == ExitCode.PARTIAL
    assert len(tracking_rows(world.database_url)) == 12

    resumed = resume(record.run_id, world.store, world.interaction())
    assert resumed.state == "succeeded", resumed.halt_reason
    assert (resumed.exit_code, resumed.halt_reason, resumed.rollback_plan) == (0, None, [])
    assert len(tracking_rows(world.database_url)) == 12
    events = read_events(world.store.audit_path(record.run_id))
    assert any(e["event"] == "step_already_done" and e["step"] == "migrate" for e in events)
    assert resumed.steps.migrate.tags == [
        "0009_fat_kulan_gath",
        "0010_new_colleen_wing",
        "0011_cute_skin",
    ]


def test_cli_deploy_runs_show_and_exit_codes(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    state = str(world.root / ".orchestrator")
    code = run(["deploy", "--playbook", str(world.playbook), "--state-dir", state])
    assert code == 2 and "pass --yes" in capsys.readouterr().err
    assert world.store.list() == []

    code = run(
        ["deploy", "--playbook", str(world.playbook), "--yes", "--json", "--state-dir", state]
    )
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["state"] == "succeeded"

    assert run(["runs", "--state-dir", state]) == 0
    assert document["run_id"] in capsys.readouterr().out
    assert run(["show", document["run_id"][:12], "--state-dir", state]) == 0
    timeline = capsys.readouterr().out
    assert "revalidated → merged" in timeline and "succeeded" in timeline

    released = world.origin_main()
    assert run(["rollback", document["run_id"], "--state-dir", state]) == 2
    assert "pass --yes" in capsys.readouterr().err and world.origin_main() == released
    assert run(["rollback", document["run_id"], "--yes", "--state-dir", state]) == 0
    output = capsys.readouterr().out
    assert "reverted and pushed" in output and world.origin_main() in output
    assert "Database: this run applied 0009_fat_kulan_gath" in output
    reverted = world.origin_main()
    # The release was reverted: the listing and the timeline say so, not plainly "succeeded".
    assert run(["runs", "--state-dir", state]) == 0
    assert "(rolled back)" in " ".join(capsys.readouterr().out.split())
    assert run(["show", document["run_id"], "--state-dir", state]) == 0
    timeline = capsys.readouterr().out
    assert f"ROLLBACK PUSHED; reverted commit {reverted}" in timeline
    assert "succeeded (rolled back) (exit 0)" in timeline
    # Not twice (a second revert is empty, or reverts the revert): the plan says it was done.
    assert run(["rollback", document["run_id"], "--yes", "--state-dir", state]) == 0
    assert f"by rollback: commit {reverted}." in capsys.readouterr().out
    assert world.origin_main() == reverted


def test_a_deploy_from_a_folder_not_named_in_utf8_is_bad_input(
    tmp_path: Path,
    baseline_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A release folder named in Latin-1 (Python reads it surrogate-escaped): exit 2 with one
    line naming it, before a run exists (it was an internal error, exit 30)."""
    root = tmp_path / os.fsdecode(b"caf\xe9")
    root.mkdir()
    with build_world(root, baseline_url, at_baseline=True) as world:
        monkeypatch.setenv("DATABASE_URL", baseline_url)
        assert run(world.deploy_argv()) == 2
        err = capsys.readouterr().err
        assert world.store.list() == []
    assert err.startswith("error: cannot record a name that is not UTF-8") and "caf" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.write_text(p.read_text().replace("name:", "nmae:")), "unknown key"),
        (
            lambda p: p.write_text(p.read_text().replace("duration: 200ms", "duration: soon")),
            "monitor.duration",
        ),
        (
            lambda p: p.write_text(p.read_text().replace("url_env: DATABASE_URL", "url_env: NOPE")),
            "$NOPE is not set",
        ),
        (lambda p: p.write_text(p.read_text().replace("repo: app", "repo: nowhere")), "nowhere"),
        (lambda p: p.unlink(), "release.yaml"),
    ],
)
def test_bad_playbook_exits_2_and_changes_nothing(
    world: World,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    edit,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    edit(world.playbook)
    before = (schema_fingerprint(world.database_url), world.origin_main())
    code = run(
        [
            "deploy",
            "--playbook",
            str(world.playbook),
            "--yes",
            "--state-dir",
            str(world.root / ".orchestrator"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert (schema_fingerprint(world.database_url), world.origin_main()) == before
    assert not (world.root / ".orchestrator" / "runs").exists() or world.store.list() == []


def test_server_restarted_mid_deploy_is_survived_by_retries(
    tmp_path: Path, own_cluster: EmbeddedPostgres
) -> None:
    import threading

    from orchestrator.sandbox.pg import create_database

    create_database(own_cluster.url(), "production")
    url = own_cluster.url("production")
    restarted = threading.Event()

    def restart_during_validate(event: dict[str, object]) -> None:
        if (
            event.get("event") == "step_start"
            and event.get("step") == "validate"
            and (not restarted.is_set())
        ):
            restarted.set()
            own_cluster.stop()  # the connection the next step opens is refused
            threading.Timer(0.8, own_cluster.start).start()

    retry = "{attempts: 8, initial: 0.2s, max: 1s}"
    with build_world(tmp_path, url, duration="300ms", interval="100ms", retry=retry) as w:
        record = w.deploy(console=restart_during_validate)
    store = w.store
    assert restarted.is_set()
    assert record.state == "succeeded", record.halt_reason
    retries = [e for e in read_events(store.audit_path(record.run_id)) if e["event"] == "retry"]
    assert retries, "the outage must have been retried"
    assert len(tracking_rows(url)) == 12


def test_pg_dump_backup_is_written_and_verified(world: World) -> None:
    dumps = world.use_pg_dump()
    record = world.deploy()
    assert record.state == "succeeded", record.halt_reason
    backup = record.steps.backup
    dump = Path(backup.path)
    assert dump.parent == dumps and dump.stat().st_size == backup.bytes
    assert backup.toc_entries > 10
    assert any(
        f"orchestrator rollback {record.run_id} --restore-database" in line
        for line in __import__("orchestrator.engine.rollback", fromlist=["x"]).rollback_plan(record)
    )


def test_a_pg_dump_backup_waits_for_a_locked_table_no_longer_than_its_bound(
    database_url: str, tmp_path: Path
) -> None:
    from orchestrator.engine.steps.backup import pg_dump
    from orchestrator.errors import DatabaseError

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    target = tmp_path / "backup.dump"
    with (
        table_locked(database_url, "orders", "nightly rebuild"),
        pytest.raises(DatabaseError) as raised,
    ):
        pg_dump(database_url, target, lock_wait=0.2)
    message = str(raised.value)
    assert "pg_dump waited 0.2s for ACCESS SHARE" in message
    assert "nightly rebuild" in message and "ACCESS EXCLUSIVE on public.orders" in message
    assert not target.exists() and list(tmp_path.iterdir()) == []  # no partial dump left
    assert pg_dump(database_url, target).toc_entries > 0  # the lock gone, the dump is taken


def test_manual_backup_needs_a_confirmation(world: World) -> None:
    write_playbook(
        world.playbook,
        repo=world.repo,
        health_url=world.health.url,
        backup="{kind: manual}",
        duration="200ms",
        interval="100ms",
    )
    before = schema_fingerprint(world.database_url)
    # --yes (confirm always True) cannot vouch for a backup, and nobody is there to ask
    with pytest.raises(UsageError, match="--backup-confirmed"):
        world.deploy()
    assert world.store.list() == []

    asked: list[str] = []
    refused = world.deploy(ask=lambda q: asked.append(q) or False)
    assert refused.state == "halted" and refused.exit_code == 21
    assert "no backup confirmed" in (refused.halt_reason or "")
    assert asked and "backup" in asked[0]
    assert schema_fingerprint(world.database_url) == before

    confirmed = world.deploy(ask=lambda q: True)
    assert confirmed.state == "succeeded", confirmed.halt_reason
    assert confirmed.steps.backup.by == "operator"

    vouched = world.deploy(backup_confirmed=True)
    assert vouched.state == "succeeded", vouched.halt_reason
    assert vouched.steps.backup.by == "--backup-confirmed"
