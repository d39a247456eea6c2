"""A cache of history models on disk, keyed by the migrations' hashes.

The model of a folder depends on nothing but its migrations (their tags and SQL) and on the
code that replays them, so it can be kept between runs: validating a folder of 1,000
migrations then reads a file instead of parsing and replaying 15,000 statements. The key is
a SHA-256 over our model version, the replaying code's own source, pglast's and Python's
versions, and each migration's tag and hash (drizzle's SHA-256 of the file).

Where: ``$ORCHESTRATOR_CACHE_DIR`` (``off`` turns the cache off), else
``$XDG_CACHE_HOME/orchestrator``, else ``~/.cache/orchestrator``. Small folders are not
cached: replaying them costs less than a file.

Safety. A cache may be corrupt (a crash, a full disk) or foreign (someone else's file): it
is then ignored and rebuilt, never trusted. A file is used only when it and its directory
belong to us and nobody else can write them, and when its header names the key asked for
and the SHA-256 of its payload matches. Files are written whole to a temporary name (mode
0600) and renamed, so a reader never sees half a file. Any failure to read or write just
means building the model, as without a cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import marshal
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchestrator.drizzle.facts import UNKNOWN, Fact
from orchestrator.drizzle.model.history import ObjectModel
from orchestrator.drizzle.model.names import DbObject

__all__ = [
    "CACHE_DIR_ENV",
    "MIN_STATEMENTS",
    "MODEL_VERSION",
    "cache_directory",
    "cache_key",
    "cached_model",
    "decode_model",
    "encode_model",
    "load_model",
    "store_model",
]

#: Bump when the model's meaning changes without its code changing (the key also holds the
#: code's source, so an edit of the replay is never served a stale model).
MODEL_VERSION = 1
CACHE_DIR_ENV = "ORCHESTRATOR_CACHE_DIR"
#: Folders with fewer statements are replayed every time: that is cheaper than a file.
MIN_STATEMENTS = 1000
KEEP = 8  # model files kept per directory, most recently used first
_MAGIC = b"orchestrator-model-cache\n"
_PREFIX = "model-"
_SUFFIX = ".bin"
_BREAKPOINT = "--> statement-breakpoint"

# The modules whose code decides the model: their source is part of every key.
_MODEL_SOURCES = ("facts.py", "pgjson.py", "model")


def cache_directory(environ: Mapping[str, str]) -> Path | None:
    """Where model files live, or None when the cache is turned off."""
    chosen = environ.get(CACHE_DIR_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off") else Path(chosen)
    xdg = environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: a relative value is ignored
        return Path(xdg) / "orchestrator"
    home = environ.get("HOME")
    return Path(home) / ".cache" / "orchestrator" if home else None


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """SHA-256 of the replaying code's source, pglast's and Python's versions."""
    digest = hashlib.sha256()
    digest.update(f"{MODEL_VERSION}\0{_pglast_version()}\0{sys.version_info[:2]}\0".encode())
    drizzle = Path(__file__).resolve().parent.parent
    files: list[Path] = []
    for name in _MODEL_SOURCES:
        path = drizzle / name
        files += sorted(path.glob("*.py")) if path.is_dir() else [path]
    for path in files:
        digest.update(path.relative_to(drizzle).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _pglast_version() -> str:
    """pglast's version, read from the name of its installed metadata's directory: importing
    pglast costs 30 ms, importing ``importlib.metadata`` 50 - 100 ms, and a folder whose
    model is cached may need nothing else from either."""
    import importlib.util

    spec = importlib.util.find_spec("pglast")  # found, not imported
    if spec is not None and spec.origin is not None:
        prefix, suffix = "pglast-", ".dist-info"
        installed = list(Path(spec.origin).parent.parent.glob(f"{prefix}*{suffix}"))
        if len(installed) == 1:  # else ambiguous: ask importlib.metadata
            return installed[0].name[len(prefix) : -len(suffix)]
    from importlib import metadata

    try:
        return metadata.version("pglast")
    except metadata.PackageNotFoundError:  # not installed as a distribution: ask the module
        import pglast

        return str(pglast.__version__)


def cache_key(migrations: Sequence[tuple[str, str]]) -> str:
    """The key of a folder given as ``(tag, hash)`` in journal order."""
    digest = hashlib.sha256(_code_fingerprint().encode())
    for tag, sha in migrations:
        digest.update(f"\0{tag}\0{sha}".encode())
    return digest.hexdigest()


def cached_model(
    migrations: Sequence[tuple[str, str, str]],
    build: Callable[[], ObjectModel],
    *,
    directory: Path | None,
    min_statements: int = MIN_STATEMENTS,
) -> ObjectModel:
    """The model of ``migrations`` (``(tag, hash, sql)``) from ``directory``, or ``build()``.

    A model built here is stored for next time. Without a directory, or for a folder of
    fewer than ``min_statements`` statements, this is just ``build()``.
    """
    if directory is None:
        return build()
    statements = sum(sql.count(_BREAKPOINT) + 1 for _, _, sql in migrations)
    if statements < min_statements:
        return build()
    key = cache_key([(tag, sha) for tag, sha, _ in migrations])
    found = load_model(directory, key)
    if found is not None:
        return found
    model = build()
    store_model(directory, key, model)
    return model


# --------------------------------------------------------------------------------------------
# Files: ownership checks, atomic writes, pruning. Every failure means "no cache".
# --------------------------------------------------------------------------------------------


def _private(info: os.stat_result) -> bool:
    """Ours, and writable by nobody else."""
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _usable_directory(directory: Path, *, create: bool) -> bool:
    try:
        if create:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(directory, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and _private(info)


def _path(directory: Path, key: str) -> Path:
    return directory / f"{_PREFIX}{key}{_SUFFIX}"


def load_model(directory: Path, key: str) -> ObjectModel | None:
    """The model stored under ``key``, or None (absent, foreign, corrupt, unreadable)."""
    if not _usable_directory(directory, create=False):
        return None
    path = _path(directory, key)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not _private(info):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        model = decode_model(data, key)
    except Exception:  # corrupt or foreign: rebuild (and overwrite) rather than trust it
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: pruned last
    return model


def store_model(directory: Path, key: str, model: ObjectModel) -> bool:
    """Write the model under ``key`` atomically (mode 0600); False when it was not stored."""
    import tempfile  # here: a warm cache never writes, and tempfile loads shutil, lzma, bz2

    data = encode_model(model, key)
    if data is None or not _usable_directory(directory, create=True):
        return False
    try:
        fd, temporary = tempfile.mkstemp(prefix=".model-", suffix=".tmp", dir=directory)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
        os.replace(temporary, _path(directory, key))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return False
    _prune(directory)
    return True


def _prune(directory: Path) -> None:
    """Keep the :data:`KEEP` most recently used model files (each release adds one)."""
    try:
        files = [
            (entry.stat(follow_symlinks=False).st_mtime, entry.path)
            for entry in os.scandir(directory)
            if entry.name.startswith(_PREFIX) and entry.name.endswith(_SUFFIX)
        ]
    except OSError:
        return
    for _, path in sorted(files, reverse=True)[KEEP:]:
        with contextlib.suppress(OSError):
            os.unlink(path)


# --------------------------------------------------------------------------------------------
# The format (pure): a header, then the model as marshal data of plain values. Objects are
# numbered once; UNKNOWN (which marshal cannot hold) travels as Ellipsis.
# --------------------------------------------------------------------------------------------


def _encode_fact(fact: Fact | None) -> Any:
    """The fact with UNKNOWN as Ellipsis (anything else marshal cannot hold raises
    ValueError when dumped)."""
    if fact is None or UNKNOWN not in fact:
        return fact
    return tuple(... if value is UNKNOWN else value for value in fact)


def _decode_fact(fact: Any) -> Fact | None:
    if fact is None or ... not in fact:
        return fact
    return tuple(UNKNOWN if value is ... else value for value in fact)


def encode_model(model: ObjectModel, key: str) -> bytes | None:
    """The file's bytes for ``model`` under ``key``; None when it holds something the format
    cannot (it is then not cached)."""
    if set(model.expected) != set(model.order) or set(model.unparsed) - set(model.order):
        return None
    # Number every object once, in first-seen order (C loops: this runs per object).
    seen = dict.fromkeys(itertools.chain.from_iterable(model.effects[t] for t in model.order))
    seen.update(dict.fromkeys(itertools.chain.from_iterable(model.expected.values())))
    numbers = {obj: position for position, obj in enumerate(seen)}
    number = numbers.__getitem__
    # Each mapping as parallel lists (objects, facts), so that reading builds it in C; the
    # few facts holding UNKNOWN are listed apart, as (list, position), to be mended.
    lists: list[list[Any]] = []
    mend: list[tuple[int, int]] = []

    def add(facts: list[Fact | None]) -> None:
        for position, fact in enumerate(facts):
            if fact is not None and UNKNOWN in fact:
                facts[position] = _encode_fact(fact)
                mend.append((len(lists), position))
        lists.append(facts)

    for tag in model.order:
        effect = model.effects[tag]
        lists.append(list(map(number, effect)))
        add([before for before, _ in effect.values()])
        add([after for _, after in effect.values()])
    lists.append(list(map(number, model.final)))
    add(list(model.final.values()))
    expected = [sorted(map(number, model.expected[tag])) for tag in model.order]
    objects = [tuple(obj) for obj in numbers]
    document = (list(model.order), objects, lists, mend, expected, list(model.unparsed.items()))
    try:  # a value marshal cannot hold (no fact holds one today): not cached
        payload = marshal.dumps(document, 4)
    except ValueError:
        return None
    digest = hashlib.sha256(payload).hexdigest()
    return _MAGIC + f"{key}\n{digest}\n".encode() + payload


def decode_model(data: bytes, key: str) -> ObjectModel:
    """The model in ``data``, checked against ``key`` and the payload's digest.

    Raises ValueError (or another exception) for anything that is not our file for this key.
    """
    if not data.startswith(_MAGIC):
        raise ValueError("not a model file")
    header_end = len(_MAGIC) + 64 + 1 + 64 + 1
    stored_key, digest = data[len(_MAGIC) : header_end].decode("ascii").split("\n")[:2]
    payload = data[header_end:]
    if stored_key != key or hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError("another folder's model, or a damaged file")
    order, objects, lists, mend, expected, unparsed = marshal.loads(payload)
    if len(lists) != 3 * len(order) + 2 or len(expected) != len(order):
        raise ValueError("a damaged model")
    for which, position in mend:
        lists[which][position] = _decode_fact(lists[which][position])
    table = list(map(functools.partial(tuple.__new__, DbObject), objects))
    obj = table.__getitem__
    effects = {
        tag: MappingProxyType(
            dict(
                zip(
                    map(obj, lists[3 * n]),
                    zip(lists[3 * n + 1], lists[3 * n + 2], strict=True),
                    strict=True,
                )
            )
        )
        for n, tag in enumerate(order)
    }
    final = dict(zip(map(obj, lists[-2]), lists[-1], strict=True))
    touched = set(itertools.chain.from_iterable(lists[0 : 3 * len(order) : 3]))
    return ObjectModel(
        expected=MappingProxyType(
            {
                tag: frozenset(map(obj, numbers))
                for tag, numbers in zip(order, expected, strict=True)
            }
        ),
        unparsed=MappingProxyType({str(tag): str(reason) for tag, reason in unparsed}),
        effects=MappingProxyType(effects),
        order=tuple(order),
        final=MappingProxyType(final),
        touched=frozenset(map(obj, touched)),
    )
