"""Children die with the process that started them: a killed deploy leaves nothing running.

Real processes only: a real bare origin whose pre-receive hook sleeps, a real ``git push``
started through the runtime's git wrapper in a subprocess, SIGKILLed mid-push.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import children

REPO_ROOT = Path(__file__).resolve().parent.parent


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(text.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_until(
    predicate: Callable[[], object], starter: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait for ``predicate``, however slow the machine is: no clock. Fails if ``starter``,
    the process that was to bring it about, ends first."""
    while not predicate():
        if starter is not None and starter.poll() is not None:
            pytest.fail(f"process {starter.pid} exited {starter.returncode} first")
        time.sleep(0.05)


def start_python(code: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env)


def test_a_deploy_killed_mid_push_leaves_no_git_behind_and_the_push_does_not_land(
    tmp_path: Path,
) -> None:
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    git(clone, "checkout", "-q", "-b", "main")
    for key, value in (("user.name", "T"), ("user.email", "t@example.com")):
        git(clone, "config", key, value)
    git(clone, "commit", "-q", "--allow-empty", "-m", "base")
    git(clone, "push", "-q", "origin", "main")
    before = git(origin, "rev-parse", "refs/heads/main")
    git(clone, "commit", "-q", "--allow-empty", "-m", "release")
    started = tmp_path / "hook-started"
    hook = origin / "hooks" / "pre-receive"
    # The hook's pid is sleep's (exec): alive while the push waits for it.
    hook.write_text(f"#!/bin/sh\necho $$ > {started}\nexec sleep 15\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)

    deploy = start_python(
        f"""
        import git
        from orchestrator.gitrepo.process import git_output
        git_output(git.Git({str(clone)!r}), "push", "origin", "main")
        """
    )
    left: set[int] = set()
    try:
        wait_until(lambda: started.exists() and started.read_text().strip(), deploy)
        hook_pid = int(started.read_text())
        left = descendants(deploy.pid)
        assert hook_pid in left, "the hook runs below the deploy"
        os.kill(deploy.pid, signal.SIGKILL)
        deploy.wait()
        # No clock: a survivor ends by itself once the hook's sleep is over, and the push
        # lands then (git-receive-pack is among them).
        wait_until(lambda: not any(alive(p) for p in left))
        assert git(origin, "rev-parse", "refs/heads/main") == before, "the push landed"
    finally:
        deploy.kill()
        for pid in left:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def assert_dies_with_its_owner(
    owner: subprocess.Popen[bytes],
    pid_file: Path,
    *,
    message: str,
    survived: Path | None = None,
    group: bool = False,
) -> None:
    """The process whose pid ``owner`` writes to ``pid_file`` ends once ``owner`` is
    SIGKILLed, killed: had it survived until it ends by itself, it wrote ``survived`` (a
    process that never ends by itself has none: a survivor keeps the test waiting). No clock.
    Whatever happens, nothing is left running."""
    pid = 0
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), owner)
        pid = int(pid_file.read_text())
        assert alive(pid)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        wait_until(lambda: not alive(pid))
        assert survived is None or not survived.exists(), message
    finally:
        owner.kill()
        if pid and alive(pid):
            (os.killpg if group else os.kill)(pid, signal.SIGKILL)


def test_a_grandchild_dies_with_the_parent_too(tmp_path: Path) -> None:
    pid_file, survived = tmp_path / "grandchild", tmp_path / "survived"
    parent = start_python(
        f"""
        from orchestrator import children
        children.run(["sh", "-c", "(sleep 60 && touch {survived}) & echo $! > {pid_file}; wait"])
        """
    )
    assert_dies_with_its_owner(
        parent, pid_file, survived=survived, message="the grandchild outlived us"
    )


def test_run_returns_status_and_output_and_can_keep_files_private(tmp_path: Path) -> None:
    done = children.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    created = tmp_path / "made"
    children.run(["sh", "-c", f"echo secret > {created}"], private_files=True)
    assert stat.S_IMODE(created.stat().st_mode) == 0o600
    shared = tmp_path / "shared"
    children.run(["sh", "-c", f"umask 022; echo x > {shared}"])
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644


def test_a_throwaway_cluster_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """``pg_ctl start`` detaches the server (``--rehearse-on local``, the demo): a killed
    orchestrator must not leave it running, backends and all."""
    pid_file = tmp_path / "postmaster"
    owner = start_python(
        f"""
        import pathlib, time
        from orchestrator.sandbox.pg import EmbeddedPostgres
        cluster = EmbeddedPostgres()
        cluster.start()
        pid = (cluster.datadir / "postmaster.pid").read_text().split()[0]
        pathlib.Path({str(pid_file)!r}).write_text(pid)
        time.sleep(120)
        """
    )
    assert_dies_with_its_owner(
        owner,
        pid_file,
        message="the cluster outlived its owner",
        group=True,  # the postmaster leads its own group: its backends go with it
    )


def test_an_interrupt_kills_what_the_child_started_and_later_children_still_run(
    tmp_path: Path,
) -> None:
    """Ctrl-C while a child runs: the child and what it started are killed at once (had the
    grandchild survived, it would write ``survived``); the interrupted process goes on and
    its next child runs as before."""
    pid_file, survived, after = tmp_path / "grandchild", tmp_path / "survived", tmp_path / "after"
    script = f"(sleep 60 && touch {survived}) & echo $! > {pid_file}; wait"
    parent = start_python(
        f"""
        import pathlib, time
        from orchestrator import children
        try:
            children.run(["sh", "-c", {script!r}])
        except KeyboardInterrupt:
            done = children.run(["sh", "-c", "echo again"])
            pathlib.Path({str(after)!r}).write_text(f"{{done.returncode}} {{done.stdout}}")
        time.sleep(60)
        """
    )
    grandchild = 0
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), parent)
        grandchild = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGINT)
        wait_until(lambda: after.exists() and after.read_text(), parent)
        assert after.read_text() == "0 again\n"
        wait_until(lambda: not alive(grandchild))  # no clock: a survivor ends in 60 s
        assert not survived.exists(), "the grandchild outlived the interrupt"
    finally:
        parent.kill()
        if grandchild and alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
