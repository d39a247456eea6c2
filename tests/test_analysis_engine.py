"""One replay engine: plan and lint read each statement's context from the history model's
replay (HistoryReplay) just before applying the statement to it (pure: no database)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench import synthetic
from orchestrator.analysis.effects import analyse_migrations, analyse_sql
from orchestrator.analysis.lint import lint_migration
from orchestrator.analysis.typechange import ColumnType, TypeChange
from orchestrator.drizzle import pgjson
from orchestrator.drizzle.journal import read_journal
from orchestrator.drizzle.model import (
    ColumnView,
    HistoryReplay,
    IndexView,
    ObjectModel,
    build_object_model,
)
from orchestrator.sandbox.release import EXAMPLE_MIGRATIONS
from tests.test_objects_json import CORPUS

REPO = Path(__file__).resolve().parent.parent
RELEASE_FIXTURE = REPO / "tests" / "fixtures" / "drizzle" / "release-0009-0011" / "migrations"

Folder = Sequence[tuple[str, Sequence[str]]]

SETUP = (
    "CREATE SCHEMA s; CREATE TABLE t (a int PRIMARY KEY, b text, c int, d tsrange);"
    "CREATE TABLE u (id int PRIMARY KEY); CREATE TABLE p (a int, x int);"
    "CREATE TYPE mood AS ENUM ('sad'); CREATE INDEX i ON t (b);"
    "CREATE VIEW v AS SELECT a FROM t; CREATE MATERIALIZED VIEW mv AS SELECT * FROM t"
)
CORPUS_FOLDER: Folder = [
    ("setup", [SETUP]),
    *((f"m{number:02}", [sql]) for number, sql in enumerate(CORPUS)),
]


def synthetic_folder() -> Folder:
    shape = synthetic.Shape(tables=40, columns_per_table=6, migrations=20, altering=8)
    folder = synthetic.write_folder(Path(tempfile.mkdtemp()) / "migrations", shape)
    return [(m.tag, m.statements) for m in read_journal(folder).migrations]


def journal_folder(path: Path) -> Folder:
    return [(m.tag, m.statements) for m in read_journal(path).migrations]


FOLDERS = {
    "example": lambda: journal_folder(EXAMPLE_MIGRATIONS),
    "release-fixture": lambda: journal_folder(RELEASE_FIXTURE),
    "synthetic": synthetic_folder,
    "corpus": lambda: CORPUS_FOLDER,
}


@pytest.mark.parametrize("name", FOLDERS)
def test_plan_and_lint_drive_the_history_model_s_replay(name: str) -> None:
    folder = FOLDERS[name]()
    history = HistoryReplay()
    analyse_migrations(folder, history)
    assert history.result() == build_object_model(folder)


def _read_every_node_first(folder: Folder) -> ObjectModel:
    """The history, each statement's tree read in full (through Nodes) before it is applied."""
    history = HistoryReplay()
    for tag, pieces in folder:
        history.begin(tag)
        for number, piece in enumerate(pieces, start=1):
            try:
                parsed = pgjson.parse_sql(piece)
            except Exception as exc:
                history.unparseable(number, exc)
                continue
            for statement in parsed:
                for _ in pgjson.walk(statement):
                    pass
                history.apply(statement, number)
        history.end()
    return history.result()


@pytest.mark.parametrize("name", FOLDERS)
def test_a_tree_read_before_the_replay_replays_the_same(name: str) -> None:
    # the replay's raw-JSON fast paths and its general paths agree
    folder = FOLDERS[name]()
    assert _read_every_node_first(folder) == build_object_model(folder)


def test_views_of_the_schema_between_statements() -> None:
    history = HistoryReplay()
    history.begin("0000")
    for sql in (
        "CREATE TABLE t (id serial PRIMARY KEY, name varchar(40) NOT NULL, n numeric(10, 2),"
        " tags text[], g int GENERATED ALWAYS AS IDENTITY, s mood)",
        "CREATE UNIQUE INDEX t_name ON t (name)",
        "ALTER TABLE elsewhere ADD COLUMN x timestamp(3)",
    ):
        for statement in pgjson.parse_sql(sql):
            history.apply(statement, 1)
    assert history.table_is_new("public", "t")
    assert history.column("public", "t", "id") == ColumnView("int4", (), True, True)
    assert history.column("public", "t", "name") == ColumnView("varchar", (40,), True, False)
    assert history.column("public", "t", "n") == ColumnView("numeric", (10, 2), False, False)
    assert history.column("public", "t", "tags") == ColumnView("_text", (), False, False)
    assert history.column("public", "t", "g") == ColumnView("int4", (), True, True)
    assert history.column("public", "t", "s") == ColumnView("mood", (), False, False)
    assert history.column("public", "t", "nope") is None
    assert history.index("public", "t_name") == IndexView(("public", "t"), True)
    # a table created outside the folder: a placeholder, not known, not new
    assert not history.relation_exists("public", "elsewhere")
    assert not history.table_is_new("public", "elsewhere")
    placeholder = history.table("public", "elsewhere")
    assert placeholder is not None and not placeholder.known and placeholder.columns == ("x",)
    assert history.column("public", "elsewhere", "x") == ColumnView("timestamp", (3,), False, False)
    history.end()
    history.begin("0001")
    assert history.relation_exists("public", "t") and not history.table_is_new("public", "t")


def test_a_table_renamed_in_its_creating_migration_is_still_new() -> None:
    effects = analyse_sql(
        "CREATE TABLE a (x int); ALTER TABLE a RENAME TO b; CREATE INDEX b_x ON b (x);"
        "ALTER TABLE b ADD COLUMN y int NOT NULL"
    )
    assert [c.table_is_new for c in effects.changes] == [True, True, True, True]
    assert lint_migration(effects) == []


def test_a_column_the_folder_added_to_an_outside_table_has_a_known_type() -> None:
    effects = analyse_sql(
        "ALTER TABLE ext ALTER COLUMN c TYPE varchar(80)",
        before="ALTER TABLE ext ADD COLUMN c varchar(40)",
    )
    [change] = effects.changes
    assert change.old_type == ColumnType("varchar", (40,))
    assert change.type_change is TypeChange.RELAXES


def test_a_type_changed_in_a_pending_migration_is_the_one_read_next() -> None:
    folder = analyse_migrations(
        [
            ("0000", ["CREATE TABLE t (c varchar(40))"]),
            ("0001", ["ALTER TABLE t ALTER COLUMN c TYPE text"]),
            ("0002", ["ALTER TABLE t ALTER COLUMN c TYPE varchar(10)"]),
        ]
    )
    [change] = folder.by_tag("0002").changes
    assert (change.old_type, change.type_change) == (ColumnType("text", ()), TypeChange.REWRITES)


def test_empty_enum_labels_read_as_pglast_reads_them() -> None:
    effects = analyse_sql(
        "ALTER TYPE mood RENAME VALUE '' TO 'blank'",
        before="CREATE TYPE mood AS ENUM ('sad', '')",
    )
    assert [(c.kind, c.target) for c in effects.changes] == [
        ("rename_enum_value", "enum_value public.mood.blank")
    ]
