"""The throwaway cluster itself: it starts, serves, stops, restarts, and cleans up."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from orchestrator.sandbox.pg import EmbeddedPostgres, ServerBinariesMissing, find_bindir


def test_fresh_database_is_empty_and_writable(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (x int)")


def test_cluster_survives_restart_and_is_removed(own_cluster: EmbeddedPostgres) -> None:
    url = own_cluster.url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE kept")
    own_cluster.stop()
    own_cluster.start()
    with psycopg.connect(own_cluster.url("kept")) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("kept",)
    own_cluster.stop()
    assert not own_cluster.is_running()
    root = own_cluster.root
    own_cluster.destroy()
    assert not root.exists()


def test_missing_server_binaries_name_the_package(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "initdb").write_text("")  # pg_ctl missing: not a server install
    with pytest.raises(ServerBinariesMissing, match="postgresql-15"):
        find_bindir([tmp_path / "bin", tmp_path / "nowhere"])


def test_binaries_are_found_where_the_machine_has_them() -> None:
    bindir = find_bindir()
    assert (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()


# ------------------------------------------------------------ prepared data directories


@pytest.fixture
def counted_bindir() -> Iterator[tuple[Path, Path]]:
    """The machine's server binaries, with an ``initdb`` that writes a line to a log each
    time it makes a data directory: (the directory, the log). Outside ``tmp_path``, which
    the ``postgres`` OS user cannot reach when we run as root."""
    real = find_bindir()
    directory = Path(tempfile.mkdtemp(prefix="orch-test-bin-"))
    log = directory / "initdb.log"
    log.touch()
    os.chmod(directory, 0o755)
    os.chmod(log, 0o666)
    for name in ("pg_ctl", "postgres"):
        (directory / name).symlink_to(real / name)
    initdb = directory / "initdb"
    initdb.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" -D "*) echo made >> "{log}";; esac\n'
        f'exec "{real / "initdb"}" "$@"\n'
    )
    os.chmod(initdb, 0o755)
    try:
        yield directory, log
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def initdb_runs(log: Path) -> int:
    return len(log.read_text().splitlines())


def serves_an_empty_cluster(pg: EmbeddedPostgres) -> bool:
    with pg, psycopg.connect(pg.url(), autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
        conn.execute("CREATE TABLE left_behind (x int)")  # must not reach the next cluster
        return tables == (0,)


def test_a_prepared_data_directory_replaces_initdb_for_the_next_clusters(
    counted_bindir: tuple[Path, Path], tmp_path: Path
) -> None:
    bindir, log = counted_bindir
    prepared = tmp_path / "clusters"
    for _ in range(3):
        assert serves_an_empty_cluster(EmbeddedPostgres(bindir=bindir, prepared=prepared))
    assert initdb_runs(log) == 1
    assert stat.S_IMODE(prepared.stat().st_mode) == 0o700
    # Without a place to keep it, each cluster is made by initdb.
    assert serves_an_empty_cluster(EmbeddedPostgres(bindir=bindir))
    assert initdb_runs(log) == 2


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: next(p.rglob("PG_VERSION")).unlink(), id="not-a-data-directory"),
        pytest.param(lambda p: next(p.iterdir()).chmod(0o777), id="others-can-write"),
    ],
)
def test_a_damaged_or_foreign_prepared_directory_is_not_used_and_is_made_anew(
    counted_bindir: tuple[Path, Path], tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    bindir, log = counted_bindir
    prepared = tmp_path / "clusters"
    assert serves_an_empty_cluster(EmbeddedPostgres(bindir=bindir, prepared=prepared))
    damage(prepared)
    assert serves_an_empty_cluster(EmbeddedPostgres(bindir=bindir, prepared=prepared))
    assert initdb_runs(log) == 2
    assert serves_an_empty_cluster(EmbeddedPostgres(bindir=bindir, prepared=prepared))
    assert initdb_runs(log) == 2


def test_clusters_preparing_at_once_leave_one_prepared_directory(
    counted_bindir: tuple[Path, Path], tmp_path: Path
) -> None:
    bindir, log = counted_bindir
    prepared = tmp_path / "clusters"
    with ThreadPoolExecutor(max_workers=3) as pool:
        clusters = [EmbeddedPostgres(bindir=bindir, prepared=prepared) for _ in range(3)]
        assert all(pool.map(serves_an_empty_cluster, clusters))
    made = initdb_runs(log)
    assert [p.name.startswith(".") for p in prepared.iterdir()] == [False]
    assert serves_an_empty_cluster(EmbeddedPostgres(bindir=bindir, prepared=prepared))
    assert initdb_runs(log) == made
