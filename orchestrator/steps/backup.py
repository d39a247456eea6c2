"""Backup check: make sure there is a way back before the database changes.

- ``restore_point`` records what a point-in-time restore (e.g. Neon's branch-from-time)
  needs: the server's ``now()``, its WAL position, version and database size;
- ``pg_dump`` writes a custom-format dump and proves it readable with ``pg_restore --list``;
- ``manual`` has the operator confirm that a backup exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orchestrator.db.connect import connect, describe, redact
from orchestrator.db.retry import call_with_retry, is_transient
from orchestrator.errors import DatabaseError, GuardError, UsageError
from orchestrator.runs import utc_now_iso
from orchestrator.steps.base import Outcome, RunContext

RESTORE_POINT_SQL = """
SELECT now()::text,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text
            ELSE pg_current_wal_lsn()::text END,
       current_setting('server_version'),
       pg_database_size(current_database()),
       current_database()
"""


@dataclass(frozen=True)
class BackupStep:
    """Record a restore point, write and verify a dump, or have a backup confirmed."""

    name: str = "backup"

    def run(self, ctx: RunContext) -> Outcome:
        kind = ctx.playbook.backup.kind
        if kind == "restore_point":
            return call_with_retry(
                lambda: restore_point(ctx.database_url), ctx.retry, on_retry=ctx.on_retry
            )
        if kind == "pg_dump":
            assert ctx.playbook.backup.path is not None  # the playbook model guarantees it
            target = dump_path(ctx.playbook.backup.path, ctx.record.run_id)
            return pg_dump(ctx.database_url, target)
        if ctx.backup_confirmed:
            return {"kind": "manual", "confirmed_at": utc_now_iso(), "by": "--backup-confirmed"}
        # Only a person can attest to a backup: --yes does not answer this question.
        question = "Confirm that a current backup of the production database exists"
        if ctx.ask is None or not ctx.ask(question):
            raise GuardError("no backup confirmed: the run stops before anything changes")
        return {"kind": "manual", "confirmed_at": utc_now_iso(), "by": "operator"}

    def done(self, ctx: RunContext) -> Outcome | None:
        # A backup taken by an interrupted attempt still stands: never take it twice.
        previous = ctx.outcome(self.name)
        return previous or None


def restore_point(url: str) -> Outcome:
    """The moment and WAL position to restore to, read from the server itself."""
    try:
        with connect(url) as conn:
            conn.read_only = True  # a read: the rehearsal runs it against production too
            row = conn.execute(RESTORE_POINT_SQL).fetchone()
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot record a restore point: {describe(exc)}", transient=is_transient(exc)
        ) from exc
    assert row is not None
    taken_at, lsn, version, size, database = row
    return {
        "kind": "restore_point",
        "taken_at": taken_at,
        "wal_lsn": lsn,
        "server_version": version,
        "database_size_bytes": int(str(size)),
        "database": database,
    }


def dump_path(configured: Path, run_id: str) -> Path:
    """Where the dump goes: inside ``configured`` if it is a folder, else that file."""
    if configured.is_dir() or str(configured).endswith(os.sep):
        return configured / f"{run_id}.dump"
    return configured


def pg_dump(url: str, target: Path) -> Outcome:
    """Write a custom-format dump to ``target`` and verify it with ``pg_restore --list``."""
    for tool in ("pg_dump", "pg_restore"):
        if shutil.which(tool) is None:
            raise UsageError(f"backup kind pg_dump needs {tool} on PATH (postgresql-client)")
    if target.exists():
        raise UsageError(f"backup path {target} already exists: refusing to overwrite a backup")
    target.parent.mkdir(parents=True, exist_ok=True)
    conninfo, env = _without_password(url)
    dump = subprocess.run(
        ["pg_dump", "--format=custom", "--no-password", f"--file={target}", f"--dbname={conninfo}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if dump.returncode != 0:
        target.unlink(missing_ok=True)
        raise DatabaseError(f"pg_dump failed: {_first_line(dump.stderr)}", transient=False)
    listing = subprocess.run(
        ["pg_restore", "--list", str(target)], capture_output=True, text=True, check=False
    )
    if listing.returncode != 0:
        raise GuardError(f"the dump {target} is not readable: {_first_line(listing.stderr)}")
    entries = [line for line in listing.stdout.splitlines() if line and not line.startswith(";")]
    return {
        "kind": "pg_dump",
        "path": str(target),
        "bytes": target.stat().st_size,
        "sha256": _sha256(target),
        "toc_entries": len(entries),
        "taken_at": utc_now_iso(),
    }


def _without_password(url: str) -> tuple[str, dict[str, str]]:
    """Keep the password out of argv (visible in ``ps``): pass it through PGPASSWORD."""
    params: dict[str, Any] = conninfo_to_dict(url)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return redact(lines[0]) if lines else "no output"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
