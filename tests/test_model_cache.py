"""The on-disk cache of history models (orchestrator.drizzle.model.cache).

A cached model must be the model: equal to a fresh replay, its dicts in the same order, its
UNKNOWNs the same singleton. A cache that is corrupt, foreign, or writable by others is never
trusted; files are private and written whole. Real files in a temporary directory, real
folders (the app histories of tests/fixtures, the bench's generator), a real database.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bench.synthetic import Shape, write_folder
from orchestrator.database import validate_database
from orchestrator.db.migrator import MigrateOptions
from orchestrator.drizzle.facts import UNKNOWN
from orchestrator.drizzle.journal import BREAKPOINT, Journal, Migration, hash_sql, read_journal
from orchestrator.drizzle.model import ObjectModel, build_object_model, cache, journal_model

HISTORIES = Path(__file__).parent / "fixtures" / "histories"
APPS = sorted(p.name for p in HISTORIES.iterdir() if (p / "migrations").is_dir())


def built(journal: Journal) -> ObjectModel:
    return build_object_model([(m.tag, m.statements) for m in journal.migrations])


def rows(journal: Journal) -> list[tuple[str, str, str]]:
    return [(m.tag, m.hash, m.sql) for m in journal.migrations]


def key_of(journal: Journal) -> str:
    return cache.cache_key([(m.tag, m.hash) for m in journal.migrations])


def assert_same_model(found: ObjectModel, model: ObjectModel) -> None:
    """Equal, and equal in every order the judgement iterates."""
    assert found == model
    assert found.order == model.order
    assert list(found.final.items()) == list(model.final.items())
    for tag in model.order:
        assert list(found.effects[tag].items()) == list(model.effects[tag].items())
    unknowns = [v for fact in model.final.values() for v in fact if v is UNKNOWN]
    assert [v for fact in found.final.values() for v in fact if v is UNKNOWN] == unknowns


def journal_of(*texts: str) -> Journal:
    migrations = tuple(
        Migration(idx, f"{idx:04d}_m", 1000 + idx, True, text, hash_sql(text))
        for idx, text in enumerate(texts)
    )
    return Journal("test", "postgresql", migrations)


# A history with what the format must carry besides plain facts: UNKNOWN attributes (a type
# the model does not know, an expression index, a default it cannot parse), a migration it
# cannot read (unparsed), drops, renames and enum values.
ODD = journal_of(
    "CREATE TYPE \"mood\" AS ENUM('a', 'b');"
    + BREAKPOINT
    + 'CREATE TABLE "t" ("id" serial PRIMARY KEY, "g" geometry, "m" "mood", "n" interval day);'
    + BREAKPOINT
    + 'CREATE INDEX "t_lower" ON "t" (lower("g"::text));',
    'ALTER TABLE "t" RENAME COLUMN "g" TO "h";\nALTER TYPE "mood" ADD VALUE \'c\';',
    "THIS IS NOT SQL;" + BREAKPOINT + 'DROP INDEX "t_lower";',
    'ALTER TABLE "t" DROP COLUMN "n";',
)


@pytest.mark.parametrize("app", APPS)
def test_a_stored_model_reads_back_as_the_replayed_one(app: str) -> None:
    journal = read_journal(HISTORIES / app / "migrations")
    model = built(journal)
    data = cache.encode_model(model, key_of(journal))
    assert data is not None
    assert_same_model(cache.decode_model(data, key_of(journal)), model)


def test_unknown_attributes_and_unparsed_migrations_survive_the_round_trip() -> None:
    model = built(ODD)
    assert model.unparsed, "the history must hold a migration the model cannot read"
    assert any(v is UNKNOWN for fact in model.final.values() for v in fact)
    data = cache.encode_model(model, key_of(ODD))
    assert data is not None
    assert_same_model(cache.decode_model(data, key_of(ODD)), model)


def test_the_second_run_reads_the_model_the_first_one_stored(tmp_path: Path) -> None:
    builds: list[ObjectModel] = []

    def build() -> ObjectModel:
        builds.append(built(ODD))
        return builds[-1]

    first = cache.cached_model(rows(ODD), build, directory=tmp_path, min_statements=0)
    second = cache.cached_model(rows(ODD), build, directory=tmp_path, min_statements=0)
    assert len(builds) == 1
    assert_same_model(second, first)
    (stored,) = tmp_path.glob("model-*.bin")
    assert stored.name == f"model-{key_of(ODD)}.bin"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600


def test_the_cache_directory_is_created_private(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "orchestrator"
    cache.cached_model(rows(ODD), lambda: built(ODD), directory=directory, min_statements=0)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert [p.name for p in directory.iterdir()] == [f"model-{key_of(ODD)}.bin"]  # no temp


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "empty", "garbage"])
def test_a_damaged_file_is_ignored_and_rebuilt(tmp_path: Path, damage: str) -> None:
    key = key_of(ODD)
    cache.cached_model(rows(ODD), lambda: built(ODD), directory=tmp_path, min_statements=0)
    path = tmp_path / f"model-{key}.bin"
    data = path.read_bytes()
    spoiled = {
        "truncated": data[: len(data) // 2],
        "flipped byte": data[:-10] + bytes([data[-10] ^ 0x40]) + data[-9:],
        "empty": b"",
        "garbage": os.urandom(4096),
    }[damage]
    path.write_bytes(spoiled)
    assert cache.load_model(tmp_path, key) is None
    builds: list[int] = []

    def build() -> ObjectModel:
        builds.append(1)
        return built(ODD)

    model = cache.cached_model(rows(ODD), build, directory=tmp_path, min_statements=0)
    assert builds == [1]
    assert_same_model(model, built(ODD))
    assert path.read_bytes() == data  # rewritten whole
    assert cache.load_model(tmp_path, key) is not None


def test_another_folders_model_is_not_served(tmp_path: Path) -> None:
    other = journal_of('CREATE TABLE "other" ("id" integer);')
    data = cache.encode_model(built(other), key_of(other))
    assert data is not None
    # Someone copies another folder's file under this folder's name.
    (tmp_path / f"model-{key_of(ODD)}.bin").write_bytes(data)
    os.chmod(tmp_path / f"model-{key_of(ODD)}.bin", 0o600)
    assert cache.load_model(tmp_path, key_of(ODD)) is None
    model = cache.cached_model(rows(ODD), lambda: built(ODD), directory=tmp_path, min_statements=0)
    assert_same_model(model, built(ODD))


def test_a_file_others_can_write_is_not_trusted(tmp_path: Path) -> None:
    cache.cached_model(rows(ODD), lambda: built(ODD), directory=tmp_path, min_statements=0)
    path = tmp_path / f"model-{key_of(ODD)}.bin"
    assert cache.load_model(tmp_path, key_of(ODD)) is not None
    os.chmod(path, 0o666)
    assert cache.load_model(tmp_path, key_of(ODD)) is None
    os.chmod(path, 0o600)
    os.chmod(tmp_path, 0o777)
    assert cache.load_model(tmp_path, key_of(ODD)) is None
    os.chmod(tmp_path, 0o700)
    link = tmp_path / "link"
    link.symlink_to(path)
    assert cache.load_model(tmp_path, key_of(ODD)) is not None
    path.unlink()
    link.rename(path)  # the model file is now a symlink: not followed
    assert cache.load_model(tmp_path, key_of(ODD)) is None


def test_the_key_names_the_migrations_and_their_order() -> None:
    a, b = ("0000_a", hash_sql("x")), ("0001_b", hash_sql("y"))
    keys = {
        cache.cache_key([a, b]),
        cache.cache_key([b, a]),
        cache.cache_key([a]),
        cache.cache_key([a, ("0001_b", hash_sql("y;"))]),
        cache.cache_key([a, ("0001_c", hash_sql("y"))]),
    }
    assert len(keys) == 5
    assert cache.cache_key([a, b]) == cache.cache_key([a, b])


def test_the_key_names_the_installed_pglast() -> None:
    """The parser's version, read from its metadata directory's name, is the one its
    installed metadata gives (a new pglast parses differently: a new key)."""
    from importlib import metadata

    assert cache._pglast_version() == metadata.version("pglast")


def test_small_folders_and_a_cache_turned_off_are_not_stored(tmp_path: Path) -> None:
    cache.cached_model(rows(ODD), lambda: built(ODD), directory=tmp_path)  # under the minimum
    cache.cached_model(rows(ODD), lambda: built(ODD), directory=None, min_statements=0)
    assert list(tmp_path.iterdir()) == []


def test_where_the_cache_lives() -> None:
    assert cache.cache_directory({"ORCHESTRATOR_CACHE_DIR": "/x/y", "HOME": "/h"}) == Path("/x/y")
    assert cache.cache_directory({"ORCHESTRATOR_CACHE_DIR": "off", "HOME": "/h"}) is None
    assert cache.cache_directory({"ORCHESTRATOR_CACHE_DIR": ""}) is None
    assert cache.cache_directory({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/orchestrator")
    assert cache.cache_directory({"XDG_CACHE_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.cache/orchestrator"
    )
    assert cache.cache_directory({}) is None


def test_old_models_are_pruned(tmp_path: Path) -> None:
    for n in range(cache.KEEP + 3):
        journal = journal_of(f'CREATE TABLE "t{n}" ("id" integer);')
        cache.store_model(tmp_path, key_of(journal), built(journal))
        os.utime(tmp_path / f"model-{key_of(journal)}.bin", (1000 + n, 1000 + n))
    journal = journal_of('CREATE TABLE "newest" ("id" integer);')
    cache.store_model(tmp_path, key_of(journal), built(journal))
    assert len(list(tmp_path.glob("model-*.bin"))) == cache.KEEP
    assert (tmp_path / f"model-{key_of(journal)}.bin").exists()


def test_validate_judges_alike_from_a_cold_and_a_warm_cache(
    tmp_path: Path, database_url: str
) -> None:
    folder = write_folder(tmp_path / "drizzle", Shape(tables=400, migrations=60, altering=20))
    journal = read_journal(folder)
    assert sum(len(m.statements) for m in journal.migrations) >= cache.MIN_STATEMENTS
    environ = {"ORCHESTRATOR_CACHE_DIR": str(tmp_path / "cache")}
    cold = journal_model(journal, environ=environ)
    assert len(list((tmp_path / "cache").glob("model-*.bin"))) == 1
    warm = journal_model(journal, environ=environ)
    assert_same_model(warm, cold)
    assert_same_model(warm, built(journal))
    options = MigrateOptions()
    first = validate_database(database_url, journal, options, model=cold)
    second = validate_database(database_url, journal, options, model=warm)
    assert first.status.value == "NEEDS_MIGRATION"
    assert first == second
