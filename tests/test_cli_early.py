"""validate's catalog read starts before the command line is parsed (orchestrator.cli.early).

It starts only for arguments that are plainly a validate command, connects only to a URL the
command itself would accept, and the command takes it over (one connection, not two) only
when it reads the same database and tracking table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from bench.proxy import LatencyProxy
from orchestrator.cli import early, run
from orchestrator.commands import CatalogRead, MigrateOptions, validate_database
from orchestrator.db.retry import RetryPolicy
from orchestrator.drizzle.journal import read_journal
from orchestrator.validation import Verdict
from tests.drizzle_helpers import FIXTURE_MIGRATIONS

FIXTURE = str(FIXTURE_MIGRATIONS)


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (["validate", "--migrations", "m"], {"--migrations": "m"}),
        (
            ["validate", "--json", "--database-url=postgresql://h/d", "--migrations", "m"],
            {"--json": "", "--database-url": "postgresql://h/d", "--migrations": "m"},
        ),
        (
            ["validate", "--migrations-table", "t", "--retries", "2", "--require-ssl"],
            {"--migrations-table": "t", "--retries": "2", "--require-ssl": ""},
        ),
        (["validate", "--database-url", "host=h dbname=d"], {"--database-url": "host=h dbname=d"}),
        (["migrate", "--migrations", "m"], None),  # another command
        (["validate", "--help"], None),
        (["validate", "--migrations", "m", "--lock-timeout", "5s"], None),  # not validate's
        (["validate", "--migrations", "m", "--migrations", "n"], None),  # repeated
        (["validate", "--migrations"], None),  # no value
        (["validate", "--migrations", "--json"], None),  # a value like an option
        (["validate", "--migrations="], None),
        (["validate", "--json=yes"], None),  # a flag takes no value
        (["validate", "extra"], None),
        ([], None),
    ],
)
def test_only_plain_validate_arguments_are_read(
    args: list[str], options: dict[str, str] | None
) -> None:
    assert early.plain_validate_options(args) == options


@pytest.mark.parametrize(
    ("args", "environ"),
    [
        (["validate", "--migrations", "m"], {}),  # no URL at all
        (["validate", "--migrations", "m", "--database-url", "mysql://h/d"], {}),
        (["validate", "--migrations", "m", "--retries", "0"], {"DATABASE_URL": "postgresql://x"}),
        # The command would refuse a remote host without TLS here: nothing may connect.
        (
            ["validate", "--migrations", "m", "--require-ssl"],
            {"DATABASE_URL": "postgresql://app@db.example.com/shop?sslmode=disable"},
        ),
        (["validate", "--migrations", "m", "--help"], {"DATABASE_URL": "postgresql://x"}),
    ],
)
def test_nothing_starts_for_what_the_command_would_refuse(
    args: list[str], environ: dict[str, str]
) -> None:
    early.start(args, environ)
    assert early.take() is None


def test_validate_takes_a_started_read_only_when_it_reads_the_same_table(
    database_url: str,
) -> None:
    assert run(["migrate", "--database-url", database_url, "--migrations", FIXTURE, "--yes"]) == 0
    once = RetryPolicy(attempts=1)
    journal = read_journal(FIXTURE_MIGRATIONS)
    other_table = CatalogRead(database_url, schema="drizzle", table="other", retry=once)
    assert not other_table.reads(database_url, schema="drizzle", table="t", retry=once)
    report = validate_database(database_url, journal, MigrateOptions(), started=other_table)
    assert report.status is Verdict.SAFE  # read anew: "other" holds no tracking rows
    same = CatalogRead(database_url, schema="drizzle", table="__drizzle_migrations", retry=once)
    report = validate_database(database_url, journal, MigrateOptions(), retry=once, started=same)
    assert report.status is Verdict.SAFE
    assert same.reads(database_url, schema="drizzle", table="__drizzle_migrations", retry=once)


def test_the_read_starts_before_click_loads_and_the_command_takes_it(database_url: str) -> None:
    """In a fresh interpreter, as the console script runs: one read, started with click not
    yet imported, and one connection in all (the command did not open its own). The read
    goes through libpq itself: psycopg is never imported."""
    assert run(["migrate", "--database-url", database_url, "--migrations", FIXTURE, "--yes"]) == 0
    script = textwrap.dedent(
        """
        import sys
        from orchestrator.db import reading

        started = []
        original = reading.CatalogRead.__init__

        def spy(self, *args, **kwargs):
            started.append("click" in sys.modules)
            original(self, *args, **kwargs)

        reading.CatalogRead.__init__ = spy
        from orchestrator.cli import run

        code = run(sys.argv[1:])
        print(code, started, "psycopg" in sys.modules, file=sys.stderr)
        """
    )
    with LatencyProxy.for_url(database_url, round_trip_delay=0.0) as proxy:
        validate = ["validate", "--json", "--migrations", FIXTURE]
        done = subprocess.run(
            [sys.executable, "-c", script, *validate, "--database-url", proxy.url(database_url)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        connections = proxy.traffic().connections
    assert done.stderr.strip().splitlines()[-1] == "0 [False] False", done.stderr
    assert json.loads(done.stdout)["status"] == "SAFE"
    assert connections == 1
