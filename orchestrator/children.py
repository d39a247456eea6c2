"""Child processes that die with us: every program the runtime starts goes through here.

A deploy may be killed at any point, SIGKILL included, and must leave nothing running on its behalf:
a ``git push`` outliving the deploy lands the push later, unattended; a ``pg_dump`` goes on reading
production. Two small processes, started on first use (once per orchestrator process), make every
child die with us, and whatever the child itself started (``git push`` to a local remote runs
``git-receive-pack``, which runs the pre-receive hook, and lands the push when the hook ends):

- the *leader* leads one process group of our session and only waits for us. Every child
  joins its group as it starts (``Popen(process_group=...)``: the ``setpgid`` happens
  between fork and exec in C, so no Python code runs in the child and Python can use
  ``vfork``, which a big parent pays for far less than ``fork``); so does what the child
  starts, unless it leaves the group (``setsid``);
- the *guard*, in a session of its own (no terminal signal reaches it before us), holds the
  process groups it is told of, the leader's first, and SIGKILLs them when the pipe from us
  closes, which the kernel does when we die however we die.

The leader's group is named to the guard before any child joins it, and a child holds our end of the
pipe until it execs (it has joined the group by then), so no child runs unknown to the guard. Where
the guard or the leader cannot start (no ``posix_spawn``, no ``/bin/sh``), each child leads a group
of its own and nothing kills it when we die. Windows is not supported (no process groups).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

# The guard: read "+<pgid>" / "-<pgid>" lines until EOF (we died, or exited), then SIGKILL
# every group still registered. Run with -I -S: nothing but the standard library is needed.
_GUARD = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups = set()
for line in sys.stdin.buffer:
    try:
        pgid = int(line[1:])
    except ValueError:
        continue
    (groups.add if line[:1] == b"+" else groups.discard)(pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""

# The leader: waits for the end of its stdin (a pipe only we write to), i.e. for our end.
_LEADER = ["/bin/sh", "-c", "read _"]

_lock = threading.Lock()
_owner: int | None = None  # the process the guard and leader below belong to
_guard_fd: int | None = None  # our end of the guard's pipe
_leader: int | None = None  # the children's group (its leader's pid)
_leader_fd: int | None = None  # our end of the leader's pipe


def run(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    private_files: bool = False,
    errors: str = "strict",
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end as a child that dies with us; its output, decoded as UTF-8.

    stdin is empty (nothing here prompts); stdout and stderr are captured. A non-zero exit is
    returned, not raised; a program that cannot be started raises ``OSError``. ``private_files``:
    what the child creates is readable by the owner only (umask 077). If we are interrupted while it
    runs (Ctrl-C), every child of ours is killed, with all they started.
    """
    children = group()
    process: subprocess.Popen[str] | None = None
    try:
        with subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors=errors,
            process_group=children,
            umask=0o077 if private_files else -1,
        ) as process:
            stdout, stderr = process.communicate()
    except KeyboardInterrupt:  # and every stop signal (orchestrator.interrupts)
        # Interrupted while it started or ran: all our children go (no group: it, once known).
        pgid = children or (process.pid if process is not None else 0)
        if pgid:
            _kill_children(pgid)
        raise
    return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)


def group() -> int:
    """The process group our children join (``Popen(process_group=group())``), made on first
    use and known to the guard; 0 (a group of the child's own) where no guard can start."""
    global _leader, _leader_fd
    with _lock:
        guard = _guard()
        if guard is None:
            return 0
        if _leader is None or _ended(_leader):
            if _leader_fd is not None:
                os.close(_leader_fd)
                _leader_fd = None
            try:
                _leader, _leader_fd = _spawn_on_pipe(_LEADER, session=False)
            except OSError:  # no /bin/sh: each child in a group of its own
                _leader = None
                return 0
            _tell(guard, b"+%d\n" % _leader)
        return _leader


def watch_group(pgid: int) -> None:
    """Have the guard SIGKILL process group ``pgid`` if we die before :func:`unwatch_group`.

    For a server a child started and left running in a session of its own (``pg_ctl start`` detaches
    the postmaster, whose backends share its group): the children's group does not hold it.
    """
    with _lock:
        guard = _guard()
    _tell(guard, b"+%d\n" % pgid)


def unwatch_group(pgid: int) -> None:
    """Group ``pgid`` was ended on purpose (the server stopped): the guard forgets it."""
    with _lock:
        guard = _guard_fd if _owner == os.getpid() else None
    _tell(guard, b"-%d\n" % pgid)


def _guard() -> int | None:
    """Our end of the guard's pipe, the guard started on first use (called holding _lock)."""
    global _owner, _guard_fd, _leader, _leader_fd
    if _owner != os.getpid():  # first use, or a forked copy of us: processes of its own
        _owner, _guard_fd, _leader, _leader_fd = os.getpid(), _start_guard(), None, None
    return _guard_fd


def _start_guard() -> int | None:
    """Our end of the pipe of a new guard; None where the platform cannot start one (no
    ``posix_spawn``, or no ``setsid`` for it)."""
    try:
        _, write_end = _spawn_on_pipe([sys.executable, "-I", "-S", "-c", _GUARD], session=True)
    except (OSError, AttributeError, NotImplementedError):
        return None
    return write_end


def _spawn_on_pipe(argv: list[str], *, session: bool) -> tuple[int, int]:
    """Start ``argv`` reading a new pipe (stdout and stderr to /dev/null), in a session of
    its own or else in a process group of its own: its pid and our end of the pipe, whose
    closing (at our end, however we end) is its end of input."""
    own: dict[str, Any] = {"setsid": True} if session else {"setpgroup": 0}
    read_end, write_end = os.pipe()  # both close-on-exec: no child of ours inherits them
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, read_end, 0),
                (os.POSIX_SPAWN_DUP2, devnull, 1),
                (os.POSIX_SPAWN_DUP2, devnull, 2),
            ],
            **own,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
        os.close(devnull)
    return pid, write_end


def _ended(pid: int) -> bool:
    """Whether our child ``pid`` has ended (reaped here if so)."""
    try:
        return os.waitpid(pid, os.WNOHANG) != (0, 0)
    except ChildProcessError:
        return True


def _tell(guard: int | None, line: bytes) -> None:
    if guard is None:
        return
    with contextlib.suppress(OSError):  # the guard is gone: nothing to tell it
        os.write(guard, line)


def _kill_children(pgid: int) -> None:
    """SIGKILL group ``pgid``; the guard forgets it (its number may be used again)."""
    with contextlib.suppress(OSError):  # already gone
        os.killpg(pgid, signal.SIGKILL)
    unwatch_group(pgid)
