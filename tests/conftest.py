"""Shared fixtures: a real PostgreSQL server and a fresh database per test.

The server is a throwaway cluster started here (initdb + pg_ctl), or the one named by
``ORCH_TEST_DATABASE_URL``. Missing server binaries fail the suite loudly; they never skip it.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator.sandbox.pg import (
    EmbeddedPostgres,
    ServerBinariesMissing,
    create_database,
    drop_database,
    find_bindir,
    memory_directory,
    with_dbname,
)
from orchestrator.shadow import SHADOW_URL_ENV, ShadowSpec
from tests.mutants import apply_from_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
# A copy of the drizzle contract fixture (what the real migrator wrote): the suite needs
# nothing outside the repository.
FIXTURES = REPO_ROOT / "tests" / "fixtures"
DRIZZLE_FIXTURE = FIXTURES / "drizzle" / "release-0009-0011"
EXAMPLE_RELEASE = REPO_ROOT / "playbooks" / "examples"

_counter = itertools.count()
# Room /dev/shm must have for the suite to keep its clusters and temporary files there.
MEMORY_ROOM = 8 * 2**30


# The run's temporary files (tmp_path, git repositories, run directories; the workers and
# the processes the tests start inherit TMPDIR) in memory where /dev/shm has room, as the
# clusters: the suite creates and deletes tens of thousands of files, and a disk's file
# system pays for each. The controller makes the directory; pytest-xdist's workers use it.
if "PYTEST_XDIST_WORKER" not in os.environ and (_MEMORY := memory_directory(MEMORY_ROOM)):
    _TEMPORARY = tempfile.mkdtemp(prefix="orch-test-tmp-", dir=_MEMORY)
    os.chmod(_TEMPORARY, 0o755)  # as /tmp: a cluster's server user (root runs it as postgres)
    os.environ["TMPDIR"] = _TEMPORARY
    tempfile.tempdir = None  # read TMPDIR again
    atexit.register(shutil.rmtree, _TEMPORARY, ignore_errors=True)

# The replayed-history cache (orchestrator.shadow.cache) of this test run, and of the CLI
# processes its tests start, lives in a throwaway directory, never in ~/.cache.
_HISTORY_CACHE = tempfile.mkdtemp(prefix="orch-test-history-cache-")
os.environ["ORCHESTRATOR_CACHE_DIR"] = _HISTORY_CACHE
atexit.register(shutil.rmtree, _HISTORY_CACHE, ignore_errors=True)

# A shell starts a background job (`make test &`, CI runners) with SIGINT ignored, and the
# processes the tests start would inherit that: the tests that interrupt a run with SIGINT
# need it delivered, as at a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# tests/test_guard_mutations.py: a guard that always passes, or an observation read from
# the run record, before anything imports the engine.
apply_from_environment()

# The release world's fixtures (its baseline databases, ``world``) for every test module.
pytest_plugins = ["tests.release_world"]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than there are cores. Tests wait on servers, timers and
    child processes part of the time; a spare worker uses the cores meanwhile."""
    return (os.cpu_count() or 1) + 1


def _start_cluster() -> EmbeddedPostgres:
    try:
        # In memory where the machine has room: the suite creates and drops thousands of
        # databases. initdb once per process; each later cluster copies its data directory.
        pg = EmbeddedPostgres(
            prepared=Path(_HISTORY_CACHE) / "clusters", parent=memory_directory(MEMORY_ROOM)
        )
    except ServerBinariesMissing as exc:
        hint = "or point ORCH_TEST_DATABASE_URL at a PostgreSQL server you own"
        pytest.fail(f"{exc} ({hint})", pytrace=False)
    pg.__enter__()
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        # Each CREATE DATABASE writes the whole new database to the WAL: checkpoints often
        # enough that the WAL of a long run stays small in memory.
        conn.execute("ALTER SYSTEM SET max_wal_size = '256MB'")
        conn.execute("SELECT pg_reload_conf()")
    return pg


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a superuser connection to the test server (its ``postgres`` database)."""
    external = os.environ.get("ORCH_TEST_DATABASE_URL")
    if external:
        yield external
        return
    pg = _start_cluster()
    try:
        yield pg.url()
    finally:
        pg.destroy()


@pytest.fixture(scope="session", autouse=True)
def shadow_server(server_url: str) -> str:
    """The test server is also the shadow server: every replay creates a database of its own
    there (``$ORCHESTRATOR_SHADOW_URL``, read by the CLI and the engine), so no test starts
    a cluster just to replay a folder. Tests of the local shadow unset it."""
    os.environ["ORCHESTRATOR_SHADOW_URL"] = server_url
    return server_url


def suite_shadow() -> ShadowSpec:
    """The shadow the CLI and the engine would read from this test's environment (the test
    server, or a throwaway local cluster where a test unsets it): for the library calls
    that take it as an argument and otherwise start a local cluster for each replay."""
    return ShadowSpec(os.environ.get(SHADOW_URL_ENV))


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test, dropped afterwards."""
    name = f"orch_test_{os.getpid()}_{next(_counter)}"
    create_database(server_url, name)
    try:
        yield with_dbname(server_url, name)
    finally:
        drop_database(server_url, name)


@pytest.fixture
def own_cluster() -> Iterator[EmbeddedPostgres]:
    """A cluster of this test's own, which it may stop, crash and restart at will.

    An external server (ORCH_TEST_DATABASE_URL) cannot be restarted by a test; without local
    server binaries these tests say so and skip (the rest of the suite still runs).
    """
    if os.environ.get("ORCH_TEST_DATABASE_URL"):
        try:
            find_bindir()
        except ServerBinariesMissing as exc:
            pytest.skip(f"needs a cluster of its own to restart: {exc}")
    pg = _start_cluster()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def drizzle_fixture(tmp_path: Path) -> Path:
    """A writable copy of the drizzle contract fixture folder (tests/fixtures/drizzle)."""
    target = tmp_path / "migrations"
    shutil.copytree(DRIZZLE_FIXTURE / "migrations", target)
    for p in target.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    target.chmod(0o755)
    return target
