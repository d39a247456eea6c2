"""A throwaway cluster's data directory, made once by ``initdb`` and copied for the next.

``initdb`` is most of what starting a throwaway cluster costs, and for the same server
binaries it writes the same files. So the first cluster's data directory, before its server
first starts, is kept under ``<directory>/<key>/data`` (the key: a SHA-256 of the binaries'
version and directory and of initdb's options), and each later cluster copies it.

It is written in a temporary directory, flushed to disk and only then renamed into place, so
a half-written one is never seen. Keeping locks the directory (``flock``), copying shares the
lock: of clusters made at once one keeps theirs, and nothing is removed while it is copied.
It is used only when it and its directory are ours and nobody else can write them (its
settings are the server's); one that is not is replaced, and the others removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from orchestrator.privacy import private_directory_at

FORMAT = 1  # bump when what is kept, or how, changes

#: The uid and gid a copy is handed to (the server's OS user), or None to keep ours.
Owner = tuple[int, int] | None


def prepared_key(bindir: Path, options: Sequence[str]) -> str:
    """The key of the data directory ``initdb`` of ``bindir`` makes with ``options``."""
    version = subprocess.run(
        [str(bindir / "initdb"), "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    digest = hashlib.sha256()
    for part in (str(FORMAT), version, str(bindir.resolve()), *options):
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()


def copy_prepared(directory: Path, key: str, target: Path, owner: Owner) -> bool:
    """Copy the data directory kept under ``key`` to ``target`` (which must not exist);
    False, with ``target`` as it was, when none is kept or it is not ours to use."""
    if not private_directory_at(directory, create=False):
        return False
    try:
        with _locked(directory, fcntl.LOCK_SH):
            if not _usable(directory / key):
                return False
            shutil.copytree(directory / key / "data", target, symlinks=True)
    except FileExistsError:
        return False  # not ours to remove
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        return False
    if owner is not None:
        for path in (target, *target.rglob("*")):
            os.chown(path, *owner, follow_symlinks=False)
    return True


def keep_prepared(directory: Path, key: str, datadir: Path) -> None:
    """Keep a copy of ``datadir`` (just made by ``initdb``, never started) under ``key``, in
    place of any kept before. A failure only means the next cluster runs ``initdb`` too."""
    if not private_directory_at(directory, create=True):
        return
    with contextlib.suppress(OSError), _locked(directory, fcntl.LOCK_EX):
        if _usable(directory / key):
            return  # another cluster kept it while this one ran initdb
        for kept in directory.iterdir():  # a damaged one, other binaries', what a crash left
            shutil.rmtree(kept, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
        shutil.copytree(datadir, building / "data", symlinks=True)
        os.sync()  # on disk before it is in place: a crash must not leave a damaged one
        os.rename(building, directory / key)


@contextlib.contextmanager
def _locked(directory: Path, operation: int) -> Iterator[None]:
    """Hold ``flock`` ``operation`` on ``directory`` (it conflicts across threads too)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _usable(kept: Path) -> bool:
    return private_directory_at(kept, create=False) and (kept / "data" / "PG_VERSION").is_file()
