"""Child processes that die with us: every program the runtime starts goes through here.

A deploy may be killed at any point, SIGKILL included, and must leave nothing running on its
behalf: a ``git push`` outliving the deploy lands the push later, unattended; a ``pg_dump``
goes on reading production. Two layers make a child die with this process:

- each child is started as the leader of its own process group and, on Linux, with
  ``PR_SET_PDEATHSIG`` = SIGKILL (``prctl`` through ctypes): the kernel kills it the moment
  the thread that started it dies;
- that signal is not inherited by the child's own children (``git push`` to a local remote
  runs ``git-receive-pack``, which runs the pre-receive hook, and lands the push when the hook
  ends), so a *guard* (one small process per orchestrator process, started on first use, in
  its own session) holds the process groups of the running children and SIGKILLs them when
  the pipe from us closes, which the kernel does when we die however we die.

Elsewhere than Linux (no ``prctl``) the guard alone kills the children's groups; a child that
leaves its process group (``setsid``) escapes both layers. Windows is not supported (no
process groups nor ``preexec_fn``). A child registers its group with the guard itself, before
``exec``, so no window is left where it runs unknown to the guard.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

_PR_SET_PDEATHSIG = 1  # linux/prctl.h

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

_lock = threading.Lock()
_guard_fd: int | None = None
_guard_pid: int | None = None


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
    returned, not raised; a program that cannot be started raises ``OSError``.
    ``private_files``: what the child creates is readable by the owner only (umask 077).
    If we are interrupted while it runs (Ctrl-C), its whole process group is killed.
    """
    guard = _guard()
    preexec = _in_child(os.getpid(), guard, private_files)
    with subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors=errors,
        preexec_fn=preexec,
    ) as process:
        try:
            stdout, stderr = process.communicate()
        except BaseException:
            _kill_group(process.pid)
            raise
        finally:
            _release(guard, process.pid)
    return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)


def watch_group(pgid: int) -> None:
    """Have the guard SIGKILL process group ``pgid`` if we die before :func:`unwatch_group`.

    For a server a child started and left running in a session of its own (``pg_ctl start``
    detaches the postmaster, whose backends share its group): neither the parent-death
    signal nor :func:`run` reaches it.
    """
    guard = _guard()
    if guard is not None:
        with contextlib.suppress(OSError):  # no guard: nothing more can be done
            os.write(guard, b"+%d\n" % pgid)


def unwatch_group(pgid: int) -> None:
    """Group ``pgid`` was ended on purpose (the server stopped): the guard forgets it."""
    with _lock:
        guard = _guard_fd if _guard_pid == os.getpid() else None
    _release(guard, pgid)


def die_with_parent() -> None:
    """In a child, before ``exec``: be SIGKILLed when the parent thread dies (Linux only;
    elsewhere a no-op). For a ``preexec_fn``; :func:`run` does this and more."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _load_prctl() -> Callable[[int, int], int] | None:
    # Resolved here, in the parent: loading a library between fork and exec may deadlock.
    try:
        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: the guard of :func:`run` is the only layer
    return prctl


_PRCTL = _load_prctl()


def _in_child(parent: int, guard: int | None, private_files: bool) -> Callable[[], None]:
    def preexec() -> None:
        os.setpgid(0, 0)  # own group: the guard kills it with all it started
        if guard is not None:
            # A dead guard must not kill us with SIGPIPE (restored to default in the child).
            previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            try:
                os.write(guard, b"+%d\n" % os.getpid())
            except OSError:
                pass
            finally:
                signal.signal(signal.SIGPIPE, previous)
        if private_files:
            os.umask(0o077)
        die_with_parent()
        if os.getppid() != parent:
            # The parent died before the signal was set: go too. subprocess turns an exception
            # here into the child's exit before exec.
            raise ChildProcessError("the parent died before the child started")

    return preexec


def _guard() -> int | None:
    """The write end of the guard's pipe, the guard started on first use (None if it
    cannot start: the children then have only PR_SET_PDEATHSIG)."""
    global _guard_fd, _guard_pid
    with _lock:
        if _guard_fd is not None and _guard_pid == os.getpid():
            return _guard_fd
        read_end, write_end = os.pipe()  # both close-on-exec: no child inherits them
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", "-c", _GUARD],
                dict(os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read_end, 0),
                    (os.POSIX_SPAWN_DUP2, devnull, 1),
                    (os.POSIX_SPAWN_DUP2, devnull, 2),
                ],
                setsid=True,  # no terminal signal (Ctrl-C, hang-up) reaches it before us
            )
        # No guard where the platform cannot start one (no posix_spawn, or no setsid for it:
        # AttributeError, NotImplementedError): the children keep PR_SET_PDEATHSIG alone.
        except (OSError, AttributeError, NotImplementedError):
            os.close(write_end)
            return None
        finally:
            os.close(read_end)
            os.close(devnull)
        _guard_fd, _guard_pid = write_end, os.getpid()
        return _guard_fd


def _release(guard: int | None, pgid: int) -> None:
    if guard is None:
        return
    with contextlib.suppress(OSError):  # the guard is gone: nothing to tell it
        os.write(guard, b"-%d\n" % pgid)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(OSError):  # already gone
        os.killpg(pgid, signal.SIGKILL)
