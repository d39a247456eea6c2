"""``backup.kind: neon_branch``: a branch of production at the LSN read just before
migrating, made through the Neon API; the guard checks it still exists.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.engine.outcomes import BackupOutcome
from orchestrator.errors import GuardError, UsageError
from orchestrator.neon.api import Branch, NeonApi, OperationFailed
from orchestrator.platforms.http import read_secret
from orchestrator.playbook import Playbook


def neon_api(
    playbook: Playbook, environ: Mapping[str, str], purpose: str = "backup kind neon_branch"
) -> NeonApi:
    """The API client of the playbook's Neon project; UsageError without the playbook's
    ``neon:`` block (``purpose`` says what needed it) or without a key."""
    if (spec := playbook.neon) is None:
        raise UsageError(f"{purpose} needs the neon: block of the playbook (project_id, ...)")
    key = read_secret(environ, spec.api_key_env, "Neon API key")
    return NeonApi(project_id=spec.project_id, api_key=key, api_url=spec.api_url)


def production_branch(api: NeonApi, playbook: Playbook) -> Branch:
    """Production's branch as the API knows it (the playbook names it by name or id)."""
    assert playbook.neon is not None
    if (production := api.find_branch(playbook.neon.branch)) is None:
        raise GuardError(
            f"Neon project {playbook.neon.project_id} has no branch {playbook.neon.branch!r}"
        )
    return production


def take_branch_backup(
    api: NeonApi, playbook: Playbook, run_id: str, point: BackupOutcome
) -> BackupOutcome:
    """Branch production at the restore point's LSN (reusing this run's branch if a killed
    attempt made it, once Neon has made it); the outcome to record."""
    assert playbook.neon is not None
    production = production_branch(api, playbook)
    name = f"pre-{run_id}"  # one backup branch a run, found again by its name on resume
    branch = api.find_branch(name)
    if branch is not None and branch.parent_id != production.id:
        raise GuardError(f"branch {name} exists but is not a branch of {production.name!r}")
    if branch is not None:  # a killed attempt's: kept once Neon has finished making it
        try:  # its operations, when still among the project's latest (a failed one: made again)
            api.wait(api.operations_of(branch.id))
        except OperationFailed:
            api.delete_branch(branch.id)  # Neon could not make it: make it again
            branch = None
        else:  # and its own state: in a busy project the operations may be too old to list
            branch = api.made(branch)
    if branch is None:
        branch = api.create_branch(
            parent_id=production.id, parent_lsn=str(point.wal_lsn), name=name
        )
    return BackupOutcome(
        kind="neon_branch",
        project_id=playbook.neon.project_id,
        branch_id=branch.id,
        branch_name=branch.name,
        parent_branch_id=production.id,
        parent_branch=playbook.neon.branch,
        lsn=branch.parent_lsn or point.wal_lsn,
        taken_at=point.taken_at,
        database=point.database,
    )
