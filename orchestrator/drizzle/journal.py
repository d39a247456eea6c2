"""Read a Drizzle migrations folder exactly as drizzle-orm's ``readMigrationFiles`` does.

Drizzle reads ``meta/_journal.json``, then for each entry the file ``<tag>.sql``: its text is split
on ``--> statement-breakpoint`` into the statements it executes, and the SHA-256 hex digest of that
text is the ``hash`` it stores; the entry's ``when`` is the ``created_at`` it stores. Byte-for-byte
agreement on the hash is what lets our tracking rows be indistinguishable from drizzle-kit's.

The folder can come from disk (:func:`read_journal`) or from any mapping of relative
paths to bytes (:func:`parse_journal`), e.g. the files of a git commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UsageError

JOURNAL_PATH = "meta/_journal.json"
BREAKPOINT = "--> statement-breakpoint"
# The file names drizzle-kit gives migrations (``0009_x.sql``, or ``20240105120000_x.sql`` with
# the timestamp prefix): one absent from the journal is a file drizzle never applies.
MIGRATION_FILE = re.compile(r"^\d+_[^/]*\.sql$")


@dataclass(frozen=True)
class Migration:
    """One journal entry with its SQL file."""

    idx: int  # position in the journal (0-based), the order drizzle applies in
    tag: str  # file name without ".sql", e.g. "0009_fat_kulan_gath"
    when: int  # journal millis; drizzle stores it as created_at
    sql: str  # the file's text as drizzle decodes it
    hash: str  # SHA-256 hex of that text, as drizzle computes it
    # Why drizzle would run other bytes than the file's (not UTF-8, a byte-order mark), if so
    encoding_problem: str | None = None

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
    # Migration-named .sql files without a journal entry: drizzle ignores them, so do we,
    # but every report says so (a journal line lost in a merge looks exactly like this).
    stray_files: tuple[str, ...] = ()

    def by_tag(self, tag: str) -> Migration:
        """The migration named ``tag``; UsageError if the journal has none."""
        for migration in self.migrations:
            if migration.tag == tag:
                return migration
        raise UsageError(f"{self.origin}: no migration tagged {tag!r} in the journal")

    def untracked(self, row_hashes: Iterable[str]) -> list[Migration]:
        """The migrations the tracking rows' hashes do not account for, in journal order.
        drizzle writes a row per entry, so a text the journal repeats needs a row each."""
        rows = Counter(row_hashes)
        left = []
        for migration in self.migrations:
            if rows[migration.hash] > 0:
                rows[migration.hash] -= 1
            else:
                left.append(migration)
        return left

    def refuse_unrunnable(
        self, migrations: Iterable[Migration], *, transaction_control: bool = True
    ) -> None:
        """Refuse the first of ``migrations`` drizzle would run other than as written
        (UsageError). Ask it of the migrations still to run only: one drizzle applied long
        ago ran as drizzle read it, whatever its bytes or a grammar that changed since.
        ``transaction_control=False``: a COMMIT, BEGIN... is let through (lint reports it)."""
        for migration in migrations:
            problem = migration.encoding_problem or sql_problem(
                migration.sql, transaction_control=transaction_control
            )
            if problem is not None:
                raise UsageError(f"{self.origin}/{migration.tag}.sql:{problem}")


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
    try:
        if not folder.exists():
            raise UsageError(f"migrations folder not found: {folder}")
        if not folder.is_dir():
            raise UsageError(f"migrations folder is not a directory: {folder}")
        journal_file = folder / JOURNAL_PATH
        if not journal_file.is_file():
            raise UsageError(f"{folder}: no {JOURNAL_PATH} (is this a drizzle migrations folder?)")

        files: dict[str, bytes] = {JOURNAL_PATH: journal_file.read_bytes()}
        # One listing of the folder rather than a stat per file (a thousand migrations).
        with os.scandir(folder) as entries:
            sql_files = {
                entry.name for entry in entries if entry.name.endswith(".sql") and entry.is_file()
            }
        for tag in _tags(files[JOURNAL_PATH], str(journal_file)):
            if f"{tag}.sql" in sql_files:
                files[f"{tag}.sql"] = (folder / f"{tag}.sql").read_bytes()
    except OSError as exc:
        # Any path of the folder we may not stat, list or read (permissions, I/O): bad input.
        raise UsageError(f"cannot read {exc.filename or folder}: {exc.strerror or exc}") from None
    for name in sql_files:
        # Only the name matters for files outside the journal (see unjournaled_files).
        if name not in files and MIGRATION_FILE.match(name):
            files[name] = b""
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
    idx_owner: dict[int, str] = {}
    for position, entry in enumerate(_entries(document, journal_name)):
        where = f"{journal_name}: entry {position}"
        tag = entry.get("tag")
        when = entry.get("when")
        idx = entry.get("idx", position)
        if not isinstance(tag, str) or not tag or "/" in tag or tag.startswith("."):
            raise UsageError(f"{where}: 'tag' must be a file name, got {tag!r}")
        if isinstance(when, bool) or not isinstance(when, int) or when < 0:
            raise UsageError(
                f"{where} ({tag}): 'when' must be a non-negative integer, got {when!r}"
            )
        if tag in seen:
            raise UsageError(f"{where}: tag {tag!r} appears twice in the journal")
        seen.add(tag)
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise UsageError(f"{where} ({tag}): 'idx' must be a non-negative integer, got {idx!r}")
        if idx in idx_owner:
            # Two branches each generated migration number idx: a merge to finish, not to run.
            raise UsageError(
                f"{where} ({tag}): idx {idx} is also {idx_owner[idx]}'s; two migrations were "
                "generated from the same base: give one of them the next free idx (the hash "
                "is the file's alone: nothing applied changes)"
            )
        idx_owner[idx] = tag
        if (raw := files.get(f"{tag}.sql")) is None:
            raise UsageError(f"{origin}: journal entry {tag!r} has no file {tag}.sql")
        text = decode_sql(raw)
        problem = encoding_problem(raw)
        migrations.append(Migration(position, tag, when, text, hash_sql(text), problem))
    if not migrations:
        raise UsageError(f"{journal_name}: the journal has no entries")
    return Journal(
        origin=origin,
        dialect=dialect,
        migrations=tuple(migrations),
        stray_files=tuple(unjournaled_files(files, seen)),
    )


def unjournaled_files(files: Mapping[str, bytes], tags: set[str]) -> list[str]:
    """Files named like drizzle migrations (``0009_x.sql``) that no journal entry names."""
    return sorted(
        name
        for name in files
        if MIGRATION_FILE.match(name) and name.removesuffix(".sql") not in tags
    )


def stray_file_message(name: str) -> str:
    """One line about a stray file: drizzle ignores it, and so does every command of ours."""
    return (
        f"{name} has no entry in meta/_journal.json: drizzle never applies it and neither do "
        "we (add its journal entry if it is a migration lost in a merge, or delete the file)"
    )


def encoding_problem(raw: bytes) -> str | None:
    """``"<line>: <problem>"`` when drizzle would run other bytes than the file's, else None:
    bytes that are not UTF-8 (drizzle replaces them by U+FFFD), a leading byte-order mark
    (drizzle sends it along and the server rejects it)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return (
            f"{line}: not UTF-8 text (byte {exc.start}); drizzle would replace it "
            "with U+FFFD and run the altered SQL: save the file as UTF-8"
        )
    if raw.startswith(b"\xef\xbb\xbf"):
        return (
            "1: starts with a byte-order mark, which PostgreSQL rejects as SQL: "
            "save the file as UTF-8 without BOM"
        )
    return None


def sql_problem(text: str, *, transaction_control: bool = True) -> str | None:
    """``"<line>: <problem>"`` for the first statement of ``text`` that cannot run, else None:
    one PostgreSQL's own parser (pglast) rejects, as the server would halfway through the
    migration's transaction, a ``--> statement-breakpoint`` inside a statement (drizzle
    would send the halves as two statements: diagnosed when the halves rejoined are sound), or
    COMMIT, BEGIN, SAVEPOINT... unless ``transaction_control`` is False (a COMMIT would commit
    the migration half-applied, even in a rehearsal that then rolls back)."""
    from pglast import parser  # imported here: reading a journal must not cost pglast's import

    pieces = split_statements(text)
    start_line = 1
    for number, piece in enumerate(pieces, start=1):
        try:  # PostgreSQL's grammar; its JSON names each statement's kind (no Python tree)
            statements = json.loads(parser.parse_sql_json(piece))["stmts"]
        except parser.ParseError as exc:
            message, index = _parse_error(exc)
            line = start_line + piece[:index].count("\n")
            if number < len(pieces) and sql_problem(piece + pieces[number]) is None:
                return (
                    f"{start_line + piece.count(chr(10))}: a {BREAKPOINT} splits statement "
                    f"{number} in two; drizzle would run each half alone"
                )
            return f"{line}: statement {number} does not parse: {message}"
        for statement in statements:
            if transaction_control and "TransactionStmt" in statement["stmt"]:
                raw, begin = piece.encode("utf-8"), statement.get("stmt_location", 0)
                words = raw[begin : begin + statement.get("stmt_len", len(raw))].decode().split()
                line = start_line + raw[:begin].count(b"\n")
                return (
                    f"{line}: {' '.join(words)} controls the migration's transaction (a COMMIT "
                    "commits it half-applied, even in a rehearsal): remove it; what PostgreSQL "
                    "refuses in a transaction runs with `migrate --allow-concurrent`"
                )
        start_line += piece.count("\n")
    return None


def _parse_error(exc: Exception) -> tuple[str, int]:
    """pglast's message (one line) and the character index it points at (0 if unknown)."""
    args = exc.args
    message = " ".join(str(args[0] if args else exc).split())
    index = args[1] if len(args) > 1 and isinstance(args[1], int) else 0
    return message, max(index, 0)


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
