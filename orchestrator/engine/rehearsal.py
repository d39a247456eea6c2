"""``deploy --dry-run``: walk the deploy's route and predict how it would end, committing
nothing. It is not read-only: where the migrations are tried depends on ``--rehearse-on``.

- default (production): the migration DDL runs on production inside a transaction that is
  always rolled back. It takes the locks the real migration takes (ACCESS EXCLUSIVE for most
  ALTER TABLE), so it is bounded: lock waits of at most 1 s and statements of at most 60 s
  unless told otherwise.
- ``--rehearse-on URL``: another database (a staging copy) gets the migrations for real;
  production is only asked which database it is (production spelled otherwise is refused).
- ``--rehearse-on local``: production's schema and tracking rows are copied
  (``pg_dump --schema-only``, ACCESS SHARE locks waited for at most the lock bound) into a
  throwaway local PostgreSQL, which gets the migrations for real. The copy has no rows, so
  the monitor's SQL checks there are reported as not predictive.
- ``--rehearse-on neon-branch``: a temporary Neon branch of production (schema *and* data)
  with a read-write compute gets the migrations for real, and is deleted at the end (also
  on Ctrl-C and SIGTERM). Production gets no connection at all.

Which kind runs, with its bounds, is announced before the first connection to production. Each step
then runs in its rehearsal form (:mod:`orchestrator.engine.rehearsal_steps`) along the deploy's own
declaration. The rehearsal stops where the real deploy would halt. Its exit code is the deploy's
would-be outcome: 0 if the deploy would go ahead, else the code it would halt with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.db.connect import check_url, with_application_name
from orchestrator.db.identity import named_database, same_database
from orchestrator.db.retry import OnRetry, call_with_retry
from orchestrator.drizzle.journal import Journal, parse_journal
from orchestrator.engine.dry_run import DryRun, RehearsalBounds, announcement
from orchestrator.engine.machine import LIVE, TERMINAL, RunModel, build_machine, edges_from
from orchestrator.engine.platform_rehearsal import look_at_platforms
from orchestrator.engine.rehearsal_steps import REHEARSALS, Rehearsal, RehearsedWorld
from orchestrator.engine.run import check_before_run, hold_database
from orchestrator.engine.settings import (
    migrate_options,
    migrations_path,
    retry_policy,
    shadow_spec,
    shipped_hashes,
    with_retries,
)
from orchestrator.engine.steps.base import Step
from orchestrator.errors import DatabaseError, ExitCode, GuardError, OrchestratorError, UsageError
from orchestrator.gitrepo import MissingBranch, TrialMerge, open_repo, read_files_at, trial_merge
from orchestrator.neon.backup import neon_api
from orchestrator.neon.rehearsal import (
    REHEARSE_ON_NEON_BRANCH,
    rehearsal_branch,
    rehearsal_branch_name,
)
from orchestrator.playbook import Playbook, load_playbook
from orchestrator.redaction import redact_url
from orchestrator.runs import RunRecord, RunStore, new_run_id
from orchestrator.schema_copy import CANNOT_CATCH, local_copy
from orchestrator.shadow import ShadowSpec

__all__ = ["DEFAULT_BOUNDS", "rehearse"]

DEFAULT_BOUNDS = RehearsalBounds()
_PRODUCTION_AS_COPY = "--rehearse-on names the production database itself: give a copy"


def rehearse(
    playbook_path: Path,
    environ: Mapping[str, str],
    store: RunStore,
    *,
    attested: bool = False,
    rehearse_on: str | None = None,
    bounds: RehearsalBounds = DEFAULT_BOUNDS,
    announce: Callable[[str], None] | None = None,
    retries: int | None = None,
    on_retry: OnRetry | None = None,
) -> DryRun:
    """Rehearse the deploy of ``playbook_path``; bad input raises UsageError (exit 2).

    ``rehearse_on``: None for production (rolled back, within ``bounds``), ``"local"`` for a
    local schema-only copy, ``"neon-branch"`` for a temporary branch of production's Neon
    branch, else the URL of another database to migrate for real. ``announce`` is given one
    line saying which kind runs and within which bounds, once the input is checked (the trial
    merge and the migrations at the source commit) and before the first connection to
    production. ``retries``: attempts on transient database failures instead of the
    playbook's ``retry.attempts``; ``on_retry`` hears each retry of the run lock's connection.
    ``store``, ``attested``: for the deploy's own refusals before a run (check_before_run).
    """
    playbook = with_retries(load_playbook(playbook_path), retries)
    plain_url, warning = check_before_run(playbook, environ, store, attested, create=False)
    neon = None
    if rehearse_on == REHEARSE_ON_NEON_BRANCH:
        neon = neon_api(playbook, environ, "--rehearse-on neon-branch")  # exit 2 without it
    elif rehearse_on not in (None, "local"):
        check_url(str(rehearse_on))  # a bad URL is refused before anything is done
    url = with_application_name(plain_url, "orchestrator rehearsal")
    repo = open_repo(playbook.git.repo)
    folder = migrations_path(repo, playbook.migrations.dir)
    spec = playbook.git
    options = migrate_options(playbook)
    run = DryRun(warnings=[warning] if warning else [])
    if rehearse_on is None:  # the playbook's own timeouts may be tighter than the bounds
        bounds = bounds.within(options.lock_timeout, options.statement_timeout)
        run.step(
            "bounds",
            "on production, in a transaction that is rolled back: lock waits at most "
            f"{bounds.lock_timeout:g}s, statements at most {bounds.statement_timeout:g}s",
            [
                "the DDL takes the locks the real migration takes (ACCESS EXCLUSIVE for most "
                "ALTER TABLE) for as long as it runs; --rehearse-on local takes none of them"
            ],
        )
    try:  # as the deploy's pre-flight: the clone fetches, with its own credentials
        merge = trial_merge(repo, spec.remote, spec.source, spec.target, pushes=spec.via == "push")
    except MissingBranch as exc:
        raise UsageError(str(exc)) from None  # bad input, as for the deploy itself
    except GuardError as exc:
        return run.halt("preflight", ExitCode.GUARD_FAILED, str(exc))
    run.merge = merge
    if merge.conflicts:
        return run.halt(
            "preflight",
            ExitCode.GUARD_FAILED,
            f"merging {spec.remote}/{spec.source} into {spec.remote}/{spec.target} conflicts",
            [f"conflict: {path}" for path in merge.conflicts],
        )
    files = read_files_at(repo, merge.source_commit, folder)
    shipped = shipped_hashes(repo, merge.target_commit, folder)
    journal = parse_journal(files, origin=f"{spec.source}@{merge.source_commit[:12]}:{folder}")
    journal.refuse_unrunnable(journal.untracked(shipped))
    if announce is not None:  # the input is good; nothing has connected to production yet
        announce(announcement(rehearse_on, bounds))
    run.step(
        "preflight",
        f"{spec.remote}/{spec.source} {merge.source_commit[:12]} merges into "
        f"{spec.remote}/{spec.target} {merge.target_commit[:12]} ({merge.outcome}); "
        f"{len(journal.migrations)} migrations at the source commit",
    )
    run.platforms = look_at_platforms(
        playbook, environ, merge.source_commit, already_merged=merge.already_merged
    )
    shadow = shadow_spec(playbook, environ)
    walk = _Walk(run, playbook, journal, merge, bounds, shadow, environ, on_retry)
    try:
        if rehearse_on is None:
            run.kind = "production, rolled back"
            return walk.on(url, real=False)
        if rehearse_on == "local":
            run.kind = f"a local schema-only copy of production ({CANNOT_CATCH})"
            with local_copy(
                url,
                shadow,
                schema=playbook.migrations.schema_,
                table=playbook.migrations.table,
                lock_wait=bounds.lock_timeout,
                retry=retry_policy(playbook),
            ) as copy_url:
                return walk.on(copy_url, real=True, schema_only=True)
        if neon is not None:
            run.kind = "a temporary Neon branch of production (not created)"
            name = rehearsal_branch_name(new_run_id())
            with rehearsal_branch(neon, playbook, plain_url, name=name) as (branch, branch_url):
                production = playbook.neon.branch if playbook.neon else "production"
                run.kind = (
                    f"Neon branch {branch.name} of {production} (migrated for real, then deleted)"
                )
                # Never migrate production; judged from the URLs: it gets no connection.
                if named_database(branch_url) == named_database(plain_url):
                    raise UsageError(_PRODUCTION_AS_COPY)
                target = with_application_name(check_url(branch_url), "orchestrator rehearsal")
                return walk.on(target, real=True)
        target = with_application_name(check_url(rehearse_on), "orchestrator rehearsal")
        run.kind = f"another database, {redact_url(rehearse_on)} (migrated for real)"
        # Production spelled otherwise (localhost, a DNS alias) is still production: the two
        # identities say so, one read each, before the copy is migrated for real.
        if call_with_retry(
            lambda: same_database(url, target), retry_policy(playbook), on_retry=on_retry
        ):
            raise UsageError(_PRODUCTION_AS_COPY)
        return walk.on(target, real=True)
    except DatabaseError as exc:
        return run.halt("database", ExitCode.ERROR, str(exc))


@dataclass(frozen=True)
class _Walk:
    """What the walk needs once the trial merge and the journal are known."""

    run: DryRun
    playbook: Playbook
    journal: Journal
    merge: TrialMerge
    bounds: RehearsalBounds
    shadow: ShadowSpec  # where the journal is replayed to judge the database
    environ: Mapping[str, str]  # the platforms' tokens
    on_retry: OnRetry | None = None  # hears each retry of the run lock's connection

    def on(self, url: str, *, real: bool, schema_only: bool = False) -> DryRun:
        """Walk the deploy's own declaration (machine.LIVE and TRANSITIONS) on ``url``.

        Each state's steps run in their rehearsal form (:data:`REHEARSALS`), then the same
        guards decide the route from the rehearsal's record and :class:`RehearsedWorld`; a
        dead end predicts the deploy's halt with the code the declaration gives it. All of
        it under the database's run lock, taken as a deploy takes it (retried: a Neon
        compute may be waking up). ``real``: ``url`` is a copy, migrated for real;
        ``schema_only``: that copy has production's schema but none of its rows.
        """
        run, playbook, merge = self.run, self.playbook, self.merge
        options = migrate_options(playbook)
        if not real:
            options = replace(  # every lock wait on production within the bound, reads too
                options,
                lock_timeout=self.bounds.lock_timeout,
                statement_timeout=self.bounds.statement_timeout,
                read_lock_timeout=self.bounds.lock_timeout,
            )
        record = RunRecord(run_id="rehearsal", playbook="", name=playbook.name)
        record.source_commit = merge.source_commit
        rehearsal = Rehearsal(
            run=run,
            playbook=playbook,
            url=url,
            journal=self.journal,
            merge=merge,
            real=real,
            schema_only=schema_only,
            record=record,
            options=options,
            shadow=self.shadow,
            environ=self.environ,
        )
        acting = ""  # the step whose rehearsal form runs: a refusal names it

        def rehearse_step(step: Step) -> None:
            nonlocal acting
            acting = step.name
            record.steps.record(step.name, REHEARSALS[step.name](rehearsal))

        # The machine runs each state's steps (here in their rehearsal form) and judges
        # its edges exactly as it does for a deploy (see machine.RunModel).
        model = RunModel(record, RehearsedWorld(rehearsal), run_step=rehearse_step)
        build_machine(model, "pending")
        with hold_database(playbook, url, None, "rehearsal", on_retry=self.on_retry):
            while model.state not in TERMINAL:
                state = model.state
                try:
                    moved = any(getattr(model, edge.trigger)() for edge in edges_from(state))
                except OrchestratorError as exc:
                    return run.halt(acting, exc.exit_code, str(exc), run.details_of(acting))
                if not moved:
                    code, reason = LIVE[state].dead_end(record)
                    last = LIVE[state].steps[-1].name if LIVE[state].steps else state
                    return run.halt(last, code, reason, run.details_of(last))
        return run
