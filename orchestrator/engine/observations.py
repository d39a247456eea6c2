"""What the run's guards look at: facts read from the world, not from the run's own notes.

A guard that lets a run move on must check the fact itself. The run record says what a step
did; someone may have undone it since (a dump deleted, a push reset, tracking rows removed
while the run was down). :class:`Observations` is the guards' view of the world, as a few
questions; :class:`LiveObservations` answers them with I/O (a database query, a git fetch, a
file check), each asked at most once per guard evaluation and never cached across states.

Guards stay pure functions of (record, observations), so the decision table is tested
without I/O by answering the questions with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import psycopg
from psycopg import sql

from orchestrator.database import judge_database
from orchestrator.db.connect import connect, database_error
from orchestrator.db.retry import call_with_retry
from orchestrator.engine.outcomes import BackupOutcome, MergeOutcome
from orchestrator.engine.steps.backup import dump_intact
from orchestrator.engine.steps.base import RunContext
from orchestrator.engine.steps.pull_request import api_of
from orchestrator.engine.steps.release import live_now
from orchestrator.engine.world import carries_release
from orchestrator.errors import DatabaseError
from orchestrator.neon.backup import neon_api
from orchestrator.validation import ValidationReport


class Observations(Protocol):
    """The facts guards check, asked of the world when a guard needs them."""

    def untracked(self) -> frozenset[str]:
        """The tags of the run's migrations that the tracking rows, counted, miss now."""
        ...

    def remote_ships(self, commit: str) -> bool:
        """Whether the remote target branch, freshly fetched, carries the release ``commit``."""
        ...

    def commit_exists(self, commit: str) -> bool:
        """Whether the operator's clone has ``commit``."""
        ...

    def dump_intact(self, outcome: BackupOutcome) -> bool:
        """Whether a recorded dump is on disk, with its recorded digest, and readable."""
        ...

    def backup_branch_exists(self, outcome: BackupOutcome) -> bool:
        """Whether a recorded Neon backup branch still exists (the Neon API says so)."""
        ...

    def pull_request_merged(self, number: int) -> bool:
        """Whether GitHub says pull request ``number`` is merged."""
        ...

    def release_live(self, commit: str) -> bool:
        """Whether production serves ``commit`` (or a commit containing it) now: the release
        gate's sighting if this process made it within one interval, else one look; always
        True without a ``release:`` block."""
        ...

    def release_verdict(self) -> str:
        """validate's verdict now (``SAFE``, ``NEEDS_MIGRATION``, ``PARTIAL_MIGRATION``) on
        the database the run reaches, for the release's migrations: ``SAFE`` when production
        holds exactly them. :class:`DatabaseError` when it cannot be read."""
        ...


def validate(ctx: RunContext) -> ValidationReport:
    """The core validator on the run's database and the source commit's migrations."""
    report, ctx.history = judge_database(
        ctx.database_url,
        ctx.journal,
        ctx.migrate_options,
        shadow=ctx.shadow,
        retry=ctx.retry,
        on_retry=ctx.on_retry,
        history=ctx.history,
    )
    return report


@dataclass
class LiveObservations:
    """:class:`Observations` answered by the run's database, clone and disk."""

    ctx: RunContext

    def untracked(self) -> frozenset[str]:
        options = self.ctx.migrate_options
        rows = call_with_retry(
            lambda: read_row_hashes(self.ctx.database_url, options.schema, options.table),
            self.ctx.retry,
            on_retry=self.ctx.on_retry,
        )
        return frozenset(m.tag for m in self.ctx.journal.untracked(rows))

    def remote_ships(self, commit: str) -> bool:
        ctx, spec = self.ctx, self.ctx.playbook.git
        tip = f"refs/remotes/{spec.remote}/{spec.target}"
        before = (ctx.record.steps.merge or MergeOutcome()).previous_target_commit
        return carries_release(ctx.playbook, ctx.repo, ctx.journal, tip, commit, before)

    def commit_exists(self, commit: str) -> bool:
        try:
            self.ctx.repo.git.cat_file("-e", f"{commit}^{{commit}}")
        except Exception:  # GitCommandError: not in the clone
            return False
        return True

    def dump_intact(self, outcome: BackupOutcome) -> bool:
        return dump_intact(outcome)

    def backup_branch_exists(self, outcome: BackupOutcome) -> bool:
        if not outcome.branch_id:
            return False
        api = neon_api(self.ctx.playbook, self.ctx.environ)
        return api.get_branch(outcome.branch_id) is not None

    def pull_request_merged(self, number: int) -> bool:
        return api_of(self.ctx).get_pull(number).merged

    def release_live(self, commit: str) -> bool:
        return live_now(self.ctx, commit)

    def release_verdict(self) -> str:
        report = validate(self.ctx)
        status = report.status.value
        self.ctx.log.info("production_checked", status=status, recommendation=report.recommendation)
        if status == "ERROR":
            reason = report.first_error(status)
            raise DatabaseError(f"cannot check production's migrations: {reason}")
        return str(status)


def read_row_hashes(url: str, schema: str, table: str) -> tuple[str, ...]:
    """The hash of each tracking row (none when the table does not exist)."""
    try:
        with connect(url) as conn:
            conn.read_only = True
            row = conn.execute(
                "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, table)
            ).fetchone()
            if row is None or row[0] is None:
                return ()
            query = sql.SQL("SELECT hash FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            return tuple(str(h) for (h,) in conn.execute(query).fetchall() if h)
    except psycopg.Error as exc:
        raise database_error("cannot read the tracking rows", exc) from exc
