"""Disk full or an unwritable run directory: the deploy refuses to start rather than run
without an audit trail.

``deploy.start`` calls :meth:`RunStore.check_writable` (write + fsync a probe) before it takes
the database or creates a run; these tests make that probe fail for real (a read-only mount or
directory, a path under a regular file, a tmpfs filled to ENOSPC) and check that the refusal
is one line naming the directory and the OS error, and that nothing else happened.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import run
from orchestrator.sandbox.release import git
from tests.drizzle_helpers import schema_fingerprint, tracking_rows
from tests.release_world import World

IS_ROOT = os.geteuid() == 0


# --------------------------------------------------------------------------- helpers


@contextmanager
def tmpfs(directory: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``directory`` for the ``with`` block; skip if we cannot mount."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def fill(directory: Path) -> int:
    """Write into ``directory`` until the file system says ENOSPC; the bytes written."""
    written = 0
    with (directory / "ballast").open("wb", buffering=0) as ballast:
        while True:
            try:
                written += ballast.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return written


def world_state(world: World) -> dict[str, Any]:
    """The database and both repositories, as precisely as an operator could compare them."""
    clone, origin = world.repo.clone, world.repo.origin
    return {
        "schema": schema_fingerprint(world.database_url),
        "tracking": tracking_rows(world.database_url),
        "clone_refs": git(clone, "for-each-ref", "--format=%(refname) %(objectname)"),
        "clone_head": (clone / ".git" / "HEAD").read_text(),
        "clone_status": git(clone, "status", "--porcelain", "--untracked-files=all"),
        "clone_worktrees": git(clone, "worktree", "list", "--porcelain"),
        "clone_tree": {
            str(p.relative_to(clone)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(clone.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(clone).parts
        },
        "origin_refs": git(origin, "for-each-ref", "--format=%(refname) %(objectname)"),
    }


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def deploy_into(
    world: World, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """``orchestrator deploy --yes --json --state-dir <state_dir>``: exit code and stderr."""
    code = run(
        [
            "deploy",
            "--playbook",
            str(world.playbook),
            "--yes",
            "--json",
            "--state-dir",
            str(state_dir),
        ]
    )
    captured = capsys.readouterr()
    # No run record to print: the error's document, as every --json command prints on one.
    document = json.loads(captured.out)
    assert "run_id" not in document and document["exit_code"] == code, document
    return code, captured.err


def assert_refused(err: str, state_dir: Path, os_error: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == (
        f"error: cannot write run records in {state_dir / 'runs'}: {os_error}; nothing was started"
    )


@pytest.fixture(autouse=True)
def _database_env(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", world.database_url)


# --------------------------------------------------------------------------- tests


def test_read_only_state_dir_refuses_to_start(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "readonly-state"
    before = world_state(world)
    if IS_ROOT:  # chmod does not stop root: a read-only file system does
        with tmpfs(state_dir, "ro,size=64k"):
            code, err = deploy_into(world, state_dir, capsys)
            assert files_under(state_dir) == []
        os_error = os.strerror(errno.EROFS)
    else:
        state_dir.mkdir()
        state_dir.chmod(0o555)
        try:
            code, err = deploy_into(world, state_dir, capsys)
            assert files_under(state_dir) == []
        finally:
            state_dir.chmod(0o755)
        os_error = os.strerror(errno.EACCES)
    assert code == 2, err
    assert_refused(err, state_dir, os_error)
    assert world_state(world) == before


def test_state_dir_under_a_regular_file_refuses_to_start(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory's parent should be\n")
    state_dir = blocker / "state"
    before = world_state(world)

    code, err = deploy_into(world, state_dir, capsys)

    assert code == 2, err
    assert_refused(err, state_dir, os.strerror(errno.ENOTDIR))
    assert world_state(world) == before
    assert blocker.read_text().startswith("a file where")


@pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs to fill needs root")
def test_full_disk_refuses_to_start(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = world_state(world)
    with tmpfs(tmp_path / "small-disk", "size=64k") as disk:
        assert fill(disk) > 0
        state_dir = disk / "state"
        code, err = deploy_into(world, state_dir, capsys)
        # The refusal left nothing behind on the full disk: no run, no probe, no tmp file.
        assert files_under(disk) == ["ballast"]
        assert not (state_dir / "runs").exists() or list((state_dir / "runs").iterdir()) == []
    assert code == 2, err
    assert_refused(err, state_dir, os.strerror(errno.ENOSPC))
    assert world_state(world) == before
