"""Resume trusts the world, not the run's notes: what someone undid while the run was down
is seen, and the run either does it again or halts; it never reports success over it.

Each test kills a real ``orchestrator deploy`` (see ``tests/test_resume.py``), changes the
world behind its back, then resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from orchestrator.engine.run import resume
from orchestrator.errors import ExitCode
from orchestrator.testing.release import git, write_playbook
from tests.drizzle_helpers import tracking_rows
from tests.release_world import World, world
from tests.test_resume import (
    assert_converged,
    deploy_process,
    kill,
    only_run,
    wait_stopped,
)

__all__ = ["world"]


def reset_origin_main(world: World, commit: str) -> None:
    """Someone else force-resets origin's main (the release vanishes from production)."""
    git(world.repo.origin, "update-ref", "refs/heads/main", commit)


def test_killed_after_the_merge_then_the_branch_reset_never_ends_succeeded(
    world: World,
) -> None:
    main_before = world.origin_main()
    process = deploy_process(world, "transition:merged")
    wait_stopped(process)
    kill(process)
    reset_origin_main(world, main_before)

    record = resume(None, world.store, world.interaction())
    assert record.state != "succeeded"
    assert record.exit_code == int(ExitCode.GUARD_FAILED)
    assert "no longer on origin/main" in str(record.halt_reason)
    assert world.origin_main() == main_before  # nothing pushed behind the operator's back


def test_killed_after_the_push_was_recorded_then_reset_is_not_taken_for_pushed(
    world: World,
) -> None:
    main_before = world.origin_main()
    process = deploy_process(world, "step_end:merge")
    wait_stopped(process)
    kill(process)
    reset_origin_main(world, main_before)

    record = resume(None, world.store, world.interaction())
    # The record says "pushed"; the remote says otherwise. The clone still holds the merge
    # the remote lost, so the run halts and says so rather than push it again unreviewed.
    assert record.state == "halted", record.halt_reason
    assert "not on origin/main" in str(record.halt_reason)
    assert world.origin_main() == main_before


def test_tracking_rows_deleted_before_revalidate_halt_partial_with_the_plan(
    world: World,
) -> None:
    process = deploy_process(world, "step_end:migrate")
    wait_stopped(process)
    kill(process)
    planned = {p["hash"] for p in only_run(world).planned}
    with psycopg.connect(world.database_url) as conn:
        conn.execute(
            "DELETE FROM drizzle.__drizzle_migrations WHERE hash = ANY(%s)", (list(planned),)
        )

    record = resume(None, world.store, world.interaction())
    assert record.state == "halted"
    assert record.exit_code == int(ExitCode.PARTIAL)
    assert record.rollback_plan, "a halt prints the concrete rollback plan"
    assert not planned & {h for _id, h, _c in tracking_rows(world.database_url)}


def test_killed_during_pg_dump_resumes_with_one_complete_dump_and_no_orphan(
    world: World,
) -> None:
    dumps = world.root / "dumps"
    dumps.mkdir()
    write_playbook(
        world.playbook,
        repo=world.repo,
        health_url=world.health.url,
        backup=f"{{kind: pg_dump, path: {dumps}}}",
        duration="200ms",
        interval="100ms",
    )
    main_before = world.origin_main()
    # An open transaction holding a table keeps pg_dump waiting for its lock: "mid-dump".
    blocker = psycopg.connect(world.database_url)
    blocker.execute("LOCK TABLE case_classifications IN ACCESS EXCLUSIVE MODE")
    try:
        process = deploy_process(world, pause_at="never")
        dump_pid = wait_for_child(process, "pg_dump")
        kill(process)
        assert wait_gone(dump_pid), "pg_dump outlived the deploy that started it"
    finally:
        blocker.rollback()
        blocker.close()

    record = resume(None, world.store, world.interaction())
    assert_converged(world, record, main_before)
    files = sorted(p.name for p in dumps.iterdir())
    assert files == [f"{record.run_id}.dump"], files  # one dump, no partial left behind


def wait_for_child(process: subprocess.Popen[bytes], name: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
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
    process.kill()
    raise AssertionError(f"{name} never started")


def wait_gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return False
