"""Issue 24: resume and rollback you can bet production on, tried against a real PostgreSQL,
a real bare origin (with a pre-receive hook that rejects or stalls pushes) and a real health
endpoint.

- case 1: production is read again before merge, the release gate and the monitor, on the
  first walk and on resume alike; a resume whose connection string reaches another database
  is refused;
- case 2: a run walks on with the playbook it started with; an edited playbook is named and
  refused (or, told so, the run is closed and a new one started);
- case 4: a run killed mid-push recognises its own merge result in the local clone;
- case 7: an unreadable run record is shown, named by resume, and can be abandoned;
- case 10: the rollback plan of any run can be read without acting;
- case 11: a pre-receive hook's own message reaches the error.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import psycopg.sql
import pytest

from orchestrator.cli import run
from orchestrator.engine.run import resume
from orchestrator.errors import ExitCode, UsageError
from orchestrator.runs import RECORD_FILENAME, new_run_id
from orchestrator.sandbox.pg import create_database, drop_database, with_dbname
from orchestrator.sandbox.release import git
from tests.playbooks import write_playbook
from tests.release_world import World
from tests.test_resume import assert_converged, deploy_process, kill, only_run, wait_stopped
from tests.test_resume_world import (
    assert_halted_by,
    delete_tracking_rows,
    events_of,
    go_on,
)

HOOK_MESSAGE = "GL-HOOK-ERR: main is frozen for the release train"


def pre_receive(world: World, body: str) -> Path:
    """Install origin's pre-receive hook (a shell script body); its path."""
    hook = world.repo.origin / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\n{body}\n")
    hook.chmod(0o755)
    return hook


def reject_pushes(world: World) -> Path:
    return pre_receive(world, f"echo '{HOOK_MESSAGE}' >&2\nexit 1")


def halted_at_merge(world: World) -> str:
    """A deploy that migrated, then had its push rejected (halted in revalidated): its id.
    The hook is removed afterwards: the next push lands."""
    hook = reject_pushes(world)
    record = world.deploy()
    assert record.exit_code == int(ExitCode.GUARD_FAILED), record.halt_reason
    assert record.steps.halt.stopped_in == "revalidated"
    hook.unlink()
    return record.run_id


def test_a_rejected_push_keeps_the_hooks_own_message(world: World) -> None:
    reject_pushes(world)
    record = world.deploy()
    assert record.exit_code == int(ExitCode.GUARD_FAILED)
    assert "push of main to origin rejected" in str(record.halt_reason)
    assert HOOK_MESSAGE in str(record.halt_reason)


# ------------------------------------------------------------------ case 1


def test_migration_undone_while_halted_at_merge_halts_partial_and_pushes_nothing(
    world: World,
) -> None:
    main_before = world.origin_main()
    run_id = halted_at_merge(world)
    planned = {p.hash for p in world.store.load(run_id).planned}
    delete_tracking_rows(world, planned)  # someone undid the migration's tracking

    record = resume(run_id, world.store, world.interaction())
    assert_halted_by(world, record, ExitCode.PARTIAL, "production_holds_release", "revalidated")
    assert "no longer holds exactly the release's migrations" in str(record.halt_reason)
    assert world.origin_main() == main_before, "pushed code whose migration is gone"
    checked = [e for e in events_of(world, record) if e["event"] == "production_checked"]
    assert checked and checked[-1]["status"] != "SAFE"


@pytest.mark.parametrize(
    ("pause_at", "stopped_in"), [("transition:merged", "merged"), ("transition:live", "live")]
)
def test_migration_undone_before_the_release_gate_or_monitor_halts_partial(
    world: World, pause_at: str, stopped_in: str
) -> None:
    process = deploy_process(world, pause_at)
    wait_stopped(process)
    delete_tracking_rows(world, {p.hash for p in only_run(world).planned})

    assert go_on(process) == int(ExitCode.PARTIAL)  # the first walk, not only resume
    record = only_run(world)
    assert_halted_by(world, record, ExitCode.PARTIAL, "production_holds_release", stopped_in)
    names = [e["event"] for e in events_of(world, record)]
    if stopped_in == "live":
        assert "check" not in names, "a monitor window ran over a database without the release"


@pytest.fixture
def other_database(server_url: str) -> Iterator[str]:
    """A second, empty database on the same server."""
    name = f"orch_other_{time.monotonic_ns()}"
    create_database(server_url, name)
    try:
        yield with_dbname(server_url, name)
    finally:
        drop_database(server_url, name)


def test_resume_against_another_database_is_refused(world: World, other_database: str) -> None:
    main_before = world.origin_main()
    run_id = halted_at_merge(world)
    elsewhere = world.interaction(environ={"DATABASE_URL": other_database})

    with pytest.raises(UsageError, match="reaches another database") as refused:
        resume(run_id, world.store, elsewhere)
    assert refused.value.exit_code == ExitCode.USAGE
    assert "database_name was" in str(refused.value)
    assert world.origin_main() == main_before
    with psycopg.connect(other_database) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
            "'information_schema')"
        ).fetchone()
    assert tables == (0,), "the resumed run changed the other database"
    # The right database: the run goes on and succeeds.
    assert resume(run_id, world.store, world.interaction()).state == "succeeded"


def as_neon_branch(world: World, branch: str) -> None:
    """New sessions see the settings a Neon compute of project ``p-1``, branch ``branch``
    shows (``neon.tenant_id``, ``neon.timeline_id``): Neon's branches of one project share
    the system identifier, the database oid and its name."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        for setting, value in (("neon.tenant_id", "p-1"), ("neon.timeline_id", branch)):
            conn.execute(
                psycopg.sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    psycopg.sql.Identifier(str(name[0])),
                    psycopg.sql.Identifier(setting),
                    psycopg.sql.Literal(value),
                )
            )


def test_resume_on_another_neon_branch_of_the_project_is_refused(world: World) -> None:
    as_neon_branch(world, "tl-production")
    main_before = world.origin_main()
    run_id = halted_at_merge(world)
    pinned = world.store.load(run_id).database
    assert (pinned["neon_project"], pinned["neon_branch"]) == ("p-1", "tl-production")
    as_neon_branch(world, "tl-preview")  # the same oid and name: only Neon tells them apart

    with pytest.raises(UsageError, match="neon_branch was tl-production, is tl-preview"):
        resume(run_id, world.store, world.interaction())
    assert world.origin_main() == main_before


# ------------------------------------------------------------------ case 2


def test_an_edited_playbook_is_named_and_refused_then_comments_are_no_change(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main_before = world.origin_main()
    git(world.repo.origin, "branch", "prod", "main")
    run_id = halted_at_merge(world)
    text = world.playbook.read_text()
    world.playbook.write_text(text.replace("target: main", "target: prod"))

    with pytest.raises(UsageError, match=re.escape("git.target: 'main' -> 'prod'")) as refused:
        resume(run_id, world.store, world.interaction())
    assert refused.value.exit_code == ExitCode.USAGE
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    code, out = cli(world, capsys, "resume", run_id, "--yes")
    assert code == int(ExitCode.USAGE) and "git.target: 'main' -> 'prod'" in out
    assert "--new-run" in out
    assert git(world.repo.origin, "rev-parse", "prod") == main_before
    assert world.origin_main() == main_before

    # Comments and layout are not changes: the pinned playbook still says the same.
    world.playbook.write_text("# reviewed by ops\n" + text)
    record = resume(run_id, world.store, world.interaction())
    assert record.state == "succeeded", record.halt_reason
    staging = git(world.repo.origin, "rev-parse", "staging")
    git(world.repo.origin, "merge-base", "--is-ancestor", staging, "main")
    assert git(world.repo.origin, "rev-parse", "prod") == main_before, "pushed to prod"


def test_a_pinned_playbook_with_a_secret_in_a_url_resumes_and_never_shows_it(
    world: World,
) -> None:
    token = "chk-5b1d-token"
    write_playbook(
        world.playbook,
        repo=world.repo,
        health_url=f"{world.health.url}?token={token}",
        duration="300ms",
        interval="100ms",
    )
    run_id = halted_at_merge(world)
    record_text = world.store.record_path(run_id).read_text()
    assert token not in record_text, "the record keeps the playbook's secret"

    text = world.playbook.read_text()
    world.playbook.write_text(text.replace(f"token={token}", "token=chk-rotated"))
    with pytest.raises(UsageError, match=re.escape("monitor.http[0].url")) as refused:
        resume(run_id, world.store, world.interaction())
    assert token not in str(refused.value) and "chk-rotated" not in str(refused.value)

    world.playbook.write_text(text)  # the pinned playbook again: its digest says so
    record = resume(run_id, world.store, world.interaction())
    assert record.state == "succeeded", record.halt_reason


def test_resume_new_run_closes_the_old_run_and_starts_with_the_file(world: World) -> None:
    main_before = world.origin_main()
    git(world.repo.origin, "branch", "prod", "main")
    run_id = halted_at_merge(world)
    world.playbook.write_text(world.playbook.read_text().replace("target: main", "target: prod"))

    record = resume(run_id, world.store, world.interaction(new_run=True))
    assert record.run_id != run_id and record.state == "succeeded", record.halt_reason
    assert world.store.abandoned(run_id) is not None
    staging = git(world.repo.origin, "rev-parse", "staging")
    git(world.repo.origin, "merge-base", "--is-ancestor", staging, "prod")
    assert world.origin_main() == main_before
    with pytest.raises(UsageError, match="abandoned"):
        resume(run_id, world.store, world.interaction())


def test_a_refused_new_run_leaves_the_old_run_resumable(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed once live, staging deleted as after any merged release, the playbook edited:
    ``resume --new-run`` is refused by the new run's checks and closes nothing, so the old
    run, its playbook put back, still resumes and watches the release it shipped."""
    process = deploy_process(world, "transition:live")
    wait_stopped(process)
    kill(process)
    run_id = only_run(world).run_id
    git(world.repo.origin, "branch", "-D", "staging")
    text = world.playbook.read_text()
    world.playbook.write_text(text.replace("duration: 200ms", "duration: 300ms"))
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    code, out = cli(world, capsys, "resume", run_id, "--new-run", "--yes")
    assert code == int(ExitCode.USAGE) and "branch 'staging' does not exist" in out, out
    assert world.store.abandoned(run_id) is None and len(world.store.list()) == 1
    world.playbook.write_text(text)
    record = resume(run_id, world.store, world.interaction())
    assert record.state == "succeeded", record.halt_reason


# ------------------------------------------------------------------ case 4


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_killed_during_a_slow_push_then_resume_continues_its_own_merge(
    world: World, stop: signal.Signals
) -> None:
    started, go = world.root / "push-started", world.root / "push-go"
    hook = pre_receive(world, f"touch {started}\nwhile [ ! -e {go} ]; do sleep 0.05; done\nexit 1")
    main_before = world.origin_main()
    process = deploy_process(world, "no-pause")
    while not started.exists():  # or the deploy ended (a failure): no clock
        assert process.poll() is None, process.communicate()[1].decode()
        time.sleep(0.05)
    if stop is signal.SIGKILL:
        kill(process)
        local = git(world.repo.clone, "rev-parse", "main")
        assert local != main_before, "the kill left local main at the run's own merge"
    else:
        process.send_signal(stop)
        process.communicate()
        assert process.returncode == int(ExitCode.PARTIAL)  # migrated, not merged: not "2"
    go.touch()  # the stalled push, if still there, is rejected
    hook.unlink()

    record = resume(None, world.store, world.interaction())
    assert_converged(world, record, main_before)
    assert git(world.repo.clone, "rev-parse", "main") == world.origin_main()
    continued = [e for e in events_of(world, record) if e["event"] == "local_merge_continued"]
    # A kill leaves the clone at the run's own merge; SIGTERM's interruption restored it.
    assert len(continued) == (1 if stop is signal.SIGKILL else 0), continued


def test_someone_elses_local_commit_on_main_is_still_refused(world: World) -> None:
    clone = world.repo.clone
    (clone / "hotfix.txt").write_text("not reviewed\n")
    git(clone, "add", "hotfix.txt")
    git(clone, "commit", "-m", "local hotfix")
    main_before = world.origin_main()
    record = world.deploy()
    assert record.exit_code == int(ExitCode.GUARD_FAILED)
    assert "refusing to push unreviewed local commits" in str(record.halt_reason)
    assert world.origin_main() == main_before


# ------------------------------------------------------------------ case 7


def cli(world: World, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = run([*argv, "--state-dir", str(world.store.state_dir)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_truncated_newest_record_is_listed_named_and_abandoned(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    main_before = world.origin_main()
    older = halted_at_merge(world)
    reject_pushes(world)  # until the operator has looked
    # A second later than the halted run, whatever the clock says: ids sort by their time.
    newer = new_run_id(datetime.now(UTC) + timedelta(seconds=1))
    directory = world.store.run_dir(newer)
    directory.mkdir()
    full = world.store.record_path(older).read_bytes().replace(older.encode(), newer.encode())
    (directory / RECORD_FILENAME).write_bytes(full[: len(full) // 2])  # torn by a bad disk

    code, out = cli(world, capsys, "runs")
    assert code == 0
    assert newer in out and "unreadable" in out and older in out
    with pytest.raises(UsageError, match=f"newest run {newer} has an unreadable record"):
        resume(None, world.store, world.interaction())
    assert world.origin_main() == main_before

    code, out = cli(world, capsys, "runs", "abandon", newer)
    assert code == 0 and f"run {newer} abandoned" in out
    code, out = cli(world, capsys, "runs", "--json")
    listed = json.loads(out)
    [unreadable] = listed["unreadable"]
    assert unreadable["run_id"] == newer and unreadable["abandoned"] is not None
    assert [r["run_id"] for r in listed["runs"]] == [older]
    (world.repo.origin / "hooks" / "pre-receive").unlink()
    record = resume(None, world.store, world.interaction())
    assert record.run_id == older and record.state == "succeeded", record.halt_reason


def test_an_abandoned_run_is_not_resumed(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = halted_at_merge(world)
    code, _out = cli(world, capsys, "runs", "abandon", run_id, "--reason", "superseded")
    assert code == 0
    with pytest.raises(UsageError, match="no unfinished run"):
        resume(None, world.store, world.interaction())
    with pytest.raises(UsageError, match="abandoned"):
        resume(run_id, world.store, world.interaction())
    code, out = cli(world, capsys, "runs", "--json")
    [listed] = json.loads(out)["runs"]
    assert listed["state"] == "halted" and listed["abandoned"]["reason"] == "superseded"
    # The audit trail, and so the timeline, say who closed it and why.
    events = events_of(world, world.store.load(run_id))
    [closed] = [e for e in events if e["event"] == "run_abandoned"]
    assert closed["reason"] == "superseded"
    code, out = cli(world, capsys, "show", run_id)
    assert code == 0 and "RUN ABANDONED; reason superseded" in out
    code, out = cli(world, capsys, "show", run_id, "--json")
    assert json.loads(out)["abandoned"]["reason"] == "superseded"


# ------------------------------------------------------------------ case 10


def test_the_plan_of_a_succeeded_run_is_printed_without_acting(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    main_before = world.origin_main()
    record = world.deploy()
    assert record.state == "succeeded", record.halt_reason
    main_after = world.origin_main()

    code, out = cli(world, capsys, "rollback", record.run_id, "--plan")
    assert code == 0, out
    assert "Code: revert the release on main" in out
    assert "Database: this run applied 0009" in out
    code, shown = cli(world, capsys, "show", record.run_id)
    assert code == 0 and "rollback plan:" in shown and "Code: revert the release" in shown
    # No terminal and no --yes: the plan first, then the refusal; nothing is reverted.
    code, out = cli(world, capsys, "rollback", record.run_id)
    assert code == int(ExitCode.USAGE)
    assert out.index("Code: revert the release") < out.index("pass --yes")
    assert world.origin_main() == main_after != main_before
    assert world.store.load(record.run_id).steps.rollback is None


def test_the_plan_of_an_interrupted_run_is_printed_without_acting(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    process = deploy_process(world, "transition:migrated")
    wait_stopped(process)
    kill(process)
    run_id = only_run(world).run_id

    code, out = cli(world, capsys, "rollback", run_id, "--plan")
    assert code == 0, out
    assert "Code: nothing was merged or pushed" in out
    assert "Database: this run applied 0009" in out
    record = only_run(world)
    assert record.state == "migrated" and record.steps.rollback is None
