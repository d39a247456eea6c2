"""The git edge against real repositories: a bare "origin" and working clones under tmp_path."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.errors import GuardError, UsageError
from orchestrator.gitrepo import (
    MergeResult,
    is_merged,
    merge_and_push,
    open_repo,
    preflight,
    read_files_at,
    revert_commands,
    revert_release,
    revert_release_on_branch,
)
from orchestrator.gitrepo.history import undone

BASE_FILES = {
    "app.txt": "version 1\n",
    "README": "readme\n",
    "drizzle/0000_init.sql": "CREATE TABLE a (id int);\n",
}
STAGING_FILES = {
    "app.txt": "version 2\n",
    "drizzle/0001_more.sql": "CREATE TABLE b (id int);\n",
    "drizzle/meta/_journal.json": '{"entries": []}\n',
}


def run(cwd: Path, *args: str) -> str:
    """``git <args>`` in ``cwd``; its stdout (stripped). Fails the test on a non-zero status."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def commit_files(cwd: Path, files: dict[str, str | None], message: str) -> str:
    """Write (or delete, for None) ``files`` in ``cwd``, commit them; the new commit's sha."""
    for name, text in files.items():
        path = cwd / name
        if text is None:
            run(cwd, "rm", "-q", name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        run(cwd, "add", name)
    run(cwd, "commit", "-q", "-m", message)
    return run(cwd, "rev-parse", "HEAD")


def clone(origin: Path, where: Path) -> Path:
    run(origin.parent, "clone", "-q", str(origin), str(where))
    run(where, "config", "user.name", "Test Person")
    run(where, "config", "user.email", "test@example.com")
    return where


@dataclass
class Repos:
    origin: Path  # bare
    clone: Path  # the operator's clone: on branch "work", no local main or staging
    other: Path  # a colleague's clone, to move origin's branches behind our back
    base: str  # origin/main at setup
    staging: str  # origin/staging at setup (= base + one commit)

    def origin_tip(self, branch: str) -> str:
        return run(self.origin, "rev-parse", f"refs/heads/{branch}")

    def origin_tree(self, branch: str) -> str:
        return run(self.origin, "rev-parse", f"refs/heads/{branch}^{{tree}}")

    def push_from_other(self, branch: str, files: dict[str, str | None], message: str) -> str:
        run(self.other, "fetch", "-q", "origin")
        run(self.other, "checkout", "-q", "-B", branch, f"origin/{branch}")
        sha = commit_files(self.other, files, message)
        run(self.other, "push", "-q", "origin", f"{branch}:{branch}")
        return sha


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No global/system git config leaks in; temp dirs land where the test can inspect them."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    yield scratch


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    origin = tmp_path / "origin.git"
    origin.mkdir()
    run(origin, "init", "-q", "--bare")
    run(origin, "symbolic-ref", "HEAD", "refs/heads/main")

    seed = tmp_path / "seed"
    seed.mkdir()
    run(seed, "init", "-q")
    run(seed, "symbolic-ref", "HEAD", "refs/heads/main")
    run(seed, "config", "user.name", "Seed")
    run(seed, "config", "user.email", "seed@example.com")
    base = commit_files(seed, dict(BASE_FILES), "base")
    run(seed, "checkout", "-q", "-b", "staging")
    staging = commit_files(seed, dict(STAGING_FILES), "staging work")
    run(seed, "push", "-q", str(origin), "main:main", "staging:staging")

    work = clone(origin, tmp_path / "clone")
    run(work, "checkout", "-q", "-b", "work")
    run(work, "branch", "-q", "-D", "main")  # like a fresh operator clone on a topic branch
    other = clone(origin, tmp_path / "other")
    return Repos(origin=origin, clone=work, other=other, base=base, staging=staging)


def local_state(path: Path) -> dict[str, str]:
    """Everything about a clone that our functions must leave alone (remote refs excluded)."""
    files = sorted(
        (str(p.relative_to(path)), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in path.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(path).parts
    )
    git_dir = path / ".git"
    return {
        "head": (git_dir / "HEAD").read_text(),
        "head_commit": run(path, "rev-parse", "HEAD"),
        "branches": run(path, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads"),
        "index": run(path, "ls-files", "--stage"),
        "status": run(path, "status", "--porcelain", "--untracked-files=all"),
        "files": repr(files),
        "worktrees": run(path, "worktree", "list", "--porcelain"),
        "in_progress": repr(
            sorted(
                m
                for m in ("MERGE_HEAD", "REVERT_HEAD", "CHERRY_PICK_HEAD")
                if (git_dir / m).exists()
            )
        ),
    }


# --------------------------------------------------------------------------- open_repo


def test_open_repo_accepts_a_work_tree_and_rejects_the_rest(repos: Repos, tmp_path: Path) -> None:
    assert Path(open_repo(repos.clone).working_dir) == repos.clone
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(UsageError, match="not a git work tree"):
        open_repo(plain)
    with pytest.raises(UsageError, match="not a git work tree"):
        open_repo(tmp_path / "missing")
    with pytest.raises(UsageError, match="bare"):
        open_repo(repos.origin)


# --------------------------------------------------------------------------- preflight


def test_preflight_fast_forward(repos: Repos) -> None:
    before = local_state(repos.clone)
    result = preflight(open_repo(repos.clone), "origin", "staging", "main")
    assert result.source_commit == repos.origin_tip("staging") == repos.staging
    assert result.target_commit == repos.origin_tip("main") == repos.base
    assert result.fast_forward is True
    assert result.already_merged is False
    assert local_state(repos.clone) == before


def test_preflight_sees_what_the_fetch_brought(repos: Repos) -> None:
    """Commits pushed by others after our clone was made are what preflight judges."""
    hotfix = repos.push_from_other("main", {"README": "hotfix readme\n"}, "hotfix")
    before = local_state(repos.clone)
    result = preflight(open_repo(repos.clone), "origin", "staging", "main")
    assert result.target_commit == hotfix
    assert result.fast_forward is False
    assert result.already_merged is False
    assert local_state(repos.clone) == before


def test_preflight_non_fast_forward_trial_merge_leaves_no_trace(
    repos: Repos, isolated_git: Path
) -> None:
    repos.push_from_other("main", {"README": "hotfix readme\n"}, "hotfix")
    (repos.clone / "notes.txt").write_text("untracked files are not dirt\n")
    before = local_state(repos.clone)
    result = preflight(open_repo(repos.clone), "origin", "staging", "main")
    assert not result.fast_forward and not result.already_merged
    assert local_state(repos.clone) == before
    assert list(isolated_git.iterdir()) == []  # the temporary worktree is gone
    assert not (repos.clone / ".git" / "worktrees").exists() or not any(
        (repos.clone / ".git" / "worktrees").iterdir()
    )


def test_preflight_already_merged_and_detached_head(repos: Repos) -> None:
    run(repos.clone, "checkout", "-q", "--detach", "HEAD")
    result = preflight(open_repo(repos.clone), "origin", "main", "staging")
    assert result.already_merged is True
    assert result.fast_forward is False


def test_preflight_missing_source_branch(repos: Repos) -> None:
    with pytest.raises(GuardError, match="branch 'release-9' does not exist on remote 'origin'"):
        preflight(open_repo(repos.clone), "origin", "release-9", "main")
    with pytest.raises(GuardError, match="branch 'prod' does not exist"):
        preflight(open_repo(repos.clone), "origin", "staging", "prod")


def test_preflight_unknown_remote(repos: Repos) -> None:
    with pytest.raises(GuardError, match="unknown git remote 'upstream'"):
        preflight(open_repo(repos.clone), "upstream", "staging", "main")


@pytest.mark.parametrize(
    "url",
    [
        "https://deployer:s3cr3t-pass@127.0.0.1:9/app.git",
        "https://ghp_S3CR3TTOKEN@127.0.0.1:9/app.git",
    ],
)
def test_preflight_unreachable_remote_never_shows_credentials(repos: Repos, url: str) -> None:
    run(repos.clone, "remote", "add", "prod", url)
    with pytest.raises(GuardError, match="cannot fetch from remote 'prod'") as caught:
        preflight(open_repo(repos.clone), "prod", "staging", "main")
    message = str(caught.value)
    assert "s3cr3t" not in message.lower()
    assert "\n" not in message
    assert "127.0.0.1:9/app.git" in message


def test_preflight_refuses_a_missing_path_remote(repos: Repos, tmp_path: Path) -> None:
    run(repos.clone, "remote", "add", "gone", str(tmp_path / "nowhere.git"))
    with pytest.raises(GuardError, match="cannot fetch from remote 'gone'"):
        preflight(open_repo(repos.clone), "gone", "staging", "main")


def test_preflight_refuses_modified_and_staged_files(repos: Repos) -> None:
    repo = open_repo(repos.clone)
    (repos.clone / "app.txt").write_text("edited by hand\n")
    with pytest.raises(GuardError, match=r"uncommitted changes: app\.txt"):
        preflight(repo, "origin", "staging", "main")
    run(repos.clone, "add", "app.txt")
    with pytest.raises(GuardError, match=r"uncommitted changes: app\.txt"):
        preflight(repo, "origin", "staging", "main")
    run(repos.clone, "reset", "-q", "--hard")
    assert preflight(repo, "origin", "staging", "main").fast_forward


def test_preflight_conflict_names_files_and_changes_nothing(
    repos: Repos, isolated_git: Path
) -> None:
    repos.push_from_other("main", {"app.txt": "hotfixed version 1\n"}, "hotfix")
    run(repos.clone, "checkout", "-q", "main")  # the conflicting branch itself is checked out
    (repos.clone / "scratch.txt").write_text("untracked\n")
    before = local_state(repos.clone)
    with pytest.raises(GuardError, match=r"conflicts in: app\.txt$"):
        preflight(open_repo(repos.clone), "origin", "staging", "main")
    assert local_state(repos.clone) == before
    assert list(isolated_git.iterdir()) == []


# --------------------------------------------------------------------------- read_files_at


def test_read_files_at_reads_the_commit_not_the_working_tree(repos: Repos) -> None:
    run(repos.clone, "checkout", "-q", "-b", "staging", "origin/staging")
    (repos.clone / "drizzle" / "0001_more.sql").write_text("DROP TABLE b;\n")
    (repos.clone / "drizzle" / "9999_untracked.sql").write_text("SELECT 1;\n")
    files = read_files_at(open_repo(repos.clone), repos.staging, "drizzle")
    assert files == {
        "0000_init.sql": b"CREATE TABLE a (id int);\n",
        "0001_more.sql": b"CREATE TABLE b (id int);\n",
        "meta/_journal.json": b'{"entries": []}\n',
    }
    assert read_files_at(open_repo(repos.clone), repos.base, "./drizzle/") == {
        "0000_init.sql": b"CREATE TABLE a (id int);\n"
    }


def test_undone_sees_a_revert_and_nothing_else(repos: Repos) -> None:
    """Every file the release changed back as it was before it: undone. A name git would
    read as a pattern is a name; a rename is both of its paths."""
    other = repos.other
    run(other, "checkout", "-q", "-B", "main", "origin/main")
    before = run(other, "rev-parse", "HEAD")
    commit_files(other, {"odd*name.txt": "new\n"}, "release, part 1")
    run(other, "mv", "app.txt", "moved.txt")
    run(other, "commit", "-q", "-m", "release, part 2")
    release = run(other, "rev-parse", "HEAD")
    repo = open_repo(other)
    assert not undone(repo, before, release, release)
    assert not undone(repo, before, before, release)  # a release that changed no file

    run(other, "revert", "--no-edit", f"{before}..{release}")
    reverted = run(other, "rev-parse", "HEAD")
    assert undone(repo, before, release, reverted)

    later = commit_files(other, {"odd*name.txt": "newer\n"}, "a later change, not a revert")
    assert not undone(repo, before, release, later)
    run(other, "reset", "-q", "--hard", reverted)
    edited = commit_files(other, {"app.txt": "version 3\n"}, "the renamed file, changed later")
    assert not undone(repo, before, release, edited)
    run(other, "reset", "-q", "--hard", reverted)
    commit_files(other, {"oddXname.txt": "a file the pattern would have matched\n"}, "other")
    assert undone(repo, before, release, run(other, "rev-parse", "HEAD"))


def test_read_files_at_rejects_missing_directories_and_commits(repos: Repos) -> None:
    repo = open_repo(repos.clone)
    with pytest.raises(UsageError, match="directory 'drizzle/meta' does not exist"):
        read_files_at(repo, repos.base, "drizzle/meta")
    with pytest.raises(UsageError, match="not a directory"):
        read_files_at(repo, repos.base, "app.txt")
    with pytest.raises(UsageError, match="no commit"):
        read_files_at(repo, "0" * 40, "drizzle")


# --------------------------------------------------------------------------- merge_and_push


def test_merge_and_push_fast_forward(repos: Repos) -> None:
    repo = open_repo(repos.clone)
    plan = preflight(repo, "origin", "staging", "main")
    result = merge_and_push(repo, "origin", plan.source_commit, "main", message="release")
    assert result == MergeResult(
        pushed_commit=repos.staging,
        previous_target_commit=repos.base,
        merge_commit=None,
        fast_forward=True,
    )
    assert repos.origin_tip("main") == repos.staging
    assert run(repos.clone, "symbolic-ref", "--short", "HEAD") == "work"
    assert run(repos.clone, "rev-parse", "refs/heads/main") == repos.staging
    assert run(repos.clone, "status", "--porcelain") == ""


def test_merge_and_push_creates_a_merge_commit(repos: Repos) -> None:
    hotfix = repos.push_from_other("main", {"README": "hotfix readme\n"}, "hotfix")
    repo = open_repo(repos.clone)
    plan = preflight(repo, "origin", "staging", "main")
    result = merge_and_push(repo, "origin", plan.source_commit, "main", message="Release 42")
    assert result.fast_forward is False
    assert result.previous_target_commit == hotfix
    assert result.merge_commit == result.pushed_commit == repos.origin_tip("main")
    parents = run(repos.origin, "rev-list", "--parents", "-n", "1", result.pushed_commit).split()
    assert parents[1:] == [hotfix, repos.staging]
    assert run(repos.origin, "log", "-1", "--format=%s", "main") == "Release 42"
    assert run(repos.origin, "show", "main:README") == "hotfix readme"
    assert run(repos.origin, "show", "main:app.txt") == "version 2"
    assert run(repos.clone, "symbolic-ref", "--short", "HEAD") == "work"


def test_merge_and_push_from_the_target_branch_itself(repos: Repos) -> None:
    run(repos.clone, "checkout", "-q", "main")
    repo = open_repo(repos.clone)
    result = merge_and_push(repo, "origin", repos.staging, "main", message="release")
    assert result.pushed_commit == repos.origin_tip("main") == repos.staging
    assert run(repos.clone, "symbolic-ref", "--short", "HEAD") == "main"
    assert run(repos.clone, "rev-parse", "HEAD") == repos.staging
    assert (repos.clone / "app.txt").read_text() == "version 2\n"


def test_merge_and_push_already_merged_is_a_no_op(repos: Repos) -> None:
    repo = open_repo(repos.clone)
    before = local_state(repos.clone)
    result = merge_and_push(repo, "origin", repos.base, "main", message="release")
    assert result == MergeResult(repos.base, repos.base, merge_commit=None, fast_forward=True)
    assert repos.origin_tip("main") == repos.base
    assert local_state(repos.clone) == before
    assert revert_commands("origin", "main", result) == []


def test_merge_conflict_after_preflight_leaves_everything_as_it_was(repos: Repos) -> None:
    repo = open_repo(repos.clone)
    plan = preflight(repo, "origin", "staging", "main")
    hotfix = repos.push_from_other("main", {"app.txt": "hotfixed version 1\n"}, "hotfix")
    before = local_state(repos.clone)  # no local main yet: merge_and_push must create it
    with pytest.raises(GuardError, match=r"conflicts in: app\.txt$"):
        merge_and_push(repo, "origin", plan.source_commit, "main", message="release")
    assert repos.origin_tip("main") == hotfix
    assert local_state(repos.clone) == before
    assert run(repos.clone, "symbolic-ref", "--short", "HEAD") == "work"


def test_push_refused_by_a_hook_leaves_origin_and_clone_unchanged(repos: Repos) -> None:
    hook = repos.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'frozen: no deploys today' >&2\nexit 1\n")
    hook.chmod(0o755)
    run(repos.clone, "branch", "main", "origin/main")  # an existing, up-to-date local main
    repo = open_repo(repos.clone)
    before = local_state(repos.clone)
    with pytest.raises(GuardError, match="push of main to origin rejected") as caught:
        merge_and_push(repo, "origin", repos.staging, "main", message="release")
    assert "pre-receive hook declined" in str(caught.value)
    assert repos.origin_tip("main") == repos.base
    assert local_state(repos.clone) == before


def test_push_rejected_when_someone_pushed_meanwhile(repos: Repos) -> None:
    """A colleague pushes between our fetch and our push (simulated by our own pre-push hook)."""
    hook = repos.clone / ".git" / "hooks" / "pre-push"
    hook.write_text(
        "#!/bin/sh\n"
        f"cd '{repos.other}' && unset GIT_DIR GIT_INDEX_FILE GIT_WORK_TREE"
        " && git fetch -q origin && git checkout -q -B main origin/main"
        " && echo race > race.txt && git add race.txt && git commit -q -m race"
        " && git push -q origin main\n"
    )
    hook.chmod(0o755)
    run(repos.clone, "checkout", "-q", "main")
    repo = open_repo(repos.clone)
    before = local_state(repos.clone)
    with pytest.raises(GuardError, match="push of main to origin rejected"):
        merge_and_push(repo, "origin", repos.staging, "main", message="release")
    assert repos.origin_tip("main") == run(repos.other, "rev-parse", "HEAD") != repos.staging
    assert local_state(repos.clone) == before


def test_merge_and_push_refuses_unpushed_local_commits(repos: Repos) -> None:
    run(repos.clone, "checkout", "-q", "main")
    commit_files(repos.clone, {"local.txt": "unreviewed\n"}, "local only")
    run(repos.clone, "checkout", "-q", "work")
    before = local_state(repos.clone)
    with pytest.raises(GuardError, match="unreviewed local commits"):
        merge_and_push(open_repo(repos.clone), "origin", repos.staging, "main", message="x")
    assert repos.origin_tip("main") == repos.base
    assert local_state(repos.clone) == before


def test_merge_and_push_refuses_a_dirty_tree(repos: Repos) -> None:
    (repos.clone / "README").write_text("dirty\n")
    with pytest.raises(GuardError, match="uncommitted changes: README"):
        merge_and_push(open_repo(repos.clone), "origin", repos.staging, "main", message="x")
    assert repos.origin_tip("main") == repos.base


# --------------------------------------------------------------------------- is_merged


def test_is_merged_before_and_after(repos: Repos) -> None:
    repo = open_repo(repos.clone)
    assert is_merged(repo, "origin", "main", repos.staging) is False
    assert is_merged(repo, "origin", "main", repos.base) is True
    assert is_merged(repo, "origin", "main", "f" * 40) is False  # unknown commit
    # Released by somebody else: only a fresh fetch can tell.
    run(repos.other, "push", "-q", "origin", "origin/staging:refs/heads/main")
    assert is_merged(repo, "origin", "main", repos.staging) is True


# --------------------------------------------------------------------------- revert


def test_revert_commands_exact_strings() -> None:
    merge = MergeResult("m" * 7, "p" * 7, merge_commit="m" * 7, fast_forward=False)
    assert revert_commands("origin", "main", merge) == [
        "git fetch origin",
        "git checkout main",
        "git merge --ff-only origin/main",
        "git revert --no-edit -m 1 mmmmmmm",
        "git push origin main",
    ]
    ff = MergeResult("b" * 7, "a" * 7, merge_commit=None, fast_forward=True)
    assert revert_commands("prod", "release", ff) == [
        "git fetch prod",
        "git checkout release",
        "git merge --ff-only prod/release",
        "git cherry-pick \"$(git commit-tree 'aaaaaaa^{tree}' -p bbbbbbb "
        "-m 'Revert release aaaaaaa..bbbbbbb')\"",
        "git push prod release",
    ]


@pytest.mark.parametrize("no_ff", [False, True])
def test_the_printed_revert_commands_run_as_printed_in_a_fresh_clone(
    repos: Repos, tmp_path: Path, no_ff: bool
) -> None:
    # A fast-forward whose range holds a merge commit (`git revert A..B` stops at it), or a
    # merge commit of its own: an operator pastes the plan's lines into a shell, one by one.
    staging_with_a_merge_inside(repos)
    repo = open_repo(repos.clone)
    plan = preflight(repo, "origin", "staging", "main")
    if no_ff:
        repos.push_from_other("main", {"hotfix.txt": "hotfix\n"}, "hotfix")
    result = merge_and_push(repo, "origin", plan.source_commit, "main", message="release")
    assert result.fast_forward is not no_ff
    previous_tree = run(repos.origin, "rev-parse", f"{result.previous_target_commit}^{{tree}}")
    operator = clone(repos.origin, tmp_path / "operator")
    for command in revert_commands("origin", "main", result):
        done = subprocess.run(command, shell=True, cwd=operator, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    assert repos.origin_tree("main") == previous_tree
    assert run(repos.origin, "rev-parse", "main^") == result.pushed_commit  # ONE commit


def test_revert_release_of_a_merge_commit(repos: Repos) -> None:
    repos.push_from_other("main", {"README": "hotfix readme\n"}, "hotfix")
    repo = open_repo(repos.clone)
    result = merge_and_push(repo, "origin", repos.staging, "main", message="release")
    assert result.merge_commit is not None
    previous_tree = run(repos.origin, "rev-parse", f"{result.previous_target_commit}^{{tree}}")
    assert repos.origin_tree("main") != previous_tree

    reverted = revert_release(repo, "origin", "main", result, message="Roll back release")
    assert repos.origin_tip("main") == reverted
    assert repos.origin_tree("main") == previous_tree
    assert run(repos.origin, "rev-parse", f"{reverted}^") == result.pushed_commit
    assert run(repos.origin, "log", "-1", "--format=%s", "main") == "Roll back release"
    assert run(repos.clone, "symbolic-ref", "--short", "HEAD") == "work"
    assert is_merged(repo, "origin", "main", repos.staging)  # history keeps it; the tree does not


def staging_with_a_merge_inside(repos: Repos) -> None:
    """staging gets a feature branch merged with --no-ff: `git revert A..B` would choke on it."""
    run(repos.other, "fetch", "-q", "origin")
    run(repos.other, "checkout", "-q", "-B", "feature", "origin/staging")
    commit_files(repos.other, {"feature.txt": "feature\n", "app.txt": None}, "feature")
    run(repos.other, "checkout", "-q", "-B", "staging", "origin/staging")
    commit_files(repos.other, {"drizzle/0002_more.sql": "SELECT 2;\n"}, "staging side")
    run(repos.other, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    run(repos.other, "push", "-q", "origin", "staging")


def test_revert_release_of_a_fast_forward_with_merges_inside_is_one_commit(repos: Repos) -> None:
    staging_with_a_merge_inside(repos)
    repo = open_repo(repos.clone)
    plan = preflight(repo, "origin", "staging", "main")
    result = merge_and_push(repo, "origin", plan.source_commit, "main", message="release")
    assert result.fast_forward and result.merge_commit is None
    base_tree = run(repos.origin, "rev-parse", f"{repos.base}^{{tree}}")

    reverted = revert_release(repo, "origin", "main", result)
    assert repos.origin_tree("main") == base_tree
    assert run(repos.origin, "rev-parse", f"{reverted}^") == result.pushed_commit  # ONE commit
    subject = run(repos.origin, "log", "-1", "--format=%s", "main")
    assert subject == f"Revert release {repos.base[:12]}..{result.pushed_commit[:12]} on main"
    assert run(repos.clone, "symbolic-ref", "--short", "HEAD") == "work"
    assert run(repos.clone, "status", "--porcelain") == ""


def test_revert_release_keeps_later_unrelated_commits(repos: Repos) -> None:
    repo = open_repo(repos.clone)
    result = merge_and_push(repo, "origin", repos.staging, "main", message="release")
    later = repos.push_from_other("main", {"later.txt": "later\n"}, "later fix")

    reverted = revert_release(repo, "origin", "main", result)
    assert run(repos.origin, "rev-parse", f"{reverted}^") == later
    assert run(repos.origin, "show", "main:later.txt") == "later"
    assert run(repos.origin, "show", "main:app.txt") == "version 1"
    tracked = run(repos.origin, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert "drizzle/0001_more.sql" not in tracked


def test_revert_release_refuses_conflicting_later_commits(repos: Repos) -> None:
    repo = open_repo(repos.clone)
    result = merge_and_push(repo, "origin", repos.staging, "main", message="release")
    later = repos.push_from_other("main", {"app.txt": "version 3\n"}, "builds on the release")
    before = local_state(repos.clone)
    with pytest.raises(GuardError, match=r"conflicts in: app\.txt$"):
        revert_release(repo, "origin", "main", result)
    assert repos.origin_tip("main") == later
    assert local_state(repos.clone) == before


def test_revert_release_refuses_rewritten_history_and_no_ops(repos: Repos) -> None:
    repo = open_repo(repos.clone)
    result = merge_and_push(repo, "origin", repos.staging, "main", message="release")
    run(repos.other, "push", "-q", "--force", "origin", f"{repos.base}:refs/heads/main")
    with pytest.raises(GuardError, match="no longer contains the released commit"):
        revert_release(repo, "origin", "main", result)
    no_op = MergeResult(repos.base, repos.base, merge_commit=None, fast_forward=True)
    with pytest.raises(GuardError, match="nothing to revert"):
        revert_release(repo, "origin", "main", no_op)


def test_revert_release_push_rejected_restores_the_clone(repos: Repos) -> None:
    repo = open_repo(repos.clone)
    result = merge_and_push(repo, "origin", repos.staging, "main", message="release")
    hook = repos.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    before = local_state(repos.clone)
    with pytest.raises(GuardError, match="push of main to origin rejected"):
        revert_release(repo, "origin", "main", result)
    assert repos.origin_tip("main") == repos.staging
    assert local_state(repos.clone) == before


def test_a_revert_branch_pushed_before_is_reused_only_when_it_holds_this_revert(
    repos: Repos,
) -> None:
    # The first attempt pushed its branch, then could not open the pull request: a re-run
    # opens it from the same revert, not a refusal for ever.
    repo = open_repo(repos.clone)
    result = merge_and_push(repo, "origin", repos.staging, "main", message="release")
    args = (repo, "origin", "main", result, "revert-run1")
    first = revert_release_on_branch(*args, message="Revert release (run1)")
    assert repos.origin_tip("revert-run1") == first
    assert revert_release_on_branch(*args, message="Revert release (run1)") == first
    assert repos.origin_tip("revert-run1") == first and repos.origin_tip("main") == repos.staging
    # Someone else's branch of that name is not taken for it.
    with pytest.raises(GuardError, match="'revert-run1' already exists on origin"):
        revert_release_on_branch(*args, message="Revert release (run2)")
    assert repos.origin_tip("revert-run1") == first


def test_git_errors_are_typed(repos: Repos) -> None:
    """GitPython's own exceptions never escape: an unknown source commit is a GuardError."""
    with pytest.raises(GuardError, match="is not in"):
        merge_and_push(open_repo(repos.clone), "origin", "1" * 40, "main", message="x")
