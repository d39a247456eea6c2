"""Read a Drizzle migrations folder exactly as drizzle-orm's ``readMigrationFiles`` does.

Drizzle reads ``meta/_journal.json``, then for each entry the file ``<tag>.sql``:
its text is split on ``--> statement-breakpoint`` into the statements it executes, and
the SHA-256 hex digest of that text is the ``hash`` it stores; the entry's ``when`` is
the ``created_at`` it stores. Byte-for-byte agreement on the hash is what lets our
tracking rows be indistinguishable from drizzle-kit's.

The folder can come from disk (:func:`read_journal`) or from any mapping of relative
paths to bytes (:func:`parse_journal`), e.g. the files of a git commit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UsageError

JOURNAL_PATH = "meta/_journal.json"
BREAKPOINT = "--> statement-breakpoint"


@dataclass(frozen=True)
class Migration:
    """One journal entry with its SQL file."""

    idx: int  # position in the journal (0-based), the order drizzle applies in
    tag: str  # file name without ".sql", e.g. "0009_fat_kulan_gath"
    when: int  # journal millis; drizzle stores it as created_at
    breakpoints: bool
    sql: str  # the file's text as drizzle decodes it
    hash: str  # SHA-256 hex of that text, as drizzle computes it

    @property
    def statements(self) -> tuple[str, ...]:
        """The pieces drizzle executes one by one (possibly blank)."""
        return tuple(split_statements(self.sql))


@dataclass(frozen=True)
class Journal:
    """A parsed migrations folder: its entries in journal order."""

    origin: str  # where it was read from, for messages
    dialect: str | None
    migrations: tuple[Migration, ...]

    def by_tag(self, tag: str) -> Migration:
        """The migration named ``tag``; UsageError if the journal has none."""
        for migration in self.migrations:
            if migration.tag == tag:
                return migration
        raise UsageError(f"{self.origin}: no migration tagged {tag!r} in the journal")


def split_statements(text: str) -> list[str]:
    """Split a migration's text the way drizzle does (no trimming, blanks kept)."""
    return text.split(BREAKPOINT)


def decode_sql(raw: bytes) -> str:
    """Decode a file as Node's ``Buffer.toString()`` does: UTF-8, invalid bytes -> U+FFFD."""
    return raw.decode("utf-8", errors="replace")


def hash_sql(text: str) -> str:
    """Drizzle's migration hash: SHA-256 hex of the UTF-8 encoding of the file's text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_journal(folder: Path) -> Journal:
    """Read a migrations folder from disk. Bad input raises :class:`UsageError`."""
    if not folder.exists():
        raise UsageError(f"migrations folder not found: {folder}")
    if not folder.is_dir():
        raise UsageError(f"migrations folder is not a directory: {folder}")
    journal_file = folder / JOURNAL_PATH
    if not journal_file.is_file():
        raise UsageError(f"{folder}: no {JOURNAL_PATH} (is this a drizzle migrations folder?)")

    files: dict[str, bytes] = {JOURNAL_PATH: _read_bytes(journal_file)}
    for tag in _tags(files[JOURNAL_PATH], str(journal_file)):
        sql_file = folder / f"{tag}.sql"
        if sql_file.is_file():
            files[f"{tag}.sql"] = _read_bytes(sql_file)
    return parse_journal(files, origin=str(folder))


def parse_journal(files: Mapping[str, bytes], *, origin: str) -> Journal:
    """Parse a migrations folder given as ``{relative path: bytes}``."""
    journal_name = f"{origin}/{JOURNAL_PATH}"
    if JOURNAL_PATH not in files:
        raise UsageError(f"{origin}: no {JOURNAL_PATH} (is this a drizzle migrations folder?)")
    document = _load_json(files[JOURNAL_PATH], journal_name)
    dialect = document.get("dialect")
    if dialect is not None and dialect not in ("postgresql", "postgres", "pg"):
        raise UsageError(f"{journal_name}: dialect is {dialect!r}; only postgresql is supported")

    migrations: list[Migration] = []
    seen: set[str] = set()
    for position, entry in enumerate(_entries(document, journal_name)):
        where = f"{journal_name}: entry {position}"
        tag = entry.get("tag")
        when = entry.get("when")
        if not isinstance(tag, str) or not tag or "/" in tag or tag.startswith("."):
            raise UsageError(f"{where}: 'tag' must be a file name, got {tag!r}")
        if isinstance(when, bool) or not isinstance(when, int) or when < 0:
            raise UsageError(
                f"{where} ({tag}): 'when' must be a non-negative integer, got {when!r}"
            )
        if tag in seen:
            raise UsageError(f"{where}: tag {tag!r} appears twice in the journal")
        seen.add(tag)
        raw = files.get(f"{tag}.sql")
        if raw is None:
            raise UsageError(f"{origin}: journal entry {tag!r} has no file {tag}.sql")
        text = decode_sql(raw)
        migrations.append(
            Migration(
                idx=position,
                tag=tag,
                when=when,
                breakpoints=bool(entry.get("breakpoints", True)),
                sql=text,
                hash=hash_sql(text),
            )
        )
    if not migrations:
        raise UsageError(f"{journal_name}: the journal has no entries")
    return Journal(origin=origin, dialect=dialect, migrations=tuple(migrations))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _load_json(raw: bytes, name: str) -> dict[str, object]:
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"{name}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(document, dict):
        raise UsageError(f"{name}: expected a JSON object with 'entries'")
    return document


def _entries(document: Mapping[str, object], name: str) -> list[dict[str, object]]:
    entries = document.get("entries")
    if not isinstance(entries, list):
        raise UsageError(f"{name}: 'entries' must be a list")
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UsageError(f"{name}: entry {position} is not an object")
    return entries


def _tags(raw: bytes, name: str) -> list[str]:
    """The tags named by a journal, for deciding which files to read (validated later)."""
    document = _load_json(raw, name)
    return [tag for e in _entries(document, name) if isinstance(tag := e.get("tag"), str)]
