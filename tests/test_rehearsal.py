"""``deploy --dry-run``: a rehearsal against the real database and repositories that proves
what it can, predicts the outcome, and changes nothing — also when it fails half-way."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.cli import run
from orchestrator.db import runlock
from orchestrator.sandbox.release import git
from tests.drizzle_helpers import schema_fingerprint, tracking_rows
from tests.git_http import extraheader, private_remote
from tests.lock_holder import table_locked
from tests.playbooks import write_playbook
from tests.release_world import World
from tests.test_faults_git import assert_only_fetch_moved, refs


def everything(world: World) -> dict[str, Any]:
    """Every observable of the world a rehearsal could touch."""
    url = world.database_url
    with psycopg.connect(url) as conn:
        sequences = conn.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"
        ).fetchall()
        indexes = conn.execute(
            "SELECT schemaname, indexname FROM pg_indexes "
            "WHERE schemaname NOT IN ('pg_catalog') ORDER BY 1, 2"
        ).fetchall()
    clone = world.repo.clone
    tree = {
        str(p.relative_to(clone)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(clone.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(clone).parts
    }
    return {
        "schema": schema_fingerprint(url),
        "tracking": tracking_rows(url),
        "sequences": sequences,
        "indexes": indexes,
        "clone_refs": git(clone, "for-each-ref", "--format=%(refname) %(objectname)"),
        "clone_head": git(clone, "symbolic-ref", "HEAD"),
        "clone_status": git(clone, "status", "--porcelain", "--untracked-files=all"),
        "clone_worktrees": git(clone, "worktree", "list", "--porcelain"),
        "clone_objects": git(clone, "count-objects", "-v"),
        "origin_refs": git(world.repo.origin, "for-each-ref", "--format=%(refname) %(objectname)"),
        "tree": tree,
        "state_dir": world.store.state_dir.exists(),
    }


def dry_run(world: World, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = run(
        [
            "deploy",
            "--playbook",
            str(world.playbook),
            "--dry-run",
            "--json",
            "--state-dir",
            str(world.store.state_dir),
        ]
    )
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, json.loads(captured.out)


def steps(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in document["steps"]}


@pytest.fixture(autouse=True)
def _database_env(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)


def test_rehearsal_proves_the_release_and_changes_nothing(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    before = everything(world)
    requests = world.health.requests
    code, document = dry_run(world, capsys)
    assert code == 0, document["plan"]
    assert everything(world) == before
    # The HTTP check ran exactly twice: pre-flight (production healthy before) and monitor.
    assert world.health.requests == requests + 2

    by_name = steps(document)
    assert list(by_name) == [
        "bounds",  # the plan says first what production will see of the rehearsal
        "preflight",
        "backup",
        "validate",
        "migrate",
        "revalidate",  # the route is the deploy's own (machine.LIVE): revalidate included
        "merge",
        "monitor",
    ]
    assert document["rehearsed_on"] == "production, rolled back"
    assert "lock waits at most 1s" in by_name["bounds"]["summary"]
    assert all(s["status"] == "ok" for s in document["steps"])
    assert document["merge"]["outcome"] == "fast-forward"
    assert document["validation"]["status"] == "NEEDS_MIGRATION"
    assert document["predicted_validation"]["status"] == "SAFE"
    migrate = by_name["migrate"]
    assert "3 migration(s) applied and rolled back" in migrate["summary"]
    details = "\n".join(migrate["details"])
    for tag in ("0009_fat_kulan_gath", "0010_new_colleen_wing", "0011_cute_skin"):
        assert tag in details
    assert "1. ALTER TABLE" in details or "1. CREATE" in details
    monitor = "\n".join(by_name["monitor"]["details"])
    assert "null_service_offerings" in monitor and "on the rehearsed schema" in monitor
    assert "restore point" in by_name["backup"]["summary"]
    assert document["prediction"].startswith("the deploy would succeed")


def test_rehearsal_then_deploy_writes_drizzles_ids(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _document = dry_run(world, capsys)
    assert code == 0
    record = world.deploy()
    assert record.state == "succeeded", record.halt_reason
    ids = [row[0] for row in tracking_rows(world.database_url)]
    assert ids == list(range(1, 13))  # the rolled-back rehearsal consumed no id


def push_to_staging(world: World, files: dict[str, str], journal_entry: dict[str, Any]) -> None:
    clone = world.repo.clone
    git(clone, "switch", "staging")
    journal_path = world.repo.migrations / "meta" / "_journal.json"
    journal = json.loads(journal_path.read_text())
    last = journal["entries"][-1]
    journal["entries"].append({**last, "idx": last["idx"] + 1, **journal_entry})
    journal_path.write_text(json.dumps(journal, indent=2) + "\n")
    for name, text in files.items():
        (world.repo.migrations / name).write_text(text)
    git(clone, "add", "-A")
    git(clone, "commit", "-m", "another migration")
    git(clone, "push", "origin", "staging")
    git(clone, "switch", "main")


def test_a_migration_failing_half_way_is_named_and_leaves_nothing(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    push_to_staging(
        world,
        {
            "0012_broken.sql": 'CREATE TABLE "half" ("id" serial PRIMARY KEY);'
            "--> statement-breakpoint\n"
            'ALTER TABLE "no_such_table" ADD COLUMN "x" integer;\n'
        },
        {"tag": "0012_broken", "when": 1761300000000},
    )
    before = everything(world)
    code, document = dry_run(world, capsys)
    assert code == 21
    migrate = steps(document)["migrate"]
    assert migrate["status"] == "would_halt"
    assert "0012_broken, statement 2" in migrate["summary"]
    assert "no_such_table" in migrate["summary"] and "[42P01]" in migrate["summary"]
    assert "merge" not in steps(document)
    assert everything(world) == before


def test_a_partial_database_halts_at_validate(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(world.database_url) as conn:
        conn.execute('CREATE TABLE "app_settings" ("key" text PRIMARY KEY, "value" text)')
    before = everything(world)
    code, document = dry_run(world, capsys)
    assert code == 20
    assert steps(document)["validate"]["status"] == "would_halt"
    assert "HALT at validate (exit 20)" in document["prediction"]
    assert everything(world) == before


def test_a_conflict_is_reported_with_its_files_and_only_the_fetch_moves_a_ref(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    clone = world.repo.clone
    # Someone pushes a conflicting hotfix to main from elsewhere: the clone has not fetched it.
    elsewhere = world.root / "elsewhere"
    git(world.root, "clone", "--quiet", str(world.repo.origin), str(elsewhere))
    (elsewhere / "app.ts").write_text("hotfix\n")
    git(elsewhere, "commit", "-am", "Hotfix on main")
    git(elsewhere, "push", "origin", "main")
    before, before_refs = everything(world), refs(clone)
    code, document = dry_run(world, capsys)
    assert code == 21
    assert document["merge"]["outcome"] == "conflict"
    assert document["merge"]["conflicts"] == ["app.ts"]
    assert "conflict: app.ts" in steps(document)["preflight"]["details"]
    # As the deploy's pre-flight: the fetch brought the hotfix into refs/remotes/origin/main
    # (and its objects); nothing else moved, and the trial merge's worktree is gone.
    moved = assert_only_fetch_moved(before_refs, refs(clone), world.repo.origin)
    assert moved == {"refs/remotes/origin/main"}
    after = everything(world)
    for fetched in ("clone_refs", "clone_objects"):
        del before[fetched], after[fetched]
    assert after == before


@pytest.mark.parametrize("local_main", ["a local commit", "the release itself"])
def test_a_local_target_the_push_would_refuse_halts_the_rehearsal_and_the_deploy_in_preflight(
    world: World, capsys: pytest.CaptureFixture[str], local_main: str
) -> None:
    """The merge pushes local main: a commit on it that is not on origin/main would go out
    unreviewed, so the merge refuses it; pre-flight refuses it first, before any backup or
    migration, and the rehearsal predicts it. Local main at the release itself (fast-forwarded
    by hand) is what the merge makes anyway: no refusal."""
    clone = world.repo.clone
    if local_main == "a local commit":
        (clone / "NOTES.md").write_text("local note\n")
        git(clone, "add", "NOTES.md")
        git(clone, "commit", "-q", "-m", "local work, not pushed")
    else:
        git(clone, "merge", "--quiet", "--ff-only", "origin/staging")
    rows = tracking_rows(world.database_url)
    predicted, document = dry_run(world, capsys)
    record = world.deploy()
    assert record.exit_code == predicted, (document["prediction"], record.halt_reason)
    if local_main == "the release itself":
        assert predicted == 0, document["plan"]
        return
    assert predicted == 21
    halt = steps(document)["preflight"]
    assert halt["status"] == "would_halt" and "backup" not in steps(document)
    reason = (
        "local branch 'main' has commits that are not on origin/main; refusing to push "
        "unreviewed local commits"
    )
    assert halt["summary"] == record.halt_reason == reason  # the merge's own words
    assert record.steps.backup is None and record.steps.migrate is None
    assert tracking_rows(world.database_url) == rows  # nothing migrated


def test_the_rehearsal_fetches_a_private_remote_with_the_clones_own_credentials(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """In CI, actions/checkout leaves the token in the clone's own git config (an extra HTTP
    header): the rehearsal fetches as the deploy does, with it, and both go through."""
    clone = world.repo.clone
    with private_remote(world.repo.origin, "ghs_token123") as (url, refused):
        nobody = subprocess.run(
            ["git", "ls-remote", url],
            capture_output=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            cwd=world.root,
        )
        assert nobody.returncode != 0 and refused  # the remote wants the header
        git(clone, "remote", "set-url", "origin", url)
        git(
            clone,
            "config",
            f"http.{url.rsplit('/', 1)[0]}/.extraheader",
            extraheader("ghs_token123"),
        )
        refused.clear()
        before = everything(world)
        code, document = dry_run(world, capsys)
        assert code == 0, document["plan"]
        assert everything(world) == before
        record = world.deploy()
        assert record.state == "succeeded", record.halt_reason
        assert refused == []


def shorten_lock_timeout(world: World) -> None:
    """The playbook's lock_timeout 300ms, so the rehearsal's lock bound is 0.3 s."""
    world.playbook.write_text(
        world.playbook.read_text().replace("lock_timeout: 5s", "lock_timeout: 300ms")
    )


def test_lock_timeout_stops_the_rehearsal_without_blocking_traffic(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    shorten_lock_timeout(world)
    before = everything(world)
    with psycopg.connect(world.database_url) as traffic:
        traffic.execute("SELECT * FROM case_classification_results LIMIT 1")  # holds a lock
        code, document = dry_run(world, capsys)
        traffic.rollback()
    assert code == 21
    summary = steps(document)["migrate"]["summary"]
    assert "lock timeout" in summary and "[55P03]" in summary
    # It names the session that blocked it, and the lock it holds.
    assert "blocked by pid" in summary
    assert "ACCESS SHARE on public.case_classification_results" in summary
    assert everything(world) == before


def test_the_rehearsals_read_of_a_locked_table_waits_no_longer_than_its_bound(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    shorten_lock_timeout(world)
    before = everything(world)
    with table_locked(world.database_url, "case_classification_results", "nightly rebuild"):
        code, document = dry_run(world, capsys)
    assert code == 30  # cannot tell: validate could not read the catalog
    halt = json.dumps(document)
    assert "stayed locked for 0.3s" in halt  # the rehearsal's bound, not a read's 5 s
    assert "nightly rebuild" in halt
    assert everything(world) == before


def test_rehearsal_is_refused_while_a_deploy_holds_the_database(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = runlock.application_name("20251021T143005Z-dddddd")
    with runlock.RunLock(
        world.database_url, schema="drizzle", table="__drizzle_migrations", owner=owner
    ):
        code = run(["deploy", "--playbook", str(world.playbook), "--dry-run"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert lines[0].startswith("rehearsal on production")  # announced before it connects
    assert "run 20251021T143005Z-dddddd" in lines[1] and len(lines) == 2


def test_a_safe_database_skips_migrate(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    record = world.deploy()
    assert record.state == "succeeded"
    code, document = dry_run(world, capsys)
    assert code == 0
    assert steps(document)["migrate"]["status"] == "skipped"
    assert document["merge"]["outcome"] == "already merged"


def test_human_output_is_a_plan(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["deploy", "--playbook", str(world.playbook), "--dry-run"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0
    assert "[ok  ] migrate: 3 migration(s) applied and rolled back" in out
    assert "prediction: the deploy would succeed" in out
    assert out.strip().endswith("nothing was committed to production")
    assert out.startswith("[ok  ] bounds: on production")  # the plan says it first, too
    first = captured.err.splitlines()[0]
    assert first.startswith("rehearsal on production, in a transaction that is rolled back")
    assert "lock waits at most 1s, statements at most 60s" in first


@pytest.mark.parametrize("as_json", [False, True])
def test_the_bounds_are_printed_before_the_first_connection(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    """Production unreachable: the bounds line still comes first, before the failure."""
    with socket.socket() as probe:  # a local port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody@127.0.0.1:{port}/app")
    world.playbook.write_text(
        world.playbook.read_text().replace(
            "{attempts: 5, initial: 0.2s, max: 2s}", "{attempts: 1, initial: 0.1s, max: 0.1s}"
        )
    )
    argv = ["deploy", "--playbook", str(world.playbook), "--dry-run"]
    argv += ["--rehearsal-lock-timeout", "250ms", "--rehearsal-statement-timeout", "5s"]
    code = run([*argv, "--json"] if as_json else argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 30, lines
    assert lines[0] == (
        "rehearsal on production, in a transaction that is rolled back: lock waits at most "
        "0.25s, statements at most 5s; the DDL takes the locks the real migration takes "
        "(ACCESS EXCLUSIVE for most ALTER TABLE) while it runs"
    )
    assert "cannot connect" in lines[-1]


@pytest.mark.parametrize("case", ["clean", "failing_migration", "down_before"])
def test_the_rehearsal_predicts_the_deploys_exit_code(
    world: World, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    if case == "failing_migration":
        push_to_staging(
            world,
            {"0012_broken.sql": 'ALTER TABLE "no_such_table" ADD COLUMN "x" integer;\n'},
            {"tag": "0012_broken", "when": 1761300000000},
        )
    if case == "down_before":  # production down before the deploy: pre-flight halts
        world.health.status = 503
    predicted, document = dry_run(world, capsys)
    record = world.deploy()
    assert record.exit_code == predicted, (document["prediction"], record.halt_reason)
    assert predicted == {"clean": 0, "failing_migration": 21, "down_before": 21}[case]


def refusals(world: World, capsys: pytest.CaptureFixture[str], *flags: str) -> list[str]:
    """The dry run's and the deploy's exit codes and last stderr lines, same world and flags;
    the dry run must also leave the state dir as it found it."""
    base = ["deploy", "--playbook", str(world.playbook), "--json", *flags]
    existed = world.store.state_dir.exists()
    dry = run([*base, "--dry-run"])
    dry_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert world.store.state_dir.exists() == existed  # the dry run made nothing
    real = run([*base, "--yes"])
    return [f"{dry} {dry_line}", f"{real} {capsys.readouterr().err.strip().splitlines()[-1]}"]


def test_the_rehearsal_refuses_a_dump_folder_that_is_missing_as_the_deploy_does(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = f"{{kind: pg_dump, path: {world.root / 'no-such-folder'}}}"
    write_playbook(world.playbook, repo=world.repo, health_url=world.health.url, backup=backup)
    dry, real = refusals(world, capsys, "--state-dir", str(world.store.state_dir))
    assert dry == real
    assert dry.startswith("2 error: backup.path ") and "does not exist" in dry


def test_the_rehearsal_refuses_a_manual_backup_nobody_can_vouch_for_as_the_deploy_does(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    write_playbook(
        world.playbook, repo=world.repo, health_url=world.health.url, backup="{kind: manual}"
    )
    dry, real = refusals(world, capsys, "--state-dir", str(world.store.state_dir))  # no tty
    assert dry == real
    assert dry.startswith("2 error: backup kind manual needs an operator")


def test_the_rehearsal_refuses_a_state_dir_it_cannot_write_and_creates_none(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = world.root / "a-file"
    blocker.write_text("not a folder\n")
    dry, real = refusals(world, capsys, "--state-dir", str(blocker / "state"))
    assert dry == real
    assert dry.startswith("2 error: cannot write run records in ")
    assert blocker.read_text() == "not a folder\n"


def test_the_rehearsal_refuses_neons_pooled_endpoint_as_the_deploy_does(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pooler's host name is refused before any connection: nothing needs to answer there.
    params = conninfo_to_dict(world.database_url)
    params["host"] = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
    monkeypatch.setenv("DATABASE_URL", make_conninfo(**params))
    dry, real = refusals(world, capsys, "--state-dir", str(world.store.state_dir))
    assert dry == real
    assert dry.startswith("2 error: ") and "ep-cool-darkness-123456.us-east-2" in dry
