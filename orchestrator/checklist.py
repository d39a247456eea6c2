"""The runbook's pre-deployment checklist, made concrete for one playbook (pure)."""

from __future__ import annotations

from orchestrator.playbook import Playbook

BACKUP_TEXT = {
    "restore_point": "a restore point (time + WAL position) is recorded before migrating",
    "pg_dump": "a pg_dump is written and verified with pg_restore --list",
    "manual": "you confirm that a current backup exists",
    "neon_branch": "a Neon branch of production is made at the WAL position read just before "
    "migrating",
}


def checklist(playbook: Playbook) -> list[str]:
    """What the operator should have in mind before a guided deploy starts."""
    git = playbook.git
    monitor = playbook.monitor
    return [
        f"Pre-deployment checklist for {playbook.name}:",
        f"  [ ] ${playbook.database.url_env} points at the production database",
        f"  [ ] Backup: {BACKUP_TEXT[playbook.backup.kind]}",
        f"  [ ] Migrations from {git.source}'s commit ({playbook.migrations.dir}) were applied "
        "successfully on staging",
        f"  [ ] The team knows {git.source} → {git.target} is about to be merged and pushed "
        f"to {git.remote}",
        f"  [ ] Monitoring: {len(monitor.http)} HTTP and {len(monitor.sql)} SQL check(s) every "
        f"{monitor.interval:g}s for {monitor.duration:g}s, "
        f"{monitor.failures_allowed} failure(s) allowed",
        "  [ ] Rollback: a halted run prints its plan; `orchestrator rollback RUN_ID` reverts "
        "the merge",
        "Each change (migrate, push, rollback) asks for confirmation.",
    ]
