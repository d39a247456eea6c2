"""The throwaway cluster itself: it starts, serves, stops, restarts, and cleans up."""

from __future__ import annotations

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
    own_cluster.restart()
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
