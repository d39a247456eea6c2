"""A throwaway cluster's data directory prepared once by ``initdb`` and copied for the next.

``initdb`` is most of what starting a throwaway cluster costs, and it builds the same files
each time for the same server binaries. So the first cluster of a set of binaries is made
by ``initdb``, and its data directory, before the server first starts, is kept in a
directory of ours (``<directory>/<key>/``, the key a SHA-256 of the binaries' version,
their directory and initdb's options); each later cluster copies it instead.

What is kept is never trusted blindly:

- it is built in a temporary directory beside its place, written to disk (``fsync``) and
  renamed into it, so nobody sees a half-written one, even after an OS crash, and of two
  processes preparing it at once, one wins and the other's copy is removed;
- a listing of its directories and of each file's size is written last, and a copy is
  made only from a directory that is ours and writable by nobody else (its settings are
  the server's: another user must not be able to write them), whose listing reads and
  whose files all have their listed sizes; anything else (damaged, foreign, truncated by a
  crash) is moved aside and removed, and the cluster is made by ``initdb`` and kept anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

FORMAT = 1  # bump when what is kept, or how, changes
LISTING = "listing.json"
KEEP = 2  # prepared data directories kept (one per set of binaries), most recently used first

#: The uid and gid a copy is handed to (the server's OS user), or None to keep ours.
Owner = tuple[int, int] | None


def prepared_key(bindir: Path, options: Sequence[str]) -> str:
    """The key of the data directory ``initdb`` of ``bindir`` makes with ``options``."""
    version = subprocess.run(
        [str(bindir / "initdb"), "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    digest = hashlib.sha256()
    for part in (str(FORMAT), version, str(bindir.resolve()), *options):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def copy_prepared(directory: Path, key: str, target: Path, owner: Owner) -> bool:
    """Copy the data directory kept under ``key`` to ``target`` (which must not exist);
    False, with ``target`` absent, when none is kept or it is not fit to use."""
    source = directory / key
    listing = _listing(directory, source)
    if listing is None:
        return False
    dirs, sizes = listing
    try:
        target.mkdir(mode=0o700)
    except OSError:
        return False
    try:
        _hand_over(target, owner)
        for name in dirs[1:]:
            (target / name).mkdir(mode=0o700)
            _hand_over(target / name, owner)
        for name, size in sizes.items():
            shutil.copyfile(source / "data" / name, target / name, follow_symlinks=False)
            if os.stat(target / name).st_size != size:
                raise OSError(f"{name}: not of its listed size")
            _hand_over(target / name, owner)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        _discard(directory, source)
        return False
    with contextlib.suppress(OSError):
        os.utime(source / LISTING)  # most recently used: removed last
    return True


def keep_prepared(directory: Path, key: str, datadir: Path) -> None:
    """Keep a copy of ``datadir`` (just made by ``initdb``, never started) under ``key``.
    A failure only means the next cluster runs ``initdb`` too."""
    if not _usable(directory, create=True):
        return
    try:
        building = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    except OSError:
        return
    try:
        dirs, sizes = [""], {}
        for parent, children, files in os.walk(datadir):
            relative = os.path.relpath(parent, datadir)
            prefix = "" if relative == "." else relative + "/"
            dirs += [prefix + child for child in sorted(children)]
            sizes.update({prefix + name: os.lstat(Path(parent) / name).st_size for name in files})
        for name in dirs:
            (building / "data" / name).mkdir(mode=0o700)
        for name in sizes:
            shutil.copyfile(datadir / name, building / "data" / name, follow_symlinks=False)
        listing = {"key": key, "dirs": dirs, "sizes": sizes}
        (building / LISTING).write_text(json.dumps(listing), encoding="utf-8")
        # On disk before it is in place: after an OS crash a file may keep its size and
        # lose its contents, which the listing cannot tell.
        for name in [*sizes, *dirs]:
            _fsync(building / "data" / name)
        _fsync(building / LISTING)
        _fsync(building)
        # Atomic, and refused when another process has put one in place meanwhile.
        os.rename(building, directory / key)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        _fsync(directory)
    _prune(directory)


def _listing(directory: Path, source: Path) -> tuple[list[str], dict[str, int]] | None:
    """What ``source`` holds, from its listing, when it is there and ours to use."""
    if not _usable(directory, create=False) or not source.exists():
        return None
    if not _usable(source, create=False):
        _discard(directory, source)
        return None
    try:
        document = json.loads((source / LISTING).read_text(encoding="utf-8"))
        dirs = [str(name) for name in document["dirs"]]
        sizes = {str(name): int(size) for name, size in document["sizes"].items()}
        if document["key"] != source.name or dirs[0] != "":
            raise ValueError("not the listing of this directory")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        _discard(directory, source)
        return None
    return dirs, sizes


def _usable(directory: Path, *, create: bool) -> bool:
    """A directory (not a link) that is ours and that nobody else can write."""
    try:
        if create:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(directory, follow_symlinks=False)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _hand_over(path: Path, owner: Owner) -> None:
    if owner is not None:
        os.chown(path, *owner, follow_symlinks=False)


def _discard(directory: Path, source: Path) -> None:
    """Move ``source`` out of its place first (whoever looks next finds none), then remove it."""
    try:
        aside = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.rename(source, aside / "discarded")
    shutil.rmtree(aside, ignore_errors=True)


def _prune(directory: Path) -> None:
    """Keep the :data:`KEEP` most recently used (each set of binaries adds one)."""
    kept = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if not entry.name.startswith("."):
                with contextlib.suppress(OSError):
                    kept.append((os.stat(Path(entry.path) / LISTING).st_mtime, Path(entry.path)))
    for _, path in sorted(kept, reverse=True)[KEEP:]:
        _discard(directory, path)
