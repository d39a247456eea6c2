"""Resume after an interruption: SIGKILL at every step boundary and mid-migration, then
``resume`` finishes without doing anything twice; and resume refuses when the world moved.

The deploy runs as a real subprocess. ``tests/pausing_deploy.py`` makes it stop itself
(SIGSTOP) right after a given audit event is on disk; the test then SIGKILLs it, so every
kill lands exactly on the boundary it names.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from orchestrator.audit import read_events
from orchestrator.cli import run
from orchestrator.database import validate_database
from orchestrator.db.migrator import MigrateOptions
from orchestrator.drizzle.journal import Journal
from orchestrator.engine.rollback import rollback_plan
from orchestrator.engine.run import resume
from orchestrator.engine.settings import journal_at
from orchestrator.errors import ExitCode, UsageError
from orchestrator.gitrepo import open_repo
from orchestrator.runs import RunRecord
from orchestrator.sandbox.pg import with_dbname
from orchestrator.sandbox.release import git
from orchestrator.validation import Verdict
from tests.conftest import suite_shadow
from tests.drizzle_helpers import schema_fingerprint, tracking_rows
from tests.release_world import World, add_staging_migration

REPO_ROOT = Path(__file__).resolve().parents[1]


def deploy_process(world: World, pause_at: str, **environ: str) -> subprocess.Popen[bytes]:
    """``orchestrator deploy --yes`` as a subprocess that stops itself at ``pause_at``."""
    env = {**os.environ, "DATABASE_URL": world.database_url, **environ}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.pausing_deploy",
            pause_at,
            "deploy",
            "--playbook",
            str(world.playbook),
            "--yes",
            "--json",
            "--state-dir",
            str(world.store.state_dir),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_stopped(process: subprocess.Popen[bytes]) -> None:
    """Wait until ``process`` has stopped itself (state T); fail if it exits instead. No
    clock: it does one or the other, however slow the machine is."""
    while True:
        if process.poll() is not None:
            _out, err = process.communicate()
            pytest.fail(f"deploy exited {process.returncode} before pausing: {err.decode()}")
        stat = Path(f"/proc/{process.pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "T":
            return
        time.sleep(0.02)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no handler runs, nothing is flushed, nothing is cleaned up."""
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def wait_for_sleeping_migration(world: World, process: subprocess.Popen[bytes]) -> str:
    """The application_name of the run's session once its sleeping statement runs on
    production (the shadow replays it in databases of its own): waits for that, or for the
    deploy to end (a failure), however slow the machine is."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        while True:
            if process.poll() is not None:
                out, err = process.communicate()
                pytest.fail(f"deploy exited {process.returncode}: {err.decode()} {out.decode()}")
            row = conn.execute(
                "SELECT application_name FROM pg_stat_activity "
                "WHERE query LIKE '%pg_sleep(%' AND state = 'active' "
                "AND datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if row:
                return str(row[0])
            time.sleep(0.05)


def only_run(world: World) -> RunRecord:
    records = world.store.list()
    assert len(records) == 1
    return records[0]


def staging_journal(world: World) -> Journal:
    """The release's migrations as origin's staging branch holds them."""
    commit = git(world.repo.origin, "rev-parse", "staging")
    return journal_at(open_repo(world.repo.clone), commit, world.repo.migrations, "staging")


def assert_converged(world: World, record: RunRecord, main_before: str) -> None:
    """SAFE, every hash tracked once, origin's main holds the release exactly once."""
    assert record.state == "succeeded", record.halt_reason
    journal = staging_journal(world)
    report = validate_database(world.database_url, journal, MigrateOptions(), shadow=suite_shadow())
    assert report.status is Verdict.SAFE
    hashes = Counter(h for _id, h, _created in tracking_rows(world.database_url))
    assert sorted(hashes) == sorted(m.hash for m in journal.migrations)
    assert set(hashes.values()) == {1}, "a migration was tracked twice"
    staging = git(world.repo.origin, "rev-parse", "staging")
    git(world.repo.origin, "merge-base", "--is-ancestor", staging, "main")  # raises if not
    merges = git(world.repo.origin, "rev-list", "--merges", f"{main_before}..main").split()
    assert len(merges) <= 1, "the release was merged twice"


KILL_POINTS = [
    "step_end:preflight",
    "step_end:backup",
    "transition:backup_checked",
    "step_end:validate",
    "transition:validated",
    "applying_migration",  # the first migration's statements are running in the transaction
    "applying_migration:0011_cute_skin",  # mid-transaction, a later migration
    "committed",  # the migrations committed, not yet recorded
    "step_end:migrate",
    "transition:migrated",
    "transition:revalidated",
    "pushed",  # the release reached origin, not yet recorded
    "step_end:merge",
    "transition:merged",
    "check",  # in the middle of the monitor window
    "transition:monitored",
]


@pytest.mark.parametrize("pause_at", KILL_POINTS)
def test_sigkill_at_each_boundary_then_resume_converges(world: World, pause_at: str) -> None:
    main_before = world.origin_main()
    process = deploy_process(world, pause_at)
    wait_stopped(process)
    kill(process)

    interrupted = only_run(world)
    assert interrupted.state not in ("succeeded", "halted", "failed")
    record = resume(None, world.store, world.interaction())

    assert_converged(world, record, main_before)
    events = [e["event"] for e in read_events(world.store.audit_path(record.run_id))]
    assert "interruption_detected" in events and "run_resumed" in events
    assert events.index("interruption_detected") < events.index("run_resumed")
    after_resume = events[events.index("run_resumed") :]
    if KILL_POINTS.index(pause_at) >= KILL_POINTS.index("committed"):
        # The migration transaction had committed: resume must not run it again.
        assert "applying_migration" not in after_resume
    merge_pushes = [
        e
        for e in read_events(world.store.audit_path(record.run_id))
        if e["event"] == "step_end" and e.get("step") == "merge" and "note" not in e["outcome"]
    ]
    # Killed right after its push, the run finds it on resume (a step_end with a note).
    assert len(merge_pushes) == (0 if pause_at == "pushed" else 1), "the merge was pushed twice"


def push_hotfix(world: World) -> str:
    """A colleague's commit pushed to origin's main on top of whatever is there; its sha."""
    clone = world.repo.clone
    (clone / "hotfix.txt").write_text("someone else's hotfix\n")
    git(clone, "add", "-A")
    git(clone, "commit", "-m", "hotfix")
    git(clone, "push", "origin", "main")
    return world.origin_main()


def interrupt(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGTERM (a cancelled CI job) to a stopped deploy, which then goes on and handles it."""
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    _out, err = process.communicate()
    return process.returncode, err.decode()


@pytest.mark.parametrize("pause_at", ["committed", "pushed"])
def test_an_interrupt_after_the_work_landed_records_it_and_exits_20(
    world: World, pause_at: str
) -> None:
    main_before = world.origin_main()
    summary = world.root / "step-summary.md"  # a cancelled GitHub Actions job
    in_ci = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    process = deploy_process(world, pause_at, **in_ci)
    wait_stopped(process)
    code, err = interrupt(process)
    assert code == int(ExitCode.PARTIAL), err  # not 2, "nothing changed"
    record = only_run(world)
    assert record.steps.migrate is not None
    assert record.steps.migrate.tags == [p.tag for p in record.planned]
    plan = "\n".join(rollback_plan(record))
    # Reported as a halt is: the job's summary and an error annotation say why and what
    # to undo, and how to go on.
    why = f"interrupted by SIGTERM halfway through the release (state {record.state})"
    assert record.exit_code == ExitCode.PARTIAL and record.rollback_plan
    assert why in summary.read_text() and "**Rollback plan**" in summary.read_text()
    assert f"Continue it with `orchestrator resume {record.run_id}`" in summary.read_text()
    [annotation] = [line for line in err.splitlines() if line.startswith("::error")]
    assert why in annotation and "Rollback plan" in annotation
    assert "applied no migration" not in plan
    if pause_at == "pushed":  # the plan reverts what reached origin
        assert record.steps.merge is not None
        assert record.steps.merge.pushed_commit == world.origin_main() != main_before
        assert "nothing was merged or pushed" not in plan
    assert_converged(world, resume(None, world.store, world.interaction()), main_before)


@pytest.mark.parametrize("pause_at", ["pushed", "step_start:merge"])
def test_rollback_of_a_run_killed_while_merging_looks_at_origin_first(
    world: World, pause_at: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # SIGKILLed right after its push (or right before it), the record says revalidated and
    # holds no merge: only origin knows whether the release is live.
    main_before = world.origin_main()
    tree_before = git(world.repo.origin, "rev-parse", "main^{tree}")
    process = deploy_process(world, pause_at)
    wait_stopped(process)
    kill(process)
    killed = only_run(world)
    assert killed.state == "revalidated" and killed.steps.merge is None
    pushed = world.origin_main() != main_before
    assert pushed is (pause_at == "pushed")
    state = ["--state-dir", str(world.store.state_dir)]

    assert run(["rollback", killed.run_id, "--plan", *state]) == 0
    out = capsys.readouterr().out
    assert "nothing was merged or pushed" not in out
    assert "Code: unknown: the run stopped while merging; origin/main may hold the release" in out
    assert run(["rollback", killed.run_id, "--yes", *state]) == 0
    out = capsys.readouterr().out
    record = only_run(world)
    events = read_events(world.store.audit_path(record.run_id))
    assert [e["found"] for e in events if e["event"] == "rollback_looked"] == [pushed]
    if pushed:  # what landed is recorded, then reverted
        assert record.steps.merge is not None and record.steps.rollback is not None
        assert record.steps.merge.pushed_commit == git(world.repo.origin, "rev-parse", "main^")
        assert record.steps.rollback.reverted_commit == world.origin_main()
        assert git(world.repo.origin, "rev-parse", "main^{tree}") == tree_before
        assert "reverted and pushed" in out
    else:
        assert record.steps.merge is None and record.steps.rollback is None
        assert world.origin_main() == main_before
        assert "Code: nothing was merged or pushed" in out


def test_rollback_of_a_run_killed_after_its_migration_committed_reads_the_database(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # SIGKILLed right after the migration transaction committed: the record says validated
    # and holds no migrate step; only the database knows what it applied.
    process = deploy_process(world, "committed")
    wait_stopped(process)
    kill(process)
    killed = only_run(world)
    assert killed.state == "validated" and killed.steps.migrate is None
    state = ["--state-dir", str(world.store.state_dir)]

    assert run(["rollback", killed.run_id, "--plan", *state]) == 0
    out = capsys.readouterr().out
    assert "applied no migration" not in out
    assert "Database: unknown: the run stopped while migrating" in out
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    assert run(["rollback", killed.run_id, "--yes", *state]) == 0
    out = " ".join(capsys.readouterr().out.split())
    record = only_run(world)
    assert record.steps.migrate is not None
    assert [m.tag for m in record.steps.migrate.applied] == [p.tag for p in killed.planned]
    assert f"Database: this run applied {', '.join(p.tag for p in killed.planned)}" in out
    assert "Code: nothing was merged or pushed" in out


def test_resume_keeps_its_own_push_when_someone_pushed_on_top_while_it_was_down(
    world: World,
) -> None:
    process = deploy_process(world, "step_end:merge")
    wait_stopped(process)
    kill(process)
    own = only_run(world).steps.merge
    assert own is not None and own.pushed_commit is not None
    hotfix = push_hotfix(world)
    record = resume(None, world.store, world.interaction())
    assert record.state == "succeeded", record.halt_reason
    assert record.steps.merge is not None
    assert record.steps.merge.pushed_commit == own.pushed_commit != hotfix
    assert hotfix not in "\n".join(rollback_plan(record))  # a rollback leaves the hotfix be


def test_resume_adopts_the_merge_commit_it_pushed_before_it_was_killed(world: World) -> None:
    hotfix = push_hotfix(world)  # main moved on: the release lands as a merge commit
    process = deploy_process(world, "pushed")
    wait_stopped(process)
    kill(process)
    merge = world.origin_main()
    assert git(world.repo.origin, "rev-parse", f"{merge}^1") == hotfix
    record = resume(None, world.store, world.interaction())
    assert record.state == "succeeded", record.halt_reason
    assert record.steps.merge is not None
    assert record.steps.merge.merge_commit == record.steps.merge.pushed_commit == merge
    assert not record.steps.merge.fast_forward


def test_a_deploy_that_could_not_read_production_at_validate_resumes(world: World) -> None:
    main_before = world.origin_main()
    name = psycopg.conninfo.conninfo_to_dict(world.database_url)["dbname"]
    admin = with_dbname(world.database_url, "postgres")

    def allow_connections(allowed: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {allowed}')

    def cut_before_validate(event: dict[str, object]) -> None:
        if event.get("event") == "step_end" and event.get("step") == "backup":
            allow_connections(False)

    try:
        record = world.deploy(console=cut_before_validate)
    finally:
        allow_connections(True)
    assert record.exit_code == int(ExitCode.ERROR), record.halt_reason
    assert_converged(world, resume(None, world.store, world.interaction()), main_before)


def add_slow_migration(world: World, seconds: int) -> None:
    """A release migration that sleeps while table ``sleep_marker`` exists, on staging."""
    add_staging_migration(
        world,
        "0012_slow",
        [
            "SELECT pg_sleep(CASE WHEN to_regclass('public.sleep_marker') IS NULL THEN 0 "
            f"ELSE {seconds} END);",
            'CREATE TABLE "slow_done" ("id" serial PRIMARY KEY);',
        ],
    )


def test_sigkill_during_a_slow_statement_then_resume_ends_the_orphan(world: World) -> None:
    # The orphan would sleep for an hour: the resumed run can only finish (no clock is
    # needed to tell) because it ended the orphan instead of waiting for it.
    add_slow_migration(world, seconds=3600)
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE sleep_marker ()")
    main_before = world.origin_main()
    process = deploy_process(world, "no-pause")
    run_name = wait_for_sleeping_migration(world, process)
    assert run_name.startswith("orchestrator run ")
    kill(process)
    sleeping_query = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
        "AND query LIKE 'SELECT pg_sleep%%' AND datname = current_database()"
    )
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        # The backend is still sleeping: PostgreSQL notices the dead client only later.
        assert conn.execute(sleeping_query, (run_name,)).fetchone() == (1,)
        conn.execute("DROP TABLE sleep_marker")  # the resumed run's attempt is quick

    record = resume(None, world.store, world.interaction())
    assert record.run_id == run_name.split()[-1]
    events = read_events(world.store.audit_path(record.run_id))
    detected = next(e for e in events if e["event"] == "interruption_detected")
    assert detected["orphan_sessions_ended"], "the orphan backend was not ended"
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        assert conn.execute(sleeping_query, (run_name,)).fetchone() == (0,), "the orphan lives"
    assert_converged(world, record, main_before)


def test_resume_refuses_when_the_source_branch_moved(world: World) -> None:
    process = deploy_process(world, "transition:validated")
    wait_stopped(process)
    kill(process)
    clone = world.repo.clone
    git(clone, "switch", "staging")
    (clone / "late.txt").write_text("a late change\n")
    git(clone, "add", "-A")
    git(clone, "commit", "-m", "late change")
    git(clone, "push", "origin", "staging")
    git(clone, "switch", "main")
    before = (schema_fingerprint(world.database_url), world.origin_main())
    state_before = world.store.record_path(only_run(world).run_id).read_bytes()

    with pytest.raises(UsageError, match="source branch staging has new commits"):
        resume(None, world.store, world.interaction())
    assert (schema_fingerprint(world.database_url), world.origin_main()) == before
    assert world.store.record_path(only_run(world).run_id).read_bytes() == state_before


def test_resume_refuses_when_the_target_was_pushed_by_someone_else(world: World) -> None:
    process = deploy_process(world, "transition:revalidated")
    wait_stopped(process)
    kill(process)
    main = push_hotfix(world)

    code = run(["resume", "--yes", "--state-dir", str(world.store.state_dir)])
    assert code == 2
    assert world.origin_main() == main
    assert only_run(world).state == "revalidated"


def test_resume_refuses_when_a_colleague_merged_the_release_with_a_migration_more(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """main holds the pinned commit, but also a migration the run never planned: that is not
    the release, and the run must not adopt it as its own push."""
    halted = world.deploy(confirm=lambda question: not question.startswith("Apply"))
    assert halted.state == "halted" and halted.steps.migrate is None
    add_staging_migration(world, "0012_colleague", ['CREATE TABLE "colleague" ("id" integer);'])
    clone = world.repo.clone
    git(clone, "fetch", "--quiet", "origin")
    git(clone, "merge", "--no-ff", "--no-edit", "origin/staging")  # staging, 0012 and all
    git(clone, "push", "--quiet", "origin", "main")
    main = world.origin_main()
    before = schema_fingerprint(world.database_url)
    monkeypatch.setenv("DATABASE_URL", world.database_url)

    code = run(["resume", "--yes", "--state-dir", str(world.store.state_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the target branch main was pushed by someone else" in err
    assert schema_fingerprint(world.database_url) == before  # nothing migrated
    assert world.origin_main() == main
    record = only_run(world)
    assert record.state == "halted" and record.steps.merge is None
    events = [e["event"] for e in read_events(world.store.audit_path(record.run_id))]
    assert events[-1] == "resume_refused"


def test_a_source_branch_deleted_once_the_release_merged_does_not_block_resume(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    process = deploy_process(world, "transition:merged")
    wait_stopped(process)
    kill(process)
    git(world.repo.origin, "branch", "-D", "staging")  # GitHub deletes merged head branches
    main = world.origin_main()
    monkeypatch.setenv("DATABASE_URL", world.database_url)

    code = run(["resume", "--yes", "--state-dir", str(world.store.state_dir)])
    assert code == 0, capsys.readouterr().err
    record = only_run(world)
    assert record.state == "succeeded" and record.steps.merge.pushed_commit == main
    assert world.origin_main() == main


def test_resume_refuses_when_the_source_branch_is_gone_before_the_merge(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    process = deploy_process(world, "transition:revalidated")
    wait_stopped(process)
    kill(process)
    git(world.repo.origin, "branch", "-D", "staging")
    main = world.origin_main()
    monkeypatch.setenv("DATABASE_URL", world.database_url)

    code = run(["resume", "--yes", "--state-dir", str(world.store.state_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the source branch staging is gone from the remote" in err
    assert len(err.strip().splitlines()) == 1
    assert world.origin_main() == main
    record = only_run(world)
    assert record.state == "revalidated"
    events = [e["event"] for e in read_events(world.store.audit_path(record.run_id))]
    assert events[-1] == "resume_refused"


def test_resume_refuses_when_the_database_shows_migrations_it_did_not_plan(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    process = deploy_process(world, "transition:validated")
    wait_stopped(process)
    kill(process)
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute(
            'INSERT INTO drizzle.__drizzle_migrations ("hash", "created_at") VALUES (%s, %s)',
            ("f" * 64, 1),
        )
    before = schema_fingerprint(world.database_url)
    monkeypatch.setenv("DATABASE_URL", world.database_url)

    code = run(["resume", "--yes", "--state-dir", str(world.store.state_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "did not plan" in err and len(err.strip().splitlines()) == 1
    assert schema_fingerprint(world.database_url) == before
    events = [e["event"] for e in read_events(world.store.audit_path(only_run(world).run_id))]
    assert events[-1] == "resume_refused"


def test_resume_of_a_finished_or_unknown_run_is_a_usage_error(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    state = ["--state-dir", str(world.store.state_dir)]
    assert run(["resume", "--yes", *state]) == 2
    assert "no unfinished run" in capsys.readouterr().err
    record = world.deploy()
    assert record.state == "succeeded"
    assert run(["resume", record.run_id, "--yes", *state]) == 2
    assert "already succeeded" in capsys.readouterr().err
    assert run(["resume", "20990101T000000Z-abcdef", "--yes", *state]) == 2
    assert "unknown run id" in capsys.readouterr().err
