"""The deploy engine: walk the state machine of :mod:`orchestrator.engine.machine` for one run.

Everything is recorded as it happens: the run record (``state.json``, written atomically after
every step and transition) and the audit trail (``audit.jsonl``). An interrupted run can be
resumed: steps whose postcondition already holds are not run again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.audit import ConsoleCallback
from orchestrator.db import runlock
from orchestrator.db.connect import check_ssl, check_url, refuse_pooler, with_application_name
from orchestrator.db.identity import identity_changes, read_identity
from orchestrator.db.migrator import MigrationFailed
from orchestrator.db.retry import OnRetry, call_with_retry
from orchestrator.engine.heartbeat import HEARTBEAT_S, Heartbeat
from orchestrator.engine.machine import (
    TERMINAL,
    RunModel,
    build_machine,
    edges_from,
    guard_error,
    halt_exit_code,
    halt_reason,
    reopen_trigger,
)
from orchestrator.engine.observations import LiveObservations
from orchestrator.engine.outcomes import HaltOutcome, Outcome, PreflightOutcome, RollbackOutcome
from orchestrator.engine.rollback import not_applied, release_gone, revert_code, rollback_plan
from orchestrator.engine.settings import (
    journal_at,
    migrations_path,
    retry_policy,
    shipped_hashes,
    with_retries,
)
from orchestrator.engine.steps.base import RunContext, Step
from orchestrator.engine.steps.merge import MergeStep
from orchestrator.engine.steps.migrate import MigrateStep
from orchestrator.engine.world import changes_since, observe
from orchestrator.errors import DatabaseError, ExitCode, GuardError, OrchestratorError, UsageError
from orchestrator.gitrepo import MissingBranch, open_repo, remote_tips
from orchestrator.platforms.http import check_tokens, playbook_tokens, read_secret
from orchestrator.playbook import (
    Playbook,
    load_playbook,
    parse_playbook,
    playbook_changes,
    read_playbook_text,
    text_sha256,
)
from orchestrator.redaction import Redactor, connection_passwords, secret_values
from orchestrator.runs import RunRecord, RunStore, Transition, new_run_id, utc_now_iso


@dataclass
class Interaction:
    """How the run talks to its operator (the CLI fills this in; tests answer directly)."""

    # Mutating steps ask first; without an answer the library's default is no (the CLI's
    # --yes answers yes). A caller who wants a run to act must say so.
    confirm: Callable[[str], bool] = lambda _question: False
    backup_confirmed: bool = False  # --backup-confirmed
    ask: Callable[[str], bool] | None = None  # a human at a terminal; None when there is none
    console: ConsoleCallback | None = None
    on_progress: Callable[[str], None] = lambda _line: None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    warn: Callable[[str], None] = lambda _message: None  # e.g. a remote host without TLS
    retries: int | None = None  # --retries: attempts instead of the playbook's retry.attempts
    # resume --new-run: when the playbook changed since the run started, start a new run with
    # the playbook as it is now and, once it exists, close that one (abandoned), not refuse.
    new_run: bool = False
    # Each retry of the first connections (a new run's come before its audit trail exists).
    on_retry: OnRetry | None = None
    # Without a terminal: hears a line at least every heartbeat_s while a step runs.
    heartbeat: Callable[[str], None] | None = None
    heartbeat_s: float = HEARTBEAT_S


def database_url(playbook: Playbook, environ: Mapping[str, str], *, writes: bool = True) -> str:
    """The connection string from the playbook's env var; UsageError if unset or malformed.

    ``writes``: a deploy or resume changes the database, so Neon's pooled endpoint is refused
    before any connection (exit 2, naming the direct host to use).
    """
    url = read_secret(environ, playbook.database.url_env, "production connection string")
    checked = check_url(url)
    if writes:
        refuse_pooler(checked)
    return checked


def check_before_run(
    playbook: Playbook, environ: Mapping[str, str], store: RunStore, attested: bool, *, create: bool
) -> tuple[str, str | None]:
    """The refusals (exit 2) a deploy makes before any run exists, which ``deploy --dry-run``
    (``create`` false: no state dir is made) predicts; the URL and its transport warning.

    ``attested``: a person vouches for a manual backup (at a terminal, or --backup-confirmed;
    ``--yes`` answers confirmations of our own actions, it cannot attest to a backup).
    """
    check_tokens(playbook, environ)
    url = database_url(playbook, environ)
    kind, path = playbook.backup.kind, playbook.backup.path
    if kind == "manual" and not attested:
        raise UsageError(
            "backup kind manual needs an operator to confirm the backup: run on a terminal "
            "or pass --backup-confirmed"
        )
    # A missing folder would get the dump as a file of its name; a suffix names the file.
    if kind == "pg_dump" and path is not None and not (path.exists() or path.suffix):
        raise UsageError(
            f"backup.path {path} does not exist: if it is a folder, create it; if it is "
            f"the dump file, give it a suffix such as {path.name}.dump"
        )
    store.check_writable(create=create)
    # A remote host without TLS is warned about; refused (UsageError) if the playbook says.
    return url, check_ssl(url, require_ssl=playbook.database.require_ssl, environ=environ)


@contextmanager
def open_run(
    playbook: Playbook, record: RunRecord, store: RunStore, url: str, interaction: Interaction
) -> Iterator[RunContext]:
    """Open the run's audit trail (secrets redacted) for the ``with`` block.

    The caller holds the run's lock (:meth:`RunStore.lock`).
    """
    # One redactor for the audit trail and state.json: both mask the same literal secrets.
    store.redactor = Redactor(
        [
            *connection_passwords(url),
            *secret_values(interaction.environ),
            *playbook_tokens(playbook, interaction.environ),
        ]
    )
    with store.audit_trail(record.run_id, interaction.console) as trail:
        on_progress = interaction.on_progress
        heartbeat = None
        if interaction.heartbeat is not None:
            heartbeat = Heartbeat(interaction.heartbeat, interaction.heartbeat_s)
            on_progress = _noting(heartbeat, interaction.on_progress)
        yield RunContext(
            playbook=playbook,
            record=record,
            store=store,
            log=trail.log,
            database_url=url,
            confirm=interaction.confirm,
            backup_confirmed=interaction.backup_confirmed,
            ask=interaction.ask,
            on_progress=on_progress,
            environ=interaction.environ,
            heartbeat=heartbeat,
        )


def _noting(heartbeat: Heartbeat, on_progress: Callable[[str], None]) -> Callable[[str], None]:
    def progress(line: str) -> None:
        heartbeat.note(line)
        on_progress(line)

    return progress


@contextmanager
def hold_database(
    playbook: Playbook,
    url: str,
    run_id: str | None,
    kind: str = "run",
    *,
    on_retry: OnRetry | None = None,
) -> Iterator[runlock.RunLock]:
    """One deploy at a time: hold the database's run lock for the ``with`` block.

    Refused at once (exit 2, naming the holder) if another run or migrate holds it; a
    transient connection failure is retried with the playbook's policy, each retry told to
    ``on_retry``. ``run_id`` and ``kind`` name the holder (a rehearsal has no run id).
    """
    spec = playbook.migrations
    lock = runlock.run_lock(url, spec.schema_, spec.table, kind, run_id)
    call_with_retry(lock.acquire, retry_policy(playbook), on_retry=on_retry)
    try:
        yield lock
    finally:
        lock.release()


def retries_reported(
    playbook: Playbook, record: RunRecord, store: RunStore, url: str, interaction: Interaction
) -> OnRetry:
    """An ``on_retry`` for a run that exists but is not walking yet (resume's first
    connections): each retry goes to the operator and into the run's audit trail."""

    def report(attempt: int, error: BaseException, wait: float) -> None:
        if interaction.on_retry is not None:
            interaction.on_retry(attempt, error, wait)
        quiet = replace(interaction, console=None)  # the operator has just been told
        with open_run(playbook, record, store, url, quiet) as ctx:
            ctx.on_retry(attempt, error, wait)

    return report


def check_release(playbook: Playbook) -> None:
    """Bad input found before a run exists: missing branches, unreadable migrations.

    Fetches the two branches and parses the migrations at the source branch's tip; a
    missing branch, a malformed journal or a migration of the release drizzle would run
    other than as written is a :class:`UsageError` (exit 2).
    """
    spec = playbook.git
    repo = open_repo(spec.repo)
    path = migrations_path(repo, playbook.migrations.dir)
    try:
        tips = remote_tips(repo, spec.remote, [spec.source, spec.target])
    except MissingBranch as exc:
        raise UsageError(str(exc)) from None
    journal = journal_at(repo, tips[spec.source], playbook.migrations.dir, spec.source)
    journal.refuse_unrunnable(journal.untracked(shipped_hashes(repo, tips[spec.target], path)))


def start(
    path: Path, store: RunStore, interaction: Interaction, replaces: tuple[str, str] | None = None
) -> RunRecord:
    """Check every input, take the database, then create a run and drive it to its end.

    Bad input, or another deploy holding the database, raises :class:`UsageError` before the
    run record exists: nothing is changed.
    """
    text = read_playbook_text(path)
    playbook = with_retries(parse_playbook(text, path), interaction.retries)
    check_release(playbook)
    attested = interaction.backup_confirmed or interaction.ask is not None
    # Last: it makes the state dir, and a refusal changes nothing.
    url, warning = check_before_run(playbook, interaction.environ, store, attested, create=True)
    if warning:
        interaction.warn(warning)
    run_id = new_run_id()
    url = with_application_name(url, runlock.application_name(run_id))
    # The run's first connection; no run exists yet, so its retries go to the operator only.
    with hold_database(playbook, url, run_id, on_retry=interaction.on_retry) as lock:
        database = call_with_retry(
            lambda: read_identity(url), retry_policy(playbook), on_retry=interaction.on_retry
        )
        record = RunRecord(
            run_id=run_id,
            playbook=str(playbook.path),
            name=playbook.name,
            playbook_text=text,
            playbook_sha256=text_sha256(text),
            database=database,
        )
        store.create(record)
        if replaces is not None:  # the run this one replaces (its id, why): closed only now,
            store.abandon(*replaces)  # so a new run refused before this leaves it resumable
        with store.lock(run_id):
            return drive(playbook, record, store, url, interaction, resumed=False, lock=lock)


def resume(run_id: str | None, store: RunStore, interaction: Interaction) -> RunRecord:
    """Continue an interrupted (or halted) run: the newest unfinished one by default.

    Re-reads the world first and refuses (exit 2, nothing changed) if it moved under the run:
    new commits on the source branch, someone else's push to the target, or migrations in
    the database that the run did not plan. Steps whose postcondition holds are not re-run.
    """
    record = store.load(run_id) if run_id else store.newest_unfinished()
    if record.state == "succeeded":
        raise UsageError(f"run {record.run_id} already succeeded: there is nothing to resume")
    if record.steps.rollback is not None:
        raise UsageError(f"run {record.run_id} was rolled back: start a new deploy instead")
    if store.abandoned(record.run_id) is not None:
        raise UsageError(f"run {record.run_id} was abandoned: start a new deploy instead")
    # The changed values are shown: masked like the audit trail (a URL may carry a token).
    masking = Redactor(secret_values(interaction.environ))
    changes = [masking.text(line) for line in playbook_changed(record)]
    if changes and interaction.new_run:
        why = "the playbook changed: " + "; ".join(changes)
        return start(Path(record.playbook), store, interaction, (record.run_id, why))
    if changes:
        raise UsageError(
            f"run {record.run_id} started with another playbook: {record.playbook} changed "
            f"({'; '.join(changes)}); a run goes on only with the playbook it started with: "
            "put the file back as it was, or pass --new-run to close this run and start a "
            "new one with the file as it is"
        )
    playbook = with_retries(pinned_playbook(record), interaction.retries)
    check_tokens(playbook, interaction.environ)
    name = runlock.application_name(record.run_id)
    plain_url = database_url(playbook, interaction.environ)
    require_ssl = playbook.database.require_ssl
    if warning := check_ssl(plain_url, require_ssl=require_ssl, environ=interaction.environ):
        interaction.warn(warning)
    url = with_application_name(plain_url, name)
    with store.lock(record.run_id):
        # We hold the run's file lock, so no live process drives it: a session still named
        # after the run belongs to a killed process and only holds locks we need.
        # The first connection of a resume: a Neon compute may be waking up.
        reported = retries_reported(playbook, record, store, url, interaction)
        orphans = call_with_retry(
            lambda: runlock.end_orphan_sessions(url, name),
            retry_policy(playbook),
            on_retry=reported,
        )
        with hold_database(playbook, url, record.run_id, on_retry=reported) as lock:
            reasons = another_database(playbook, record, url, reported)
            if not reasons:
                now = observe(playbook, record, url, interaction.environ)
                reasons = changes_since(record, now) if now is not None else []
            if reasons:
                with open_run(playbook, record, store, url, interaction) as ctx:
                    ctx.log.error("resume_refused", reasons=reasons, state=record.state)
                raise UsageError(
                    f"run {record.run_id} cannot resume, the world moved: " + "; ".join(reasons)
                )
            return drive(
                playbook, record, store, url, interaction, resumed=True, orphans=orphans, lock=lock
            )


def another_database(
    playbook: Playbook, record: RunRecord, url: str, on_retry: OnRetry | None = None
) -> list[str]:
    """Why ``url`` is not the database the run started on (the identity it pinned then):
    empty when it is, or for a record from before runs pinned it (no connection then)."""
    if not record.database:
        return []
    now = call_with_retry(lambda: read_identity(url), retry_policy(playbook), on_retry=on_retry)
    moved = identity_changes(record.database, now)
    where = f"${playbook.database.url_env} reaches another database than the one"
    return [f"{where} the run started on ({'; '.join(moved)})"] if moved else []


def pinned_playbook(record: RunRecord) -> Playbook:
    """The playbook the run started with (pinned in its record); the file for a record made
    before runs pinned it."""
    path = Path(record.playbook)
    if record.playbook_text is None:
        return load_playbook(path)
    if text_sha256(record.playbook_text) == record.playbook_sha256:
        return parse_playbook(record.playbook_text, path)
    # The record masks the secrets the playbook held (a token in a check's URL), so its text
    # no longer has the recorded digest; the file still has it when it is the pinned one.
    try:
        text = read_playbook_text(path)
    except UsageError:
        text = ""
    if text_sha256(text) != record.playbook_sha256:
        raise UsageError(
            f"run {record.run_id}: its pinned playbook held secrets (masked in the record) and "
            f"{path} is no longer that playbook: put it back as it was, or start a new deploy"
        )
    return parse_playbook(text, path)


def playbook_changed(record: RunRecord) -> list[str]:
    """How the playbook file differs from the one the run pinned, key by key (empty: the
    same, or a record from before runs pinned it)."""
    if record.playbook_text is None:
        return []
    try:
        now = read_playbook_text(Path(record.playbook))
    except UsageError as exc:
        return [str(exc)]
    if text_sha256(now) == record.playbook_sha256:
        return []
    # Comments and layout only: the pinned playbook says the same, the run may go on.
    return playbook_changes(record.playbook_text, now)


def drive(
    playbook: Playbook,
    record: RunRecord,
    store: RunStore,
    url: str,
    interaction: Interaction,
    *,
    resumed: bool,
    orphans: list[int] | None = None,
    lock: runlock.RunLock | None = None,
) -> RunRecord:
    """Walk the machine from the record's state until it succeeds, halts or fails.

    The caller holds the run's lock and the database's run lock.
    """
    with open_run(playbook, record, store, url, interaction) as ctx:
        ctx.database_lock = lock
        log = ctx.log
        if resumed and record.state not in TERMINAL:
            record.halt_reason, record.exit_code, record.rollback_plan = None, None, []
            # The record says the run was live, yet nobody held its lock: its process died
            # (killed, crashed, power lost) without a word. Say so before going on.
            log.warning(
                "interruption_detected",
                state=record.state,
                last_saved=record.updated_at,
                orphan_sessions_ended=orphans or [],
            )
        model = RunModel(
            record,
            LiveObservations(ctx),
            lambda trigger, guard, ok: log.info("guard", trigger=trigger, guard=guard, ok=ok),
            run_step=lambda step: _run_step(ctx, step),
            on_transition=lambda move: _record_transition(ctx, move),
        )
        build_machine(model, record.state)
        if resumed and record.state in ("halted", "failed"):
            _reopen(ctx, model)
        log.info(
            "run_resumed" if resumed else "run_started",
            playbook=record.playbook,
            name=record.name,
            state=record.state,
            database_env=playbook.database.url_env,
        )
        try:
            while model.state not in TERMINAL:
                _walk_state(ctx, model)
        except OrchestratorError as exc:
            _stop(ctx, model, exc)
        except KeyboardInterrupt as exc:
            stopped_by, hint = str(exc) or "SIGINT", f"orchestrator resume {record.run_id}"
            log.warning("interrupted", state=record.state, signal=stopped_by, hint=hint)
            store.save(record)
            looked = _adopt_landed(ctx)
            partial = record.state not in TERMINAL and _changed_production(record)
            if partial:  # reported as a halt is (exit 20, why, the plan), left to resume
                record.exit_code = int(ExitCode.PARTIAL)
                record.halt_reason = (
                    f"interrupted by {stopped_by} halfway through the release (state "
                    f"{record.state}): resume with `{hint}`"
                )
                record.rollback_plan = rollback_plan(record, looked=looked)
            store.save(record)
            if not partial:  # nothing changed yet (exit 2), or the run had ended: it stands
                raise
            return record
        except Exception as exc:  # a bug or an unforeseen failure: stop safely, say where
            log.exception("unexpected_error", state=record.state)
            _stop(ctx, model, OrchestratorError(f"unexpected {type(exc).__name__}: {exc}"))
        if record.state == "succeeded":
            record.exit_code = int(ExitCode.OK)
            store.save(record)
            log.info("run_succeeded", exit_code=0)
        return record


def _walk_state(ctx: RunContext, model: RunModel) -> None:
    """Fire the current state's triggers in the declaration's order until one moves the run
    (:class:`RunModel` runs the steps and records the move); if none does, halt at the
    state's dead end."""
    state = model.state
    for edge in edges_from(state):
        if getattr(model, edge.trigger)():
            return
    record = ctx.record
    _stop(ctx, model, guard_error(halt_exit_code(state, record), halt_reason(state, record)))


def _run_step(ctx: RunContext, step: Step) -> None:
    ctx.log.info("step_start", step=step.name, state=ctx.record.state)
    beating = ctx.heartbeat.during(step.name) if ctx.heartbeat is not None else nullcontext()
    with beating:
        outcome = step.done(ctx)
        if outcome is not None:
            ctx.log.info("step_already_done", step=step.name, outcome=_logged(outcome))
        else:
            _ensure_database_lock(ctx)
            outcome = step.run(ctx)
    ctx.record.steps.record(step.name, outcome)
    ctx.store.save(ctx.record)
    ctx.log.info("step_end", step=step.name, outcome=_logged(outcome))


def _logged(outcome: Outcome) -> dict[str, Any]:
    """An outcome as the audit trail holds it: as ``state.json`` does."""
    return outcome.model_dump(mode="json", by_alias=True, exclude_none=True)


def _ensure_database_lock(ctx: RunContext) -> None:
    """Before a step acts: the run still holds the database (a restart drops the lock)."""
    if (lock := ctx.database_lock) is None:
        return
    try:
        if call_with_retry(lock.ensure, ctx.retry, on_retry=ctx.on_retry):
            ctx.log.warning("run_lock_reacquired", reason="its session had ended")
    except runlock.DatabaseBusy as exc:
        raise GuardError(f"the run lost its database lock and cannot take it back: {exc}") from None


def _record_transition(ctx: RunContext, move: Transition) -> None:
    """What the machine moved (``record.state`` already set by it): saved, then logged."""
    ctx.store.save(ctx.record)
    ctx.log.info(
        "transition", trigger=move.trigger, source=move.source, dest=move.dest, detail=move.detail
    )


def _stop(ctx: RunContext, model: RunModel, exc: OrchestratorError) -> None:
    """Halt (a guard refused) or fail (something broke); record and print the rollback plan."""
    record = ctx.record
    # Planned in the state it stopped in, once what landed there was looked for.
    looked = _adopt_landed(ctx)
    gone = release_gone(ctx)  # then the plan reverts no code
    record.steps.halt = HaltOutcome(
        stopped_in=model.state, reason=str(exc), at=utc_now_iso(), release_gone=gone
    )
    record.rollback_plan = rollback_plan(record, looked=looked)
    # Some of its migrations committed, not all (a concurrent release): a partial state.
    partial = looked and bool(not_applied(record))
    # "failed": something broke (unreachable database, failing SQL, a bug);
    # "halted": a guard or the operator stopped a run whose state is understood.
    failed = isinstance(exc, DatabaseError | MigrationFailed) or type(exc) is OrchestratorError
    trigger = "fail" if failed and not partial else "halt"
    record.halt_reason = str(exc)
    record.exit_code = int(ExitCode.PARTIAL if partial else exc.exit_code)
    getattr(model, trigger)(detail=str(exc))  # recorded and saved by the machine
    ctx.log.error(
        "halted" if trigger == "halt" else "failed",
        reason=str(exc),
        exit_code=record.exit_code,
        rollback_plan=record.rollback_plan,
    )


def _adopt_landed(ctx: RunContext) -> bool:
    """The migration or the push an interrupt or a failure stopped before its outcome was
    recorded: record what the world shows it did (the migrations tracked, the push's
    postcondition, read now), so the exit code and the plan say it. False if it could not look."""
    if (step := _unrecorded(ctx.record)) is None:
        return True
    try:
        outcome = step.committed(ctx) if isinstance(step, MigrateStep) else step.done(ctx)
    except Exception as exc:  # cannot look: the stop stands, the trail says so
        ctx.log.warning("landed_unknown", step=step.name, error=str(exc))
        return False
    if outcome is not None:
        ctx.record.steps.record(step.name, outcome)
    return True


def _unrecorded(record: RunRecord) -> Step | None:
    """The step that may have landed before its outcome was recorded (killed right after),
    or a migrate recorded in part (a later attempt may have committed more)."""
    steps: dict[str, Step] = {"validated": MigrateStep(), "revalidated": MergeStep()}
    step = steps.get(record.state)
    unknown = step is not None and (getattr(record.steps, step.name) is None or not_applied(record))
    return step if unknown else None


def _changed_production(record: RunRecord) -> bool:
    """Whether the run applied a migration or pushed the release."""
    migrate, merge = record.steps.migrate, record.steps.merge
    pushed = merge is not None and merge.pushed_commit not in (None, merge.previous_target_commit)
    return bool(migrate is not None and migrate.applied) or pushed


def _reopen(ctx: RunContext, model: RunModel) -> None:
    """Resume a halted or failed run from the state it stopped in (through the machine)."""
    record, halt = ctx.record, ctx.record.steps.halt or HaltOutcome()
    previous = halt.stopped_in
    if not previous or previous in TERMINAL:
        raise UsageError(f"run {record.run_id} cannot be resumed: unknown stopping point")
    record.halt_reason, record.exit_code, record.rollback_plan = None, None, []
    # What the halt saw of the target is not the plan's any more once the run goes on.
    record.steps.halt = halt.model_copy(update={"release_gone": False})
    getattr(model, reopen_trigger(previous))(recorded_as="resume", detail="resumed by the operator")


@dataclass(frozen=True)
class RollbackResult:
    """What ``rollback`` did and what is left for the operator."""

    reverted_commit: str | None
    plan: list[str]
    pull_request_url: str | None = None  # the revert pull request (git.via: github_pr)


def rollback(run_id: str, store: RunStore, interaction: Interaction) -> RollbackResult:
    """Revert the run's pushed merge (after confirmation) and return the database steps. Under
    the run's lock: a push its record lacks (killed right after it) is looked for on the
    remote first, and recorded; a recorded rollback is not done again."""
    playbook = pinned_playbook(store.load(run_id))
    url = interaction.environ.get(playbook.database.url_env, "")
    with store.lock(run_id), open_run(playbook, store.load(run_id), store, url, interaction) as ctx:
        record, log = ctx.record, ctx.log
        # Killed right after a migration committed or a push: the record may lack it.
        if (step := _unrecorded(record)) is not None:
            if not _adopt_landed(ctx):
                raise GuardError(f"cannot tell what the run's {step.name} did: nothing was changed")
            log.info("rollback_looked", found=getattr(record.steps, step.name) is not None)
            store.save(record)
        gone = False
        if (halt := record.steps.halt) is not None:  # the target may have changed since it looked
            gone = release_gone(ctx)
            record.steps.halt = halt.model_copy(update={"release_gone": gone})
        plan = rollback_plan(record, looked=step is not None)
        merge = record.steps.merge
        if not (merge and merge.pushed_commit) or record.steps.rollback or gone:
            return RollbackResult(None, plan)  # nothing of it on the target to revert
        log.info("rollback_plan", plan=plan)
        preflight = record.steps.preflight or PreflightOutcome()
        question = f"Revert the release on {preflight.remote}/{preflight.target}"
        if not interaction.confirm(question):
            raise GuardError("rollback not confirmed: nothing was changed")
        try:
            commit, pull_request = revert_code(ctx)
        except OrchestratorError as exc:
            log.error("rollback_failed", reason=str(exc))
            raise
        record.steps.rollback = RollbackOutcome(
            reverted_commit=commit, pull_request_url=pull_request, at=utc_now_iso()
        )
        store.save(record)
        log.info("rollback_pushed", reverted_commit=commit, pull_request_url=pull_request)
        return RollbackResult(commit, plan, pull_request)
