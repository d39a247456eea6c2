"""Reading a migrations folder as drizzle-orm's readMigrationFiles does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from orchestrator.drizzle.journal import (
    BREAKPOINT,
    decode_sql,
    hash_sql,
    parse_journal,
    read_journal,
    split_statements,
)
from orchestrator.errors import UsageError
from tests.conftest import DRIZZLE_FIXTURE


def expected_rows() -> list[tuple[str, int]]:
    lines = (DRIZZLE_FIXTURE / "expected_tracking_rows.tsv").read_text().splitlines()[1:]
    return [(hash_, int(created)) for _, hash_, created in (line.split("\t") for line in lines)]


def test_hashes_and_when_match_what_drizzle_recorded() -> None:
    journal = read_journal(DRIZZLE_FIXTURE / "migrations")
    assert [(m.hash, m.when) for m in journal.migrations] == expected_rows()
    assert journal.dialect == "postgresql"
    assert [m.idx for m in journal.migrations] == list(range(12))


def test_statements_split_on_breakpoints_without_trimming() -> None:
    journal = read_journal(DRIZZLE_FIXTURE / "migrations")
    m = journal.by_tag("0011_cute_skin")
    assert len(m.statements) == 4
    assert all("ADD COLUMN IF NOT EXISTS" in s for s in m.statements)
    assert "".join(m.statements) == m.sql.replace(BREAKPOINT, "")
    assert split_statements("a;\n--> statement-breakpoint\n") == ["a;\n", "\n"]


def write_folder(root: Path, entries: list[dict[str, object]], files: dict[str, bytes]) -> Path:
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "_journal.json").write_text(
        json.dumps({"version": "7", "dialect": "postgresql", "entries": entries})
    )
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_hash_is_over_the_raw_text_crlf_and_bom_included() -> None:
    raw = b"\xef\xbb\xbfCREATE TABLE a (x int);\r\n--> statement-breakpoint\r\nSELECT 1;\r\n"
    # drizzle hashes the file's text as read, byte-order mark and CRLF included.
    assert hash_sql(decode_sql(raw)) == hashlib.sha256(raw).hexdigest()


def test_crlf_files_are_read_and_split(tmp_path: Path) -> None:
    raw = b"CREATE TABLE a (x int);\r\n--> statement-breakpoint\r\nSELECT 1;\r\n"
    folder = write_folder(
        tmp_path / "m",
        [{"idx": 0, "when": 1, "tag": "0000_a", "breakpoints": True}],
        {"0000_a.sql": raw},
    )
    m = read_journal(folder).migrations[0]
    assert m.hash == hashlib.sha256(raw).hexdigest()
    assert len(m.statements) == 2


def test_a_byte_order_mark_is_refused_in_a_migration_still_to_run(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbfCREATE TABLE a (x int);\n"
    folder = write_folder(
        tmp_path / "m", [{"idx": 0, "when": 1, "tag": "0000_a"}], {"0000_a.sql": raw}
    )
    journal = read_journal(folder)
    with pytest.raises(UsageError, match=r"0000_a\.sql:1: starts with a byte-order mark"):
        journal.refuse_unrunnable(journal.migrations)


def test_invalid_utf8_hashes_like_node_but_is_refused_if_still_to_run(tmp_path: Path) -> None:
    raw = b"SELECT '\xff';"
    # Buffer.toString() turns the bad byte into U+FFFD, whose UTF-8 form is what gets hashed.
    assert hash_sql(decode_sql(raw)) == hashlib.sha256("SELECT '\ufffd';".encode()).hexdigest()
    folder = write_folder(
        tmp_path / "m", [{"idx": 0, "when": 1, "tag": "0000_a"}], {"0000_a.sql": raw}
    )
    journal = read_journal(folder)
    with pytest.raises(UsageError, match=r"0000_a\.sql:1: not UTF-8"):
        journal.refuse_unrunnable(journal.migrations)  # drizzle would run the altered text


@pytest.mark.parametrize(
    ("applied_sql", "pending_sql", "refusal"),
    [
        # Latin-1 bytes drizzle ran as U+FFFD, a column named by a word that PostgreSQL 16
        # reserved (pglast's grammar is the newest)
        (
            b"-- r\xe9sum\xe9\nCREATE TABLE a (system_user text);",
            b"SELEC 1;",
            r"0001_b\.sql:1: statement 1 does not parse",
        ),
        # a hand-written COMMIT (a common workaround for ALTER TYPE ... ADD VALUE): in the
        # pending one it would commit half the release
        (
            b"ALTER TYPE t ADD VALUE 'x';\nCOMMIT;\nBEGIN;\nCREATE TABLE a (x int);",
            b"CREATE TABLE b (x int);\n--> statement-breakpoint\n/* ok */ COMMIT;",
            r"0001_b\.sql:3: COMMIT controls the migration's",
        ),
    ],
)
def test_only_a_migration_still_to_run_is_refused_for_how_it_is_written(
    tmp_path: Path, applied_sql: bytes, pending_sql: bytes, refusal: str
) -> None:
    # The applied one ran long ago as drizzle read it: only the pending one is asked.
    files = {"0000_a.sql": applied_sql, "0001_b.sql": pending_sql}
    entries = [{"idx": 0, "when": 1, "tag": "0000_a"}, {"idx": 1, "when": 2, "tag": "0001_b"}]
    journal = read_journal(write_folder(tmp_path / "m", entries, files))
    applied, pending = journal.migrations
    with pytest.raises(UsageError, match=refusal):
        journal.refuse_unrunnable(journal.untracked([applied.hash]))
    journal.refuse_unrunnable(journal.untracked([applied.hash, pending.hash]))


def test_parse_from_a_mapping_equals_reading_from_disk() -> None:
    folder = DRIZZLE_FIXTURE / "migrations"
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    from_disk = read_journal(folder)
    from_mapping = parse_journal(files, origin="commit abc")
    assert from_mapping.migrations == from_disk.migrations


@pytest.mark.parametrize(
    ("journal", "files", "message"),
    [
        ("{not json", {}, "malformed JSON at line 1"),
        ('["a"]', {}, "expected a JSON object"),
        ('{"entries": {}}', {}, "'entries' must be a list"),
        ('{"entries": [1]}', {}, "entry 0 is not an object"),
        ('{"entries": []}', {}, "the journal has no entries"),
        ('{"entries": [{"when": 1}]}', {}, "'tag' must be a file name"),
        ('{"entries": [{"tag": "../x", "when": 1}]}', {}, "'tag' must be a file name"),
        ('{"entries": [{"tag": "a", "when": "soon"}]}', {"a.sql": b""}, "'when' must be"),
        ('{"entries": [{"tag": "a", "when": 1}]}', {}, "journal entry 'a' has no file a.sql"),
        (
            '{"entries": [{"tag": "a", "when": 1}, {"tag": "a", "when": 2}]}',
            {"a.sql": b""},
            "tag 'a' appears twice",
        ),
        ('{"dialect": "mysql", "entries": []}', {}, "only postgresql is supported"),
    ],
)
def test_malformed_journals_are_usage_errors(
    tmp_path: Path, journal: str, files: dict[str, bytes], message: str
) -> None:
    folder = tmp_path / "m"
    (folder / "meta").mkdir(parents=True)
    (folder / "meta" / "_journal.json").write_text(journal)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_journal(folder)


def test_missing_folder_or_journal(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="migrations folder not found"):
        read_journal(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        read_journal(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no meta/_journal\.json"):
        read_journal(tmp_path / "empty")
