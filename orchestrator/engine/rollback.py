"""The rollback plan for a run, from its record (pure), and the code rollback.

The plan is concrete for the state the run stopped in: which migrations this run applied,
the restore point or dump to restore, and the git commands to revert a pushed merge still on
the target (a halt records whether it is: :func:`release_gone`).
"""

from __future__ import annotations

from orchestrator.engine.outcomes import (
    BackupOutcome,
    HaltOutcome,
    MergeOutcome,
    MigrateOutcome,
    PreflightOutcome,
)
from orchestrator.engine.steps.base import RunContext
from orchestrator.gitrepo import revert_commands, revert_release, revert_release_on_branch
from orchestrator.gitrepo.history import undone
from orchestrator.gitrepo.remote import remote_tips
from orchestrator.runs import RunRecord


def database_steps(record: RunRecord, *, looked: bool = False) -> list[str]:
    """How to put the database back, or why there is nothing to do (``looked``: the database
    was just read for a migration the record lacks)."""
    applied = (record.steps.migrate or MigrateOutcome()).tags
    if not applied and record.state == "validated" and record.steps.migrate is None and not looked:
        # Its process stopped (killed, or is migrating) before recording a commit it may have made.
        return [
            "Database: unknown: the run stopped while migrating; the migrations may be "
            f"applied: `orchestrator rollback {record.run_id}` looks."
        ]
    if not applied:
        return ["Database: this run applied no migration; nothing to restore."]
    backup = record.steps.backup or BackupOutcome()
    left = not_applied(record)
    stopped = f" and stopped before {', '.join(left)}" if left else ""
    lines = [
        f"Database: this run applied {', '.join(applied)}{stopped}. If the previous code works "
        "on the new schema (additive migrations), reverting the code is enough; restore only if "
        "the migrations themselves broke data or the old code (restoring loses every write since)."
    ]
    if backup.kind == "restore_point":
        lines.append(
            f"  Point-in-time restore to {backup.taken_at} (WAL LSN "
            f"{backup.wal_lsn}, database {backup.database}) with your provider's PITR (on "
            "Neon: restore the branch to that timestamp or LSN, `neon branches restore`)."
        )
    elif backup.kind == "pg_dump":
        # Not `pg_restore --clean`: what the release added (a foreign key to a dumped table,
        # an index, a column) stops it half way. See orchestrator.db.dump_restore.
        lines.append(
            f"  orchestrator rollback {record.run_id} --restore-database   # from the dump "
            f"{backup.path} (sha256 {(backup.sha256 or '')[:12]}…): exactly the dumped "
            "schema and rows, in one transaction, checked against the dump"
        )
    elif backup.kind == "neon_branch":
        lines.append(
            f"  Restore Neon branch {backup.parent_branch} ({backup.parent_branch_id}) "
            f"from the backup branch {backup.branch_name} ({backup.branch_id}), LSN "
            f"{backup.lsn}: POST /projects/{backup.project_id}/branches/"
            f"{backup.parent_branch_id}/restore with source_branch_id "
            f"{backup.branch_id} and preserve_under_name (console: Restore)."
        )
    elif backup.kind == "manual":
        lines.append(f"  Restore the backup the operator confirmed at {backup.confirmed_at}.")
    lines.append(
        "  Then validate again: `orchestrator validate --migrations <dir>` must not report "
        "these migrations as applied."
    )
    return lines


def not_applied(record: RunRecord) -> list[str]:
    """The planned migrations a migrate step that stopped partway did not apply (empty when
    it applied none, or all)."""
    applied = (record.steps.migrate or MigrateOutcome()).tags
    return [p.tag for p in record.planned if p.tag not in applied] if applied else []


def code_steps(record: RunRecord, *, looked: bool = False) -> list[str]:
    """The exact git commands to revert the pushed merge, if there was one (``looked``: the
    remote was just read for a push the record lacks)."""
    merge = record.steps.merge or MergeOutcome()
    preflight = record.steps.preflight or PreflightOutcome()
    done = record.steps.rollback
    if done is not None:  # not twice: the target holds the revert (or its pull request does)
        pr = f" through {done.pull_request_url}" if done.pull_request_url else ""
        return [f"Code: reverted at {done.at} by rollback: commit {done.reverted_commit}{pr}."]
    if not merge.pushed_commit and record.state == "revalidated" and not looked:
        # Its process stopped (killed, or is merging) before recording a push it may have made.
        return [
            f"Code: unknown: the run stopped while merging; {preflight.remote}/{preflight.target}"
            f" may hold the release: `orchestrator rollback {record.run_id}` looks there."
        ]
    if not merge.pushed_commit:
        return ["Code: nothing was merged or pushed; the target branch is as it was."]
    if (record.steps.halt or HaltOutcome()).release_gone:  # `rollback` could not revert it
        return [
            f"Code: the release is no longer on {preflight.remote}/{preflight.target}: someone "
            f"reset the branch or reverted it after the run pushed {merge.pushed_commit[:12]}; "
            "there is no code to revert. Left to decide: the database."
        ]
    result = merge.as_result()
    commands = revert_commands(preflight.remote, preflight.target, result)
    if not commands:
        return ["Code: the source was already on the target; nothing to revert."]
    if merge.pull_request is not None:
        # The target takes changes through pull requests: revert on a branch, open one.
        branch = revert_branch(record.run_id)
        return [
            f"Code: revert the release through a pull request into {preflight.target} "
            f"(or run `orchestrator rollback {record.run_id}`, which opens it):",
            f"  git fetch {preflight.remote}",
            f"  git switch -c {branch} {preflight.remote}/{preflight.target}",
            f"  {commands[3]}",
            f"  git push {preflight.remote} {branch}",
            f"  then open a pull request {branch} -> {preflight.target} and merge it",
        ]
    return [
        f"Code: revert the release on {preflight.target} "
        f"(or run `orchestrator rollback {record.run_id}`):",
        *(f"  {c}" for c in commands),
    ]


def rollback_plan(record: RunRecord, *, looked: bool = False) -> list[str]:
    """The whole plan: code first (it is what users see), then the database."""
    return [*code_steps(record, looked=looked), *database_steps(record, looked=looked)]


def release_gone(ctx: RunContext) -> bool:
    """Whether the target, fetched now, no longer holds the run's push: every file it changed
    back as before it (reset off it, or reverted). False when it cannot tell."""
    merge, preflight = ctx.record.steps.merge or MergeOutcome(), ctx.record.steps.preflight
    pushed, before = merge.pushed_commit, merge.previous_target_commit
    if not (pushed and before and preflight) or pushed == before or ctx.record.steps.rollback:
        return False
    try:
        tip = remote_tips(ctx.repo, preflight.remote, [preflight.target])[preflight.target]
        # By content, not ancestry: a history rewritten under the release keeps its code.
        return undone(ctx.repo, before, pushed, tip)
    except Exception as exc:  # cannot look: the plan reverts it as usual
        ctx.log.warning("release_unknown", error=str(exc))
        return False


def revert_branch(run_id: str) -> str:
    """The branch a revert of run ``run_id`` is pushed to when it goes through a PR."""
    return f"revert-{run_id}"


def revert_code(ctx: RunContext) -> tuple[str, str | None]:
    """Revert the run's pushed release: on the target, or (released through a pull request)
    on ``revert-<run-id>`` with a pull request opened from it; the pushed revert commit and
    the pull request's URL."""
    from orchestrator.engine.steps.pull_request import api_of  # the GitHub client, logged

    merge = ctx.record.steps.merge or MergeOutcome()
    preflight = ctx.record.steps.preflight or PreflightOutcome()
    release = (ctx.repo, preflight.remote, preflight.target, merge.as_result())
    message = f"Revert release {ctx.record.name} (orchestrator run {ctx.record.run_id})"
    if merge.pull_request is None:
        return revert_release(*release, message=message), None
    api = api_of(ctx)  # a missing token stops here, before anything is pushed
    branch = revert_branch(ctx.record.run_id)
    commit = revert_release_on_branch(*release, branch, message=message)
    pr = api.create_pull(
        branch,
        preflight.target,
        title=f"Revert release {ctx.record.name}",
        body=f"Reverts pull request #{merge.pull_request} (orchestrator run "
        f"{ctx.record.run_id}): the release's commit {merge.pushed_commit}.",
    )
    return commit, pr.url
