"""Putting a database back to exactly what a custom-format ``pg_dump`` holds, in one
transaction, and proving it.

``pg_restore --clean --if-exists`` is not enough after a release: it drops only the objects
the dump knows, in the dump's order, so what the release added gets in the way (a foreign key
from a new table keeps a dumped primary key from being dropped, an index or a column the
release added stays) and the restore ends half done. Here instead, in one transaction
(``psql --single-transaction -v ON_ERROR_STOP=1``):

1. every user schema is dropped with ``CASCADE`` (the dump creates them again), except the
   schemas the dump uses without creating them: ``public``, which ``initdb`` creates and
   ``pg_dump`` does not dump. Dropping ``public`` would lose its owner and grants (the app's
   ``USAGE``), so it is emptied instead: its extensions, tables, views, sequences, routines,
   types and collations are dropped with ``CASCADE``;
2. the dump's script (``pg_restore --no-owner``: objects belong to the restoring user, as
   with drizzle's migrator; grants are restored) runs in the same transaction.

Any error rolls everything back: production is then as it was. Afterwards the database is
compared with the dump: ``pg_dump --schema-only --no-owner`` of the database against the
dump's own schema script, and each table's row count against the rows in the dump.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from orchestrator import children
from orchestrator.db.blockers import holders_at
from orchestrator.db.connect import connect, milliseconds, without_password
from orchestrator.db.retry import is_transient_message
from orchestrator.errors import DatabaseError, ExitCode, OrchestratorError, UsageError
from orchestrator.redaction import redact

TOOLS = ("pg_restore", "pg_dump", "psql")

# Schemas every database has: never dropped, never emptied.
_SYSTEM_SCHEMA = "n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"

_CREATE_SCHEMA = re.compile(r"^CREATE SCHEMA (?:IF NOT EXISTS )?(\"(?:[^\"]|\"\")+\"|[^\s;]+)")
_COPY = re.compile(r"^COPY (.+?) (?:\(.*\) )?FROM stdin;$")


class RestoreFailed(OrchestratorError):
    """The dump's script failed on the server; its transaction rolled back, nothing changed.

    The database answered, so this is not ERROR (unreachable): exit 21, a failed step."""

    exit_code = ExitCode.GUARD_FAILED


@dataclass(frozen=True)
class DumpContents:
    """What a dump holds, read from its own scripts."""

    schemas_created: frozenset[str]  # the schemas its script creates
    schema_lines: tuple[str, ...]  # its schema script, normalised (see schema_lines)
    row_counts: dict[str, int]  # rows per table, by the name its COPY uses


def schema_lines(script: str) -> tuple[str, ...]:
    """A schema script's statements without comments, blank lines and psql's per-dump
    ``\\restrict`` keys (pure): two dumps of the same schema give the same lines."""
    return tuple(
        line
        for line in script.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


def schemas_created(script: str) -> frozenset[str]:
    """The schemas a script's ``CREATE SCHEMA`` statements create, unquoted (pure)."""
    names = (m.group(1) for line in script.splitlines() if (m := _CREATE_SCHEMA.match(line)))
    return frozenset(n[1:-1].replace('""', '"') if n.startswith('"') else n for n in names)


def count_rows(lines: Iterable[str]) -> dict[str, int]:
    """Rows per table in a restore script's ``COPY ... FROM stdin`` blocks (pure). In COPY's
    text format a row is one line (newlines in values are written ``\\n``)."""
    counts: dict[str, int] = {}
    table: str | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if table is None:
            if match := _COPY.match(line):
                table = match.group(1)
                counts[table] = 0
        elif line == "\\.":
            table = None
        else:
            counts[table] += 1
    return counts


def clearing_sql(kept: Sequence[str]) -> str:
    """The statement that clears the way for the dump (pure): drop every user schema but
    ``kept``, and empty ``kept``. Extension members go with their extension."""
    names = ", ".join("'" + name.replace("'", "''") + "'" for name in sorted(kept))
    not_member = (
        "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
        "AND d.objid = {oid} AND d.deptype = 'e')"
    )
    return f"""DO $clear$
DECLARE
  kept text[] := ARRAY[{names}]::text[];
  r record;
BEGIN
  FOR r IN SELECT n.nspname FROM pg_namespace n
            WHERE {_SYSTEM_SCHEMA} AND n.nspname <> ALL (kept) LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  FOR r IN SELECT e.extname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
            WHERE n.nspname = ANY (kept) LOOP
    EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
  END LOOP;
  FOR r IN SELECT format('%I.%I', n.nspname, c.relname) AS name,
                  CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                 WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'
                                 ELSE 'TABLE' END AS kind
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY (kept) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
              AND {not_member.format(catalog="pg_class", oid="c.oid")} LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', r.kind, r.name);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure::text AS name
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = ANY (kept)
              AND {not_member.format(catalog="pg_proc", oid="p.oid")} LOOP
    EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', r.name);
  END LOOP;
  FOR r IN SELECT format('%I.%I', n.nspname, t.typname) AS name,
                  CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END AS kind
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = ANY (kept) AND t.typtype IN ('b', 'c', 'd', 'e', 'r', 'm')
              AND (t.typtype <> 'c'
                   OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
              AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)
              AND {not_member.format(catalog="pg_type", oid="t.oid")} LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', r.kind, r.name);
  END LOOP;
  FOR r IN SELECT format('%I.%I', n.nspname, c.collname) AS name
             FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
            WHERE n.nspname = ANY (kept)
              AND {not_member.format(catalog="pg_collation", oid="c.oid")} LOOP
    EXECUTE format('DROP COLLATION IF EXISTS %s CASCADE', r.name);
  END LOOP;
END
$clear$;
"""


def check_tools() -> None:
    """UsageError naming the first client program missing from PATH."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise UsageError(f"restoring a pg_dump backup needs {tool} on PATH (postgresql-client)")


def read_dump(dump: Path, workdir: Path) -> tuple[DumpContents, Path]:
    """What ``dump`` holds, and its whole restore script written into ``workdir``."""
    schema = _tool(["pg_restore", "--schema-only", "--no-owner", "--file=-", str(dump)])
    script = workdir / "restore.sql"
    _tool(["pg_restore", "--no-owner", f"--file={script}", str(dump)])
    with script.open(encoding="utf-8", errors="replace") as handle:
        counts = count_rows(handle)
    return DumpContents(schemas_created(schema), schema_lines(schema), counts), script


def restore(
    url: str, contents: DumpContents, script: Path, workdir: Path, *, lock_timeout: float
) -> None:
    """Clear the way and run ``script``, in one transaction (nothing changes on failure).

    Each lock is waited for at most ``lock_timeout`` seconds (all traffic on a table queues behind
    the restore's wait), then who holds it is named. Raises RestoreFailed with psql's first error,
    or DatabaseError (transient) when the connection failed: then whether the COMMIT landed is
    unknown, and only :func:`differences` can tell.
    """
    clearing = workdir / "clear.sql"
    # For the clearing, which locks every table (the dump's script then sets lock_timeout 0).
    bound = f"SET LOCAL lock_timeout = '{milliseconds(lock_timeout)}';\n"
    # ``public`` is emptied rather than dropped, unless the dump creates it.
    clearing.write_text(bound + clearing_sql(sorted({"public"} - contents.schemas_created)))
    conninfo, env = without_password(url)
    done = children.run(
        [
            "psql",
            "--no-psqlrc",
            "--quiet",
            "--single-transaction",
            "--set=ON_ERROR_STOP=1",
            f"--dbname={conninfo}",
            f"--file={clearing}",
            f"--file={script}",
        ],
        env=env,
        errors="replace",
    )
    if done.returncode != 0:
        error = _first_error(done.stderr)
        if is_transient_message(error):
            raise DatabaseError(
                f"the connection failed during the restore: {error}", transient=True
            )
        if "lock timeout" in error:
            held = holders_at(url, "ACCESS EXCLUSIVE") or "the session has ended"
            error += f" ({lock_timeout:g}s; {held})"
        raise RestoreFailed(f"the restore failed and was rolled back, nothing changed: {error}")


def differences(url: str, contents: DumpContents, limit: int = 5) -> list[str]:
    """How the database differs from the dump: its schema (``pg_dump --schema-only``), then
    each dumped table's row count. Empty when it holds exactly what the dump holds."""
    conninfo, env = without_password(url)
    now = schema_lines(
        _tool(
            ["pg_dump", "--schema-only", "--no-owner", "--no-password", f"--dbname={conninfo}"],
            env=env,
        )
    )
    found = [f"schema: {line}" for line in schema_diff(contents.schema_lines, now)[:limit]]
    counts = table_counts(url, list(contents.row_counts))
    for table, rows in contents.row_counts.items():
        if counts.get(table) != rows:
            found.append(f"rows: {table} has {counts.get(table, 'no table')}, the dump {rows}")
    return found


def schema_diff(dumped: Sequence[str], now: Sequence[str]) -> list[str]:
    """The lines that differ, ``-`` for the dump's and ``+`` for the database's (pure)."""
    import difflib

    return [
        line
        for line in difflib.unified_diff(list(dumped), list(now), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("---", "+++"))
    ]


def table_counts(url: str, tables: Sequence[str]) -> dict[str, int]:
    """``count(*)`` of each table, named as the dump's COPY names it (schema-qualified and
    quoted by pg_dump); a table that is not there is left out."""
    counts: dict[str, int] = {}
    with connect(url, autocommit=True) as conn:
        for table in tables:
            found = conn.execute(_NAMES_SQL, (table,)).fetchone()
            if found is None:
                continue
            name = sql.Identifier(str(found[0]), str(found[1]))
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()
            counts[table] = int(str(row[0])) if row else 0
    return counts


_NAMES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass(%s)
"""


def _tool(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = children.run(argv, env=env, private_files=True, errors="replace")
    if done.returncode != 0:
        error = _first_error(done.stderr)
        raise DatabaseError(f"{argv[0]} failed: {error}", transient=is_transient_message(error))
    return done.stdout


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "FATAL" in line or "error" in line]
    return redact((errors or lines or ["no output"])[0])
