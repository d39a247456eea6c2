"""Replayed histories kept on disk, so a second ``validate`` of a folder needs no shadow.

A history depends on the migrations (drizzle's SHA-256 of each file), the PostgreSQL major
version that replayed them, what their database started as, the catalog reader's query and the
settings it prints by; the key is a SHA-256 of them all. Where: ``$ORCHESTRATOR_CACHE_DIR``
(``off``: no cache), else ``$XDG_CACHE_HOME/orchestrator``, else ``~/.cache/orchestrator``;
histories go to its ``shadow/`` directory (mode 0700), one file each (mode 0600). Its ``clusters/``
directory keeps the local shadow's prepared data directories (:func:`prepared_directory`).

A cache file may be corrupt (a crash, a full disk) or foreign (someone else's): it is then
ignored and rebuilt, never trusted. A file is used only when it and its directory belong to
us and nobody else can write them, and when it names the key asked for. Files are written
whole to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.catalog import History
from orchestrator.db.catalog_reader import CATALOG_QUERY, PRINTED_WITH
from orchestrator.privacy import ours_alone, private_directory_at

CACHE_DIR_ENV = "ORCHESTRATOR_CACHE_DIR"
FORMAT = 3  # bump when a stored history's meaning or layout changes
KEEP = 16  # files kept, most recently used first


def cache_directory(environ: Mapping[str, str]) -> Path | None:
    """Where histories live, or None when the cache is turned off."""
    return _under_base(environ, "shadow")


def prepared_directory(environ: Mapping[str, str]) -> Path | None:
    """Where the local shadow's prepared data directories live
    (:mod:`orchestrator.sandbox.prepared`), or None when the cache is turned off."""
    return _under_base(environ, "clusters")


def _under_base(environ: Mapping[str, str], name: str) -> Path | None:
    chosen = environ.get(CACHE_DIR_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off") else Path(chosen) / name
    if (xdg := environ.get("XDG_CACHE_HOME")) and Path(xdg).is_absolute():
        return Path(xdg) / "orchestrator" / name
    if home := environ.get("HOME"):
        return Path(home) / ".cache" / "orchestrator" / name
    return None


def cache_key(hashes: Sequence[str], major: int, kind: str) -> str:
    """The key of a history of ``hashes`` replayed on PostgreSQL ``major``."""
    digest = hashlib.sha256()
    for part in (kind, str(FORMAT), str(major), PRINTED_WITH, CATALOG_QUERY, *hashes):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def load(directory: Path | None, key: str) -> dict[str, object] | None:
    """The document stored under ``key``, or None (absent, foreign, corrupt, unreadable)."""
    if directory is None or not private_directory_at(directory, create=False):
        return None
    path = directory / f"{key}.json"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not ours_alone(info):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            document = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(document, dict) or document.get("key") != key:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: pruned last
    return document


def store(directory: Path | None, key: str, document: Mapping[str, object]) -> None:
    """Write ``document`` under ``key`` atomically; a failure only means no cache."""
    if directory is None or not private_directory_at(directory, create=True):
        return
    try:
        fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            json.dump({**document, "key": key}, handle, separators=(",", ":"))
        os.replace(temporary, directory / f"{key}.json")
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return
    _prune(directory)


def store_history(directory: Path | None, history: History, context: tuple[str, ...]) -> None:
    """Keep ``history`` for its migrations' hashes, the major version it was replayed on and
    its ``context``: what the database started as (:class:`~orchestrator.shadow.ReplayStart`)."""
    key = cache_key(history.hashes, history.server_major, f"history {context!r}")
    store(directory, key, history.to_json())


def load_history(
    directory: Path | None, hashes: Sequence[str], major: int, context: tuple[str, ...]
) -> History | None:
    """The history of ``hashes`` replayed on PostgreSQL ``major`` in ``context``, if stored."""
    if (document := load(directory, cache_key(hashes, major, f"history {context!r}"))) is None:
        return None
    try:
        return History.from_json(document)
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _prune(directory: Path) -> None:
    """Keep the :data:`KEEP` most recently used files (each release adds one)."""
    try:
        files = [
            (entry.stat(follow_symlinks=False).st_mtime, entry.path)
            for entry in os.scandir(directory)
            if entry.name.endswith(".json")
        ]
    except OSError:
        return
    for _, path in sorted(files, reverse=True)[KEEP:]:
        with contextlib.suppress(OSError):
            os.unlink(path)
