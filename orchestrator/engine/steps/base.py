"""What every deploy step shares: the run context and the Step protocol.

A step is a small object with two methods:

- ``run(ctx)`` does the work and returns its outcome (its model in
  :mod:`orchestrator.engine.outcomes`), which the engine stores in the run record;
- ``done(ctx)`` is the step's postcondition, checked against the world (database, git),
  not against the record: on resume, a step whose effect is already there is not run
  again. It returns the outcome to record, or ``None`` when the step still has to run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import git
from structlog.typing import FilteringBoundLogger

from orchestrator.catalog import History
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import RetryPolicy
from orchestrator.db.runlock import RunLock
from orchestrator.drizzle.journal import Journal
from orchestrator.engine.heartbeat import Heartbeat
from orchestrator.engine.outcomes import Outcome
from orchestrator.engine.settings import (
    migrate_options,
    migrations_path,
    retry_policy,
    shadow_spec,
    source_journal,
)
from orchestrator.errors import UsageError
from orchestrator.gitrepo import open_repo
from orchestrator.playbook import Playbook
from orchestrator.runs import RunRecord, RunStore
from orchestrator.shadow import ShadowSpec


@dataclass
class RunContext:
    """Everything a step may use. Built by the engine; steps never prompt or print."""

    playbook: Playbook
    record: RunRecord
    store: RunStore
    log: FilteringBoundLogger
    database_url: str
    confirm: Callable[[str], bool]  # asks the operator; True when --yes
    backup_confirmed: bool = False  # --backup-confirmed: the operator vouches for a backup
    ask: Callable[[str], bool] | None = None  # a human at a terminal, None without one
    on_progress: Callable[[str], None] = lambda _line: None
    database_lock: RunLock | None = None  # the run lock, held by the engine
    heartbeat: Heartbeat | None = None  # a line every few seconds while a step runs
    environ: Mapping[str, str] = field(default_factory=dict)  # for secrets the run may need
    _repo: git.Repo | None = field(default=None, repr=False)
    _journal: Journal | None = field(default=None, repr=False)
    history: History | None = field(default=None, repr=False)  # the journal's, once replayed

    @property
    def repo(self) -> git.Repo:
        """The operator's clone named by the playbook."""
        if self._repo is None:
            self._repo = open_repo(self.playbook.git.repo)
        return self._repo

    @property
    def migrations_path(self) -> str:
        """The migrations folder relative to the repository root (posix)."""
        return migrations_path(self.repo, self.playbook.migrations.dir)

    @property
    def journal(self) -> Journal:
        """The migrations of the source branch's commit recorded in the run."""
        if self._journal is None:
            if (commit := self.record.source_commit) is None:
                raise UsageError("the run has no source commit yet")
            self._journal = source_journal(self.playbook, commit, self.repo)
        return self._journal

    @property
    def shadow(self) -> ShadowSpec:
        """Where the journal is replayed to judge production (see the playbook's shadow:)."""
        return shadow_spec(self.playbook, self.environ)

    @property
    def migrate_options(self) -> MigrateOptions:
        """Tracking table and timeouts from the playbook."""
        return migrate_options(self.playbook)

    @property
    def retry(self) -> RetryPolicy:
        return retry_policy(self.playbook)

    def on_retry(self, attempt: int, error: BaseException, wait: float) -> None:
        """Log one retry of a transient failure."""
        self.log.warning("retry", attempt=attempt, error=str(error), wait_s=round(wait, 2))


class Step(Protocol):
    """One unit of the deploy: ``run`` acts, ``done`` checks its postcondition."""

    @property
    def name(self) -> str:
        """The key of the step's outcome in the run record."""
        ...

    def run(self, ctx: RunContext) -> Outcome:
        """Do the work; return the outcome to record."""
        ...

    def done(self, ctx: RunContext) -> Outcome | None:
        """The recorded outcome if the effect is already in place, else ``None``."""
        ...
