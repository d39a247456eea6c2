"""Resume trusts the world, not the run's notes: what someone undid while the run was down
is seen, and the run either does it again or halts; it never reports success over it.

Each test stops a real ``orchestrator deploy`` at an audit event (see ``tests/test_resume.py``)
and changes the world behind its back: the dump, the tracking rows, the remote branch, the
pull request, the clone. Then it either lets the process go on (SIGCONT: the guard right
after the pause must read the change) or kills it and resumes. Each asserts the exit code
and the guard event in the audit trail that halted the run. ``tests/test_guard_mutations.py``
runs several of them against mutants of the guards and of the observations they read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.audit import read_events
from orchestrator.engine.rollback import rollback_plan
from orchestrator.engine.run import resume, rollback
from orchestrator.errors import ExitCode, UsageError
from orchestrator.runs import RunRecord
from orchestrator.sandbox.release import git
from tests.drizzle_helpers import tracking_rows
from tests.neon_world import neon_world
from tests.release_world import World, make_the_release_code_only, revert_the_release
from tests.test_github_pr import environ as pr_environ
from tests.test_github_pr import pr_world
from tests.test_resume import (
    assert_converged,
    deploy_process,
    kill,
    only_run,
    wait_stopped,
)


def reset_origin_main(world: World, commit: str) -> None:
    """Someone else force-resets origin's main (the release vanishes from production)."""
    git(world.repo.origin, "update-ref", "refs/heads/main", commit)


def events_of(world: World, record: RunRecord) -> list[dict[str, Any]]:
    return read_events(world.store.audit_path(record.run_id))


def guard_verdicts(events: list[dict[str, Any]], guard: str) -> list[bool]:
    """Every verdict of ``guard`` in the audit trail, in order."""
    return [bool(e["ok"]) for e in events if e["event"] == "guard" and e["guard"] == guard]


def assert_halted_by(
    world: World, record: RunRecord, code: ExitCode, guard: str, stopped_in: str
) -> None:
    """Halted with ``code`` in ``stopped_in``, right after ``guard`` said no (the audit
    trail's last guard verdict), with a rollback plan."""
    assert record.state == "halted", (record.state, record.halt_reason)
    assert record.exit_code == int(code), record.halt_reason
    assert record.steps.halt.stopped_in == stopped_in, record.halt_reason
    assert record.rollback_plan, "a halt prints the concrete rollback plan"
    events = events_of(world, record)
    last_guard = [e for e in events if e["event"] == "guard"][-1]
    assert (last_guard["guard"], last_guard["ok"]) == (guard, False), last_guard
    assert guard_verdicts(events, guard)[-1] is False


def assert_plan_leaves_the_code(world: World, record: RunRecord) -> None:
    """The target no longer holds the release: the plan (as the halt printed it, as ``show``
    rebuilds it) reverts no code, says the code is gone and leaves the database to decide;
    ``rollback`` reverts nothing, and is not refused either."""
    for plan in (
        record.rollback_plan,
        rollback(record.run_id, world.store, world.interaction()).plan,
    ):
        assert plan[0].startswith("Code: the release is no longer on origin/main"), plan
        assert not [line for line in plan if "git " in line or "rollback " + record.run_id in line]
        assert any(line.startswith("Database: ") for line in plan), plan
    assert only_run(world).steps.rollback is None


def go_on(process: subprocess.Popen[bytes]) -> int:
    """Let a stopped deploy continue (SIGCONT) to its end; its exit code."""
    process.send_signal(signal.SIGCONT)
    process.communicate()
    return process.returncode


def spoil(dump: Path, how: str) -> None:
    """Someone deletes the dump, or changes it by one byte."""
    if how == "deleted":
        dump.unlink()
    else:
        with dump.open("ab") as handle:
            handle.write(b"\0")


def planned_hashes_tracked(world: World, record: RunRecord) -> set[str]:
    planned = {p.hash for p in record.planned}
    return planned & {h for _id, h, _c in tracking_rows(world.database_url)}


@pytest.mark.parametrize("how", ["deleted", "appended"])
def test_dump_spoiled_after_backup_checked_resume_never_migrates(world: World, how: str) -> None:
    dumps = world.use_pg_dump()
    main_before = world.origin_main()
    process = deploy_process(world, "transition:backup_checked")
    wait_stopped(process)
    kill(process)
    dump = Path(str(only_run(world).steps.backup.path))
    spoil(dump, how)

    record = resume(None, world.store, world.interaction())
    assert_halted_by(world, record, ExitCode.GUARD_FAILED, "backup_before_migrating", "validated")
    assert "the way back is gone" in str(record.halt_reason)
    events = events_of(world, record)
    assert "applying_migration" not in [e["event"] for e in events]
    assert not planned_hashes_tracked(world, record), "migrated without an intact backup"
    assert world.origin_main() == main_before
    # Resuming again without the dump put back halts again, still before migrating.
    again = resume(record.run_id, world.store, world.interaction())
    assert again.exit_code == int(ExitCode.GUARD_FAILED)
    assert not planned_hashes_tracked(world, again)
    assert dumps.exists()


@pytest.mark.parametrize("how", ["deleted", "appended"])
def test_dump_spoiled_before_the_backup_guard_halts_in_pending(world: World, how: str) -> None:
    world.use_pg_dump()
    process = deploy_process(world, "step_end:backup")
    wait_stopped(process)
    spoil(Path(str(only_run(world).steps.backup.path)), how)

    assert go_on(process) == int(ExitCode.GUARD_FAILED)
    record = only_run(world)
    assert_halted_by(world, record, ExitCode.GUARD_FAILED, "backup_recorded", "pending")
    assert record.steps.validation is None


def test_tracking_rows_deleted_between_migrate_and_its_guard_halt_partial(world: World) -> None:
    process = deploy_process(world, "step_end:migrate")
    wait_stopped(process)
    planned = {p.hash for p in only_run(world).planned}
    delete_tracking_rows(world, planned)

    assert go_on(process) == int(ExitCode.PARTIAL)
    record = only_run(world)
    assert_halted_by(world, record, ExitCode.PARTIAL, "migration_recorded", "validated")
    assert "does not track every migration" in str(record.halt_reason)


def test_tracking_rows_deleted_after_migrated_halt_partial_on_resume(world: World) -> None:
    record = resume_without_the_planned_rows(world, "transition:migrated")
    assert_halted_by(world, record, ExitCode.PARTIAL, "migration_recorded", "migrated")
    assert not planned_hashes_tracked(world, record)


def resume_without_the_planned_rows(world: World, pause: str) -> RunRecord:
    """Kill a deploy paused at ``pause``, delete its planned migrations' tracking rows, and
    resume it: the resumed record."""
    process = deploy_process(world, pause)
    wait_stopped(process)
    kill(process)
    planned = {p.hash for p in only_run(world).planned}
    delete_tracking_rows(world, planned)
    return resume(None, world.store, world.interaction())


def delete_tracking_rows(world: World, hashes: set[str]) -> None:
    with psycopg.connect(world.database_url) as conn:
        conn.execute(
            "DELETE FROM drizzle.__drizzle_migrations WHERE hash = ANY(%s)", (list(hashes),)
        )


def test_resume_of_a_monitored_run_halts_when_its_migrations_were_undone(world: World) -> None:
    process = deploy_process(world, "transition:monitored")
    wait_stopped(process)
    kill(process)
    delete_tracking_rows(world, {p.hash for p in only_run(world).planned})
    record = resume(None, world.store, world.interaction())
    assert record.state == "halted", "succeeded while production lacks the release's migrations"
    assert "no longer holds its migrations" in str(record.halt_reason)


def test_killed_after_the_merge_then_the_branch_reset_halts_before_the_monitor(
    world: World,
) -> None:
    main_before = world.origin_main()
    process = deploy_process(world, "transition:merged")
    wait_stopped(process)
    kill(process)
    released = world.origin_main()
    reset_origin_main(world, main_before)

    record = resume(None, world.store, world.interaction())
    assert_halted_by(world, record, ExitCode.GUARD_FAILED, "merge_pushed", "merged")
    assert "no longer on origin/main" in str(record.halt_reason)
    events = events_of(world, record)
    resumed = [e["event"] for e in events][[e["event"] for e in events].index("run_resumed") :]
    assert "check" not in resumed, "a monitor window ran for a release no longer on the remote"
    assert world.origin_main() == main_before  # nothing pushed behind the operator's back
    assert_plan_leaves_the_code(world, record)

    # The colleague puts the release back: resumed, it succeeds, and its plan reverts it.
    reset_origin_main(world, released)
    record = resume(None, world.store, world.interaction())
    assert record.state == "succeeded", record.halt_reason
    assert any("git push origin main" in line for line in rollback_plan(record))


def test_push_undone_before_its_guard_is_not_taken_for_pushed(world: World) -> None:
    main_before = world.origin_main()
    process = deploy_process(world, "step_end:merge")
    wait_stopped(process)
    reset_origin_main(world, main_before)

    assert go_on(process) == int(ExitCode.GUARD_FAILED)
    record = only_run(world)
    assert_halted_by(world, record, ExitCode.GUARD_FAILED, "merge_pushed", "revalidated")
    assert "not on the remote target branch" in str(record.halt_reason)
    assert world.origin_main() == main_before
    assert_plan_leaves_the_code(world, record)


def test_rollback_looks_at_the_target_again_after_the_release_was_put_back(world: World) -> None:
    """The halt saw the release gone; a colleague put it back since: rollback reverts it."""
    main_before = world.origin_main()
    process = deploy_process(world, "step_end:merge")
    wait_stopped(process)
    released = world.origin_main()
    reset_origin_main(world, main_before)
    assert go_on(process) == int(ExitCode.GUARD_FAILED)
    assert only_run(world).steps.halt.release_gone

    reset_origin_main(world, released)
    result = rollback(only_run(world).run_id, world.store, world.interaction())
    assert result.reverted_commit is not None, result.plan
    assert world.origin_main() != released  # the revert is pushed on top of it


def test_a_history_rewritten_under_the_release_keeps_it(world: World) -> None:
    """Someone rewrites the target's history (a reworded commit, force-pushed) keeping the
    release's files: the release is not gone, and the plan still reverts it."""
    main_before = world.origin_main()
    process = deploy_process(world, "step_end:merge")
    wait_stopped(process)
    tree = git(world.repo.origin, "rev-parse", f"{world.origin_main()}^{{tree}}")
    rewritten = git(world.repo.origin, "commit-tree", tree, "-p", main_before, "-m", "reworded")
    reset_origin_main(world, rewritten)
    assert go_on(process) == int(ExitCode.GUARD_FAILED)
    record = only_run(world)
    assert not record.steps.halt.release_gone
    assert any("git " in line for line in record.rollback_plan), record.rollback_plan


@pytest.mark.parametrize("migrations", [True, False], ids=["migrations", "code-only"])
def test_release_reverted_before_the_finish_guard_is_not_a_success(
    world: World, migrations: bool
) -> None:
    """A colleague's ``git revert`` keeps the release's commit in main's history: ancestry
    alone would call it still released. Main's journal no longer ships the release's
    migrations; a release without any leaves it as it was, and what says it was reverted is
    that every file the release changed is back as it was before it."""
    if not migrations:
        make_the_release_code_only(world)
    process = deploy_process(world, "step_end:monitor")
    wait_stopped(process)
    planned = [m.tag for m in only_run(world).planned]
    revert = revert_the_release(world)
    if migrations:
        journal = (world.repo.migrations / "meta" / "_journal.json").relative_to(world.repo.clone)
        assert planned[-1] not in world.origin_file(journal.as_posix())  # main no longer ships it
    else:
        assert planned == [] and "tunedClassifier" not in world.origin_file("app.ts")

    assert go_on(process) == int(ExitCode.GUARD_FAILED)
    record = only_run(world)
    assert_halted_by(world, record, ExitCode.GUARD_FAILED, "merge_pushed", "monitored")
    assert "ships other migrations than it or undid its changes" in str(record.halt_reason)
    assert world.origin_main() == revert
    assert_plan_leaves_the_code(world, record)


def test_a_later_commit_on_a_release_without_migrations_still_ships_it(world: World) -> None:
    """A colleague's commit on top that changes the release's file again is no revert."""
    make_the_release_code_only(world)
    process = deploy_process(world, "step_end:monitor")
    wait_stopped(process)
    clone = world.repo.clone
    git(clone, "fetch", "--quiet", "origin")
    git(clone, "switch", "--quiet", "-C", "main", "origin/main")
    (clone / "app.ts").write_text("export const classify = (c: Case) => retunedClassifier(c);\n")
    git(clone, "commit", "--quiet", "-am", "Retune the classifier")
    git(clone, "push", "--quiet", "origin", "main")

    assert go_on(process) == 0, only_run(world).halt_reason
    assert only_run(world).state == "succeeded"


@pytest.mark.parametrize("migrations", [True, False], ids=["migrations", "code-only"])
def test_resume_after_the_release_was_reverted_is_refused(world: World, migrations: bool) -> None:
    if not migrations:
        make_the_release_code_only(world)
    process = deploy_process(world, "transition:live")
    wait_stopped(process)
    kill(process)
    revert = revert_the_release(world)

    with pytest.raises(UsageError, match="the target branch main was pushed by someone else"):
        resume(None, world.store, world.interaction())
    record = only_run(world)
    assert record.state == "live" and record.steps.monitor is None
    assert events_of(world, record)[-1]["event"] == "resume_refused"
    assert world.origin_main() == revert


@pytest.mark.parametrize("clone", ["kept", "synced", "recloned"])
def test_killed_after_the_push_was_recorded_then_reset_is_not_pushed_again(
    world: World, clone: str
) -> None:
    """The colleague's reset is theirs to undo, whether or not the operator's clone still
    holds the merge the remote lost (``synced``: reset to origin's main; ``recloned``: a
    fresh clone, without the reflog of its push)."""
    main_before = world.origin_main()
    process = deploy_process(world, "step_end:merge")
    wait_stopped(process)
    kill(process)
    reset_origin_main(world, main_before)
    app = world.repo.clone
    if clone == "synced":
        git(app, "fetch", "--quiet", "origin")
        git(app, "switch", "--quiet", "main")
        git(app, "reset", "--quiet", "--hard", "origin/main")
    elif clone == "recloned":
        shutil.rmtree(app)
        git(world.root, "clone", "--quiet", "--no-local", str(world.repo.origin), str(app))

    record = resume(None, world.store, world.interaction())
    # The merge step's postcondition reads the remote: not there; the record holds the push,
    # so the step halts (not a guard) rather than push the release again unreviewed.
    assert record.state == "halted", record.halt_reason
    assert record.exit_code == int(ExitCode.GUARD_FAILED)
    assert record.steps.halt.stopped_in == "revalidated"
    assert record.rollback_plan, "a halt prints the concrete rollback plan"
    assert "someone removed the release from origin/main" in str(record.halt_reason)
    events = events_of(world, record)
    resumed = events[[e["event"] for e in events].index("run_resumed") :]
    assert not guard_verdicts(resumed, "merge_pushed"), "the step halted, not the guard"
    assert world.origin_main() == main_before
    assert_plan_leaves_the_code(world, record)


def test_killed_after_an_unrecorded_push_then_reset_is_not_pushed_again(world: World) -> None:
    main_before = world.origin_main()
    process = deploy_process(world, "pushed")
    wait_stopped(process)
    kill(process)
    assert only_run(world).steps.merge is None, "killed before the push was recorded"
    released = world.origin_main()
    reset_origin_main(world, main_before)

    record = resume(None, world.store, world.interaction())
    # The clone's reflog of origin/main says its push landed ("update by push"): the release
    # was undone by someone since. The run halts with the plan rather than push it again.
    assert record.state == "halted", record.halt_reason
    assert record.exit_code == int(ExitCode.GUARD_FAILED)
    assert record.steps.halt.stopped_in == "revalidated"
    assert record.rollback_plan, "a halt prints the concrete rollback plan"
    assert "commits that are not on origin/main" in str(record.halt_reason)
    assert world.origin_main() == main_before
    assert git(world.repo.clone, "rev-parse", "main") == released  # the clone kept it


def test_tracking_rows_deleted_before_revalidate_halt_partial_with_the_plan(
    world: World,
) -> None:
    record = resume_without_the_planned_rows(world, "step_end:migrate")
    # migrate's postcondition reads the rows: gone, so it runs again; the migrator refuses
    # the partial state it finds (its own check, not a guard), and nothing is applied.
    assert record.state == "halted"
    assert record.exit_code == int(ExitCode.PARTIAL)
    assert record.steps.halt.stopped_in == "validated"
    assert record.rollback_plan, "a halt prints the concrete rollback plan"
    assert not planned_hashes_tracked(world, record)
    # The way back was there, so the step acted and the migrator refused: not a guard's halt.
    last_guard = [e for e in events_of(world, record) if e["event"] == "guard"][-1]
    assert (last_guard["guard"], last_guard["ok"]) == ("backup_before_migrating", True)
    assert "refusing to migrate a partial state" in str(record.halt_reason)


def test_killed_right_after_the_dump_was_renamed_adopts_it(world: World) -> None:
    dumps = world.use_pg_dump()
    main_before = world.origin_main()
    process = deploy_process(world, "dump_renamed")
    wait_stopped(process)
    kill(process)
    interrupted = only_run(world)
    assert interrupted.steps.backup is None  # renamed, not yet recorded
    dump = dumps / f"{interrupted.run_id}.dump"
    assert dump.is_file()
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()

    record = resume(None, world.store, world.interaction())
    assert_converged(world, record, main_before)
    assert record.steps.backup.adopted is True
    assert record.steps.backup.sha256 == digest
    assert sorted(p.name for p in dumps.iterdir()) == [dump.name]


def test_a_recorded_dump_changed_before_backup_checked_is_moved_aside_and_taken_again(
    world: World,
) -> None:
    dumps = world.use_pg_dump()
    main_before = world.origin_main()
    process = deploy_process(world, "step_end:backup")
    wait_stopped(process)
    kill(process)
    first = only_run(world).steps.backup
    dump = Path(str(first.path))
    spoil(dump, "appended")
    changed = dump.read_bytes()

    record = resume(None, world.store, world.interaction())
    assert_converged(world, record, main_before)
    assert record.steps.backup.sha256 == hashlib.sha256(dump.read_bytes()).hexdigest()
    aside = [p for p in dumps.iterdir() if p.name.startswith(f"{dump.name}.moved-")]
    assert len(aside) == 1 and aside[0].read_bytes() == changed  # never deleted
    events = [e["event"] for e in events_of(world, record)]
    assert "backup_moved_aside" in events


def test_killed_during_pg_dump_resumes_with_one_complete_dump_and_no_orphan(
    world: World,
) -> None:
    dumps = world.use_pg_dump()
    main_before = world.origin_main()
    # An open transaction holding a table keeps pg_dump waiting for its lock: "mid-dump".
    blocker = psycopg.connect(world.database_url)
    blocker.execute("LOCK TABLE case_classifications IN ACCESS EXCLUSIVE MODE")
    try:
        process = deploy_process(world, pause_at="never")
        dump_pid = wait_for_child(process, "pg_dump")
        kill(process)
        # pg_dump waits for the blocker's lock: it ends only if it is killed with the
        # deploy, and a survivor keeps the test waiting here (no clock).
        wait_gone(dump_pid)
    finally:
        blocker.rollback()
        blocker.close()

    record = resume(None, world.store, world.interaction())
    assert_converged(world, record, main_before)
    files = sorted(p.name for p in dumps.iterdir())
    assert files == [f"{record.run_id}.dump"], files  # one dump, no partial left behind


def wait_for_child(process: subprocess.Popen[bytes], name: str) -> int:
    """The pid of ``process``'s child ``name`` once it runs; fails if ``process`` ends first.
    No clock: one or the other happens, however slow the machine is."""
    while True:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            command = stat[stat.index("(") + 1 : stat.rindex(")")]
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if command == name and parent == process.pid:
                return int(entry.name)
        if process.poll() is not None:
            raise AssertionError(f"deploy exited {process.returncode} before starting {name}")
        time.sleep(0.05)


def wait_gone(pid: int) -> None:
    """Wait until process ``pid`` has ended (a zombie has)."""
    while True:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                return
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.05)


def test_source_commit_gone_from_the_clone_before_the_backup_guard_halts(world: World) -> None:
    process = deploy_process(world, "step_end:backup")
    wait_stopped(process)
    # Someone rewrites the operator's clone: the pinned commit is no longer in it.
    clone = world.repo.clone
    git(clone, "branch", "-D", "staging")
    git(clone, "update-ref", "-d", "refs/remotes/origin/staging")
    (clone / ".git" / "FETCH_HEAD").unlink(missing_ok=True)
    git(clone, "reflog", "expire", "--expire=now", "--all")
    git(clone, "gc", "--prune=now", "--quiet")
    commit = str(only_run(world).source_commit)
    assert subprocess.run(["git", "cat-file", "-e", commit], cwd=clone).returncode != 0

    assert go_on(process) == int(ExitCode.GUARD_FAILED)
    record = only_run(world)
    assert_halted_by(world, record, ExitCode.GUARD_FAILED, "preflight_passed", "pending")


KEY = "napi_k3y_never_printed_0123456789"


def test_neon_backup_branch_deleted_after_backup_checked_resume_never_migrates(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with neon_world(world, KEY) as neon:
        monkeypatch.setenv("NEON_API_KEY", KEY)
        process = deploy_process(world, "transition:backup_checked")
        wait_stopped(process)
        kill(process)
        branch = str(only_run(world).steps.backup.branch_id)
        del neon.branches[branch]  # someone deleted it in the console

        record = resume(
            None,
            world.store,
            world.interaction(environ={"DATABASE_URL": world.database_url, "NEON_API_KEY": KEY}),
        )
    assert_halted_by(world, record, ExitCode.GUARD_FAILED, "backup_before_migrating", "validated")
    assert not planned_hashes_tracked(world, record), "migrated without a backup branch"


def test_pull_request_reopened_before_its_guard_is_not_taken_for_merged(
    tmp_path: Path, baseline_url: str
) -> None:
    with pr_world(tmp_path, baseline_url) as (world, github):

        def reopen_after_merge(event: dict[str, Any]) -> None:
            if event.get("event") == "step_end" and event.get("step") == "merge":
                for pull in github.pulls.values():  # GitHub says: not merged (any more)
                    pull.update(merged=False, state="open")

        record = world.deploy(environ=pr_environ(world, github), console=reopen_after_merge)
    assert_halted_by(world, record, ExitCode.GUARD_FAILED, "merge_pushed", "revalidated")
