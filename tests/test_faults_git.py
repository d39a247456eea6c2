"""git faults at the deploy level: origin unreachable, push rejected, merge conflict, detached
HEAD, dirty tree. Each one either refuses before a run exists, halts the run, or (detached
HEAD) deploys; in every case the operator's clone and the origin are left exactly as they were,
except for the ref moves a fetch or a successful release legitimately makes, which each test
names precisely.

Everything is real: a bare origin and a clone on disk, PostgreSQL, the CLI called in-process.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import run
from orchestrator.database import validate_database
from orchestrator.db.migrator import MigrateOptions
from orchestrator.engine.settings import journal_at
from orchestrator.gitrepo import open_repo
from orchestrator.sandbox.release import git
from orchestrator.validation import Verdict
from tests.conftest import suite_shadow
from tests.drizzle_helpers import schema_fingerprint, tracking_rows
from tests.release_world import World

UNTRACKED = "notes/operator-scratch.txt"  # an operator's untracked file: must survive every fault


# --------------------------------------------------------------------------- observing


def tree_hashes(clone: Path) -> dict[str, str]:
    """SHA-256 of every working-tree file (tracked or not), outside ``.git``."""
    return {
        str(p.relative_to(clone)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(clone.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(clone).parts
    }


def refs(repo: Path) -> dict[str, str]:
    """Every ref of ``repo`` (branches, remote-tracking refs, tags) and what it points at."""
    listing = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split(" ", 1) for line in listing.splitlines())


def clone_state(clone: Path) -> dict[str, Any]:
    """Everything of the clone an operator would notice, refs apart."""
    return {
        # The HEAD file itself: "ref: refs/heads/main" or a bare hexsha when detached.
        "head": (clone / ".git" / "HEAD").read_text(),
        "head_commit": git(clone, "rev-parse", "HEAD"),
        "status": git(clone, "status", "--porcelain", "--untracked-files=all"),
        "index": git(clone, "ls-files", "--stage"),
        "worktrees": git(clone, "worktree", "list", "--porcelain"),
        "tree": tree_hashes(clone),
        "in_progress": sorted(
            m
            for m in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "rebase-merge")
            if (clone / ".git" / m).exists()
        ),
    }


def origin_state(origin: Path) -> dict[str, Any]:
    return {"refs": refs(origin), "head": (origin / "HEAD").read_text()}


def database_state(url: str) -> dict[str, Any]:
    return {"schema": schema_fingerprint(url), "tracking": tracking_rows(url)}


def moved_refs(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str | None, str]]:
    """Refs created or moved between two :func:`refs` listings; a deleted ref fails the test."""
    assert set(before) <= set(after), f"refs deleted: {sorted(set(before) - set(after))}"
    return {name: (before.get(name), sha) for name, sha in after.items() if before.get(name) != sha}


def assert_only_fetch_moved(
    clone_before: dict[str, str], clone_after: dict[str, str], origin: Path
) -> set[str]:
    """Only ``refs/remotes/origin/*`` may move, and only to origin's tip of that branch.

    That is what ``git fetch origin main staging`` legitimately does; the set of moved refs
    is returned so a test can say which ones it expects.
    """
    origin_refs = refs(origin)
    moved = moved_refs(clone_before, clone_after)
    for name, (_old, new) in moved.items():
        assert name.startswith("refs/remotes/origin/"), f"{name} moved: {moved[name]}"
        branch = name.removeprefix("refs/remotes/origin/")
        assert new == origin_refs[f"refs/heads/{branch}"], f"{name} is not origin's {branch}"
    return set(moved)


def leave_untracked_file(clone: Path) -> None:
    path = clone / UNTRACKED
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("do not lose me\n")


# --------------------------------------------------------------------------- acting


def deploy(world: World, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, Any, str]:
    """``orchestrator deploy --yes --json``: exit code, the run record (or None), stderr."""
    return cli(world, capsys, "deploy", "--playbook", str(world.playbook), *extra)


def cli(world: World, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = run([*args, "--yes", "--json", "--state-dir", str(world.store.state_dir)])
    captured = capsys.readouterr()
    document = json.loads(captured.out) if captured.out.strip() else None
    return code, document, captured.err


def one_line(text: str | None) -> str:
    assert text, "no message at all"
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def assert_database_safe(world: World) -> None:
    """The release's migrations are all applied and tracked once: validate says SAFE."""
    commit = git(world.repo.origin, "rev-parse", "staging")
    journal = journal_at(open_repo(world.repo.clone), commit, world.repo.migrations, "staging")
    report = validate_database(world.database_url, journal, MigrateOptions(), shadow=suite_shadow())
    assert report.status is Verdict.SAFE, report.status
    hashes = [h for _id, h, _created in tracking_rows(world.database_url)]
    assert sorted(hashes) == sorted(m.hash for m in journal.migrations)


@pytest.fixture(autouse=True)
def _database_env(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private system temp dir, so a leftover trial-merge worktree would be seen."""
    directory = tmp_path / "systmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


# --------------------------------------------------------------------------- origin unreachable


def _url_to_missing_path(world: World) -> Path:
    git(world.repo.clone, "remote", "set-url", "origin", str(world.root / "gone.git"))
    return world.repo.origin


def _origin_moved_away(world: World) -> Path:
    moved = world.root / "origin-moved.git"
    world.repo.origin.rename(moved)
    return moved


def _remote_renamed(world: World) -> Path:
    git(world.repo.clone, "remote", "rename", "origin", "upstream")
    return world.repo.origin


@pytest.mark.parametrize(
    ("break_origin", "expected"),
    [
        (_url_to_missing_path, ["cannot fetch from remote 'origin'", "gone.git"]),
        (_origin_moved_away, ["cannot fetch from remote 'origin'", "origin.git"]),
        (_remote_renamed, ["unknown git remote 'origin' (known: upstream)"]),
    ],
    ids=["url-to-missing-path", "origin-moved-away", "remote-renamed"],
)
def test_origin_unreachable_refuses_before_a_run_exists(
    world: World,
    capsys: pytest.CaptureFixture[str],
    break_origin: Callable[[World], Path],
    expected: list[str],
) -> None:
    clone = world.repo.clone
    leave_untracked_file(clone)
    origin = break_origin(world)
    before = (clone_state(clone), refs(clone), origin_state(origin))
    before_db = database_state(world.database_url)

    code, document, err = deploy(world, capsys)

    assert code == 21, err
    # No run record to print: the error's document, as every --json command prints on one.
    assert "run_id" not in document and document["exit_code"] == 21, document
    line = one_line(err)
    assert line.startswith("error: ")
    for fragment in expected:
        assert fragment in line, line
    assert "Traceback" not in err
    assert (clone_state(clone), refs(clone), origin_state(origin)) == before
    assert database_state(world.database_url) == before_db
    assert not world.store.runs_dir.exists()  # refused before any run record


# --------------------------------------------------------------------------- push rejected


def test_push_rejected_halts_after_migrating_and_resume_finishes(
    world: World, capsys: pytest.CaptureFixture[str], private_tmp: Path
) -> None:
    clone, origin = world.repo.clone, world.repo.origin
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    leave_untracked_file(clone)
    before_clone, before_refs = clone_state(clone), refs(clone)
    before_origin = origin_state(origin)
    before_db = database_state(world.database_url)

    code, record, err = deploy(world, capsys)

    assert code == 21, err
    assert record["state"] == "halted" and record["exit_code"] == 21
    assert record["steps"]["halt"]["from"] == "revalidated"  # after migrate, at merge/push
    reason = one_line(record["halt_reason"])
    assert "push of main to origin rejected" in reason
    assert "pre-receive hook declined" in reason
    # The database was migrated and is consistent: SAFE, nothing half-done.
    assert database_state(world.database_url) != before_db
    assert record["steps"]["revalidate"]["status"] == "SAFE"
    assert_database_safe(world)
    # Origin: not a ref moved. Clone: the local ff-merge of main was undone; the fetches
    # found origin where the clone had last seen it, so not even refs/remotes moved. What
    # may differ and is not compared: reflogs, ORIG_HEAD (written by the undoing reset) and
    # loose objects.
    assert origin_state(origin) == before_origin
    assert clone_state(clone) == before_clone
    assert assert_only_fetch_moved(before_refs, refs(clone), origin) == set()
    assert list(private_tmp.iterdir()) == []

    hook.unlink()
    code, resumed, err = cli(world, capsys, "resume", record["run_id"])

    assert code == 0, err
    assert resumed["state"] == "succeeded", resumed["halt_reason"]
    pushed = resumed["steps"]["merge"]["pushed_commit"]
    assert git(origin, "rev-parse", "main") == pushed == git(origin, "rev-parse", "staging")
    assert len(tracking_rows(world.database_url)) == 12
    # After a successful release the only local changes: main and origin/main at the pushed
    # commit (so the tree is staging's), same branch checked out, untracked file intact.
    assert moved_refs(before_refs, refs(clone)) == {
        "refs/heads/main": (before_refs["refs/heads/main"], pushed),
        "refs/remotes/origin/main": (before_refs["refs/remotes/origin/main"], pushed),
    }
    after = clone_state(clone)
    assert after["head"] == before_clone["head"] == "ref: refs/heads/main\n"
    assert after["status"] == before_clone["status"] == f"?? {UNTRACKED}"
    assert after["tree"][UNTRACKED] == before_clone["tree"][UNTRACKED]


# --------------------------------------------------------------------------- merge conflict


def test_merge_conflict_pushed_by_someone_else_halts_in_preflight(
    world: World, capsys: pytest.CaptureFixture[str], private_tmp: Path
) -> None:
    clone, origin = world.repo.clone, world.repo.origin
    elsewhere = world.root / "elsewhere"
    git(world.root, "clone", "--quiet", str(origin), str(elsewhere))
    (elsewhere / "app.ts").write_text("export const classify = hotfix;\n")
    git(elsewhere, "commit", "-am", "Hotfix on main")
    git(elsewhere, "push", "origin", "main")
    leave_untracked_file(clone)
    before_clone, before_refs = clone_state(clone), refs(clone)
    before_origin = origin_state(origin)
    before_db = database_state(world.database_url)

    code, record, err = deploy(world, capsys)

    assert code == 21, err
    assert record["state"] == "halted" and record["exit_code"] == 21
    assert record["steps"]["halt"]["from"] == "pending"
    assert "backup" not in record["steps"] and "migrate" not in record["steps"]
    reason = one_line(record["halt_reason"])
    assert "merging origin/staging into origin/main conflicts in: app.ts" in reason
    assert database_state(world.database_url) == before_db
    assert origin_state(origin) == before_origin
    assert clone_state(clone) == before_clone
    # The fetch brought the hotfix into refs/remotes/origin/main; nothing else moved, and the
    # trial merge's worktree is gone (the worktree list above, and the temp dir here).
    assert assert_only_fetch_moved(before_refs, refs(clone), origin) == {"refs/remotes/origin/main"}
    assert list(private_tmp.iterdir()) == []


# --------------------------------------------------------------------------- detached HEAD


def test_detached_head_deploys_and_stays_detached(
    world: World, capsys: pytest.CaptureFixture[str], private_tmp: Path
) -> None:
    clone, origin = world.repo.clone, world.repo.origin
    git(clone, "switch", "--detach")
    leave_untracked_file(clone)
    before_clone, before_refs = clone_state(clone), refs(clone)
    assert not before_clone["head"].startswith("ref:")

    code, record, err = deploy(world, capsys)

    assert code == 0, err
    assert record["state"] == "succeeded", record["halt_reason"]
    pushed = record["steps"]["merge"]["pushed_commit"]
    assert git(origin, "rev-parse", "main") == pushed
    assert_database_safe(world)
    # HEAD is detached at the same commit, with the same files, index and untracked file;
    # the local main branch (not checked out) and origin/main point at the pushed release.
    assert clone_state(clone) == before_clone
    assert moved_refs(before_refs, refs(clone)) == {
        "refs/heads/main": (before_refs["refs/heads/main"], pushed),
        "refs/remotes/origin/main": (before_refs["refs/remotes/origin/main"], pushed),
    }
    assert list(private_tmp.iterdir()) == []


# --------------------------------------------------------------------------- dirty tree


def _modified(clone: Path) -> list[str]:
    (clone / "app.ts").write_text("export const classify = workInProgress;\n")
    return ["app.ts"]


def _staged(clone: Path) -> list[str]:
    (clone / "app.ts").write_text("export const classify = staged;\n")
    git(clone, "add", "app.ts")
    return ["app.ts"]


def _staged_new_file(clone: Path) -> list[str]:
    (clone / "README.md").write_text("added, not committed\n")
    git(clone, "add", "README.md")
    return ["README.md"]


def _staged_then_modified(clone: Path) -> list[str]:
    (clone / "app.ts").write_text("export const classify = staged;\n")
    git(clone, "add", "app.ts")
    (clone / "app.ts").write_text("export const classify = stagedThenEdited;\n")
    return ["app.ts"]


@pytest.mark.parametrize(
    "make_dirty",
    [_modified, _staged, _staged_new_file, _staged_then_modified],
    ids=["modified", "staged", "staged-new-file", "staged-then-modified"],
)
def test_dirty_tree_is_refused_with_the_dirt_intact(
    world: World,
    capsys: pytest.CaptureFixture[str],
    make_dirty: Callable[[Path], list[str]],
) -> None:
    clone, origin = world.repo.clone, world.repo.origin
    leave_untracked_file(clone)
    dirty = make_dirty(clone)
    before_clone, before_refs = clone_state(clone), refs(clone)
    before_origin = origin_state(origin)
    before_db = database_state(world.database_url)
    contents = {path: (clone / path).read_bytes() for path in dirty}

    code, record, err = deploy(world, capsys)

    assert code == 21, err
    assert record["state"] == "halted" and record["steps"]["halt"]["from"] == "pending"
    assert "backup" not in record["steps"]
    reason = one_line(record["halt_reason"])
    assert f"working tree {clone} has uncommitted changes: {', '.join(dirty)}" in reason
    assert UNTRACKED not in reason  # untracked files are not dirt
    assert {path: (clone / path).read_bytes() for path in dirty} == contents
    assert clone_state(clone) == before_clone  # staged and unstaged content both kept
    assert assert_only_fetch_moved(before_refs, refs(clone), origin) == set()
    assert origin_state(origin) == before_origin
    assert database_state(world.database_url) == before_db
