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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from orchestrator import children
from orchestrator.db.backoff import READ_LOCK_TIMEOUT_S
from orchestrator.db.blockers import pg_dump_lock_wait
from orchestrator.db.connect import connect, database_error, milliseconds, without_password
from orchestrator.db.retry import call_with_retry
from orchestrator.engine.outcomes import BackupOutcome
from orchestrator.engine.steps.base import RunContext
from orchestrator.errors import DatabaseError, GuardError, UsageError
from orchestrator.neon.backup import neon_api, take_branch_backup
from orchestrator.redaction import redact
from orchestrator.runs import PRIVATE_FILE, private_directory, utc_now_iso

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

    def run(self, ctx: RunContext) -> BackupOutcome:
        kind = ctx.playbook.backup.kind
        if kind in ("restore_point", "neon_branch"):
            point = call_with_retry(
                lambda: restore_point(ctx.database_url), ctx.retry, on_retry=ctx.on_retry
            )
            if kind == "restore_point":
                return point
            api = neon_api(ctx.playbook, ctx.environ)
            return take_branch_backup(api, ctx.playbook, ctx.record.run_id, point)
        if kind == "pg_dump":
            assert ctx.playbook.backup.path is not None  # the playbook model guarantees it
            target = dump_path(ctx.playbook.backup.path, ctx.record.run_id)
            previous = ctx.record.steps.backup
            adopted, moved = settle_target(target, previous, ctx.record.created_at)
            if moved is not None:
                ctx.log.warning("backup_moved_aside", path=str(target), moved_to=str(moved))
            if adopted is not None:
                ctx.log.info("backup_adopted", path=str(target), sha256=adopted.sha256)
                return adopted
            return pg_dump(ctx.database_url, target)
        if ctx.backup_confirmed:
            return BackupOutcome(kind="manual", confirmed_at=utc_now_iso(), by="--backup-confirmed")
        # Only a person can attest to a backup: --yes does not answer this question.
        question = "Confirm that a current backup of the production database exists"
        if ctx.ask is None or not ctx.ask(question):
            raise GuardError("no backup confirmed: the run stops before anything changes")
        return BackupOutcome(kind="manual", confirmed_at=utc_now_iso(), by="operator")

    def done(self, ctx: RunContext) -> BackupOutcome | None:
        # A backup taken by an interrupted attempt still stands (never take it twice), but
        # only if it is still there: a dump is checked on disk, not in our notes.
        if (previous := ctx.record.steps.backup) is None:
            return None
        if previous.kind == "pg_dump" and not dump_intact(previous):
            return None
        if previous.kind == "neon_branch":
            api = neon_api(ctx.playbook, ctx.environ)
            if not previous.branch_id or api.get_branch(previous.branch_id) is None:
                return None  # the branch is gone: take the backup again
        return previous


def restore_point(url: str) -> BackupOutcome:
    """The moment and WAL position to restore to, read from the server itself."""
    try:
        with connect(url) as conn:
            conn.read_only = True  # a read: the rehearsal runs it against production too
            row = conn.execute(RESTORE_POINT_SQL).fetchone()
    except psycopg.Error as exc:
        raise database_error("cannot record a restore point", exc) from exc
    assert row is not None
    taken_at, lsn, version, size, database = row
    return BackupOutcome(
        kind="restore_point",
        taken_at=str(taken_at),
        wal_lsn=None if lsn is None else str(lsn),  # NULL on a standby not replaying
        server_version=str(version),
        database_size_bytes=int(str(size)),
        database=str(database),
    )


def dump_path(configured: Path, run_id: str) -> Path:
    """Where the dump goes: inside ``configured`` if it is a folder, else that file."""
    if configured.is_dir() or str(configured).endswith(os.sep):
        return configured / f"{run_id}.dump"
    return configured


def pg_dump(url: str, target: Path, *, lock_wait: float = READ_LOCK_TIMEOUT_S) -> BackupOutcome:
    """Write a custom-format dump to ``target`` and verify it with ``pg_restore --list``.

    Each table's lock is waited for at most ``lock_wait`` seconds, then who holds it is named.

    The dump is written to ``.<name>.partial`` beside the target, readable by its owner only, and
    renamed to ``target`` only once ``pg_restore --list`` accepts it: a dump at ``target`` is always
    complete, and its digest is computed before the rename. A partial file left by a killed run is
    ours to replace; a file already at ``target`` is refused (:func:`settle_target` deals with it
    first). ``pg_dump`` dies with us (it would otherwise go on reading production unattended).
    """
    for tool in ("pg_dump", "pg_restore"):
        if shutil.which(tool) is None:
            raise UsageError(f"backup kind pg_dump needs {tool} on PATH (postgresql-client)")
    if target.exists():
        raise UsageError(f"backup path {target} already exists: refusing to overwrite a backup")
    private_directory(target.parent)
    partial = partial_path(target)
    partial.unlink(missing_ok=True)
    conninfo, env = without_password(url)
    dump = children.run(  # dies with us: it would otherwise read production unattended
        [
            "pg_dump",
            "--format=custom",
            "--no-password",
            f"--lock-wait-timeout={milliseconds(lock_wait)}",
            f"--file={partial}",
            f"--dbname={conninfo}",
        ],
        env=env,
        private_files=True,
    )
    if dump.returncode != 0:
        partial.unlink(missing_ok=True)
        why = pg_dump_lock_wait(dump.stderr, url, lock_wait) or _first_line(dump.stderr)
        raise DatabaseError(f"pg_dump failed: {why}", transient=False)
    partial.chmod(PRIVATE_FILE)
    entries = _listing(partial)
    if entries is None:
        partial.unlink(missing_ok=True)
        raise GuardError(f"the dump written for {target} is not readable by pg_restore")
    # Hashed before the rename: a kill after it leaves a complete dump that settle_target
    # adopts on resume, never a renamed file whose digest nobody computed.
    outcome = _dump_outcome(partial, len(entries))
    os.replace(partial, target)
    return outcome.model_copy(update={"path": str(target)})


def settle_target(
    target: Path, recorded: BackupOutcome | None, run_started: str
) -> tuple[BackupOutcome | None, Path | None]:
    """What to do with a file already at the dump's ``target`` before dumping: ``(adopted
    outcome, None)`` or ``(None, where it was moved)``; ``(None, None)`` when there is none.

    A complete dump this run wrote before a kill (no backup recorded yet, written since the
    run started, and ``pg_restore --list`` reads it) is adopted with its digest. Anything
    else (a recorded dump changed since, a stale or unreadable file) is moved aside to a
    unique name, never deleted, and the dump is taken again.
    """
    if not target.exists():
        return None, None
    if recorded is None and _written_since(target, run_started):
        entries = _listing(target)
        if entries is not None:
            return _dump_outcome(target, len(entries), adopted=True), None
    return None, _move_aside(target)


def _dump_outcome(path: Path, toc_entries: int, adopted: bool = False) -> BackupOutcome:
    return BackupOutcome(
        kind="pg_dump",
        path=str(path),
        bytes=path.stat().st_size,
        sha256=_sha256(path),
        toc_entries=toc_entries,
        taken_at=utc_now_iso(),
        adopted=adopted,
    )


def _written_since(path: Path, moment: str) -> bool:
    try:
        started = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return False
    return path.stat().st_mtime >= started.timestamp()


def _move_aside(target: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = target.with_name(f"{target.name}.moved-{stamp}")
    counter = 0
    while aside.exists():
        counter += 1
        aside = target.with_name(f"{target.name}.moved-{stamp}-{counter}")
    os.replace(target, aside)
    return aside


def partial_path(target: Path) -> Path:
    """Where a dump is written until it is verified."""
    return target.with_name(f".{target.name}.partial")


def dump_intact(recorded: BackupOutcome) -> bool:
    """Whether a recorded dump is still on disk, with its digest, and readable."""
    path = Path(recorded.path or "")
    if not recorded.path or not path.is_file() or _sha256(path) != recorded.sha256:
        return False
    return _listing(path) is not None


def _listing(path: Path) -> list[str] | None:
    """The table of contents ``pg_restore --list`` reads from a dump; None if it cannot."""
    listing = children.run(["pg_restore", "--list", str(path)], errors="replace")
    if listing.returncode != 0:
        return None
    return [line for line in listing.stdout.splitlines() if line and not line.startswith(";")]


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return redact(lines[0]) if lines else "no output"


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
