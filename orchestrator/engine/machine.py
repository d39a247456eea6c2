"""The Strategy A state machine, declared once: states, transitions, guards, steps.

Read it top to bottom as the runbook's Strategy A (migrations first):

    pending --check_backup--> backup_checked --validate--> validated
    validated --migrate--> migrated --revalidate--> revalidated      (NEEDS_MIGRATION)
    validated --skip_migrate--> revalidated                          (already SAFE)
    revalidated --merge--> merged --go_live--> live --monitor--> monitored
    monitored --finish--> succeeded

Everything is declared here: ``LIVE`` gives each live state its steps and its dead end (the
exit code and reason of a halt there), ``TRANSITIONS`` the edges and their guards. In each
state its steps run; then ``transitions`` fires the first edge whose guards all hold. When
none holds the run halts at the state's dead end: a partial state, a failed check or a git
conflict never lets it go on, and nothing guesses. Resume re-enters through the machine too
(``reopen_<state>``), without firing the edge into that state again: so a step that must not
act unless something still holds is a :class:`GuardedStep` (the migrate step: the way back is
read again right before the database changes). Guards are pure functions
of the run record and of the world's facts they need (:mod:`orchestrator.engine.observations`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transitions import EventData, Machine

from orchestrator.engine.observations import LiveObservations, Observations
from orchestrator.engine.outcomes import (
    MergeOutcome,
    MonitorOutcome,
    Outcome,
    PreflightOutcome,
    ReleaseOutcome,
    ValidationOutcome,
)
from orchestrator.engine.steps.backup import BackupStep
from orchestrator.engine.steps.base import RunContext, Step
from orchestrator.engine.steps.merge import MergeStep
from orchestrator.engine.steps.migrate import MigrateStep, RevalidateStep, ValidateStep
from orchestrator.engine.steps.monitor import MonitorStep
from orchestrator.engine.steps.preflight import PreflightStep
from orchestrator.engine.steps.release import ReleaseStep
from orchestrator.errors import ExitCode, GuardError
from orchestrator.runs import RunRecord, Transition, utc_now_iso

STATES = (
    "pending",
    "backup_checked",
    "validated",
    "migrated",
    "revalidated",
    "merged",
    "live",  # the release gate saw the pushed commit live; the monitor watches it
    "monitored",
    "succeeded",
    "halted",  # a guard stopped the run: the state is understood, a rollback plan is printed
    "failed",  # a step failed unexpectedly (database unreachable, migration SQL error)
)
TERMINAL = frozenset({"succeeded", "halted", "failed"})


# ---------------------------------------------------------------- guards
#
# A guard that lets the run move on past something it did checks that thing in the world
# (:class:`Observations`): the dump on disk, the tracking rows, the commit on the remote.


def _verdict(record: RunRecord, step: str) -> ValidationOutcome:
    """The verdict ``step`` (validate or revalidate) recorded (empty if it has not run)."""
    steps = record.steps
    return (steps.validation if step == "validate" else steps.revalidate) or ValidationOutcome()


def _merge(record: RunRecord) -> MergeOutcome:
    return record.steps.merge or MergeOutcome()


def _release(record: RunRecord) -> ReleaseOutcome:
    return record.steps.release or ReleaseOutcome()


def _preflight(record: RunRecord) -> PreflightOutcome:
    return record.steps.preflight or PreflightOutcome()


def preflight_passed(record: RunRecord, seen: Observations) -> bool:
    """Pre-flight found branches, a clean tree and a clean trial merge, and the source
    commit it pinned is in the clone."""
    commit = record.source_commit
    preflight = _preflight(record)
    if not preflight.ok or commit is None or preflight.source_commit != commit:
        return False
    return seen.commit_exists(commit)


def backup_recorded(record: RunRecord, seen: Observations) -> bool:
    """A way back exists: a dump intact on disk, a restore point with its WAL position, or
    a backup the operator vouched for."""
    if (backup := record.steps.backup) is None:
        return False
    if backup.kind == "pg_dump":
        return seen.dump_intact(backup)
    if backup.kind == "restore_point":
        return bool(backup.wal_lsn) and bool(backup.taken_at)
    if backup.kind == "manual":
        return bool(backup.confirmed_at)
    if backup.kind == "neon_branch":
        return bool(backup.lsn) and seen.backup_branch_exists(backup)
    return False


def backup_before_migrating(record: RunRecord, seen: Observations) -> bool:
    """Right before the migrate step changes the database, :func:`backup_recorded` still holds,
    read now (the dump may have been deleted or changed while the run was down); a run that
    validate found SAFE changes nothing and needs none."""
    return already_safe(record, seen) or backup_recorded(record, seen)


def verdict_deployable(record: RunRecord, seen: Observations) -> bool:
    """SAFE or NEEDS_MIGRATION; PARTIAL_MIGRATION and ERROR halt the run."""
    return _verdict(record, "validate").deployable


def already_safe(record: RunRecord, seen: Observations) -> bool:
    """validate said SAFE: every migration is applied, nothing to migrate."""
    return _verdict(record, "validate").status == "SAFE"


def needs_migration(record: RunRecord, seen: Observations) -> bool:
    """validate said NEEDS_MIGRATION: a clean prefix applied, the rest pending."""
    return _verdict(record, "validate").status == "NEEDS_MIGRATION"


def migration_recorded(record: RunRecord, seen: Observations) -> bool:
    """The migrate step ended, and the database tracks every migration the run planned."""
    if record.steps.migrate is None:
        return False
    return seen.untracked().isdisjoint(p.tag for p in record.planned)


def revalidated_safe(record: RunRecord, seen: Observations) -> bool:
    """After migrating, every migration is applied."""
    return _verdict(record, "revalidate").status == "SAFE"


def merge_pushed(record: RunRecord, seen: Observations) -> bool:
    """The merge step ended, and the remote target branch contains the commit the merge
    pushed or GitHub's merge made (a squash or rebase commit does not contain the source
    commit, so that is not what is looked for) and still ships the release's migrations (a
    revert contains it too); merged through a pull request, GitHub says it is merged."""
    commit = record.source_commit
    merge = _merge(record)
    if not merge.pushed_commit or commit is None:
        return False
    if merge.pull_request is not None and not seen.pull_request_merged(merge.pull_request):
        return False
    return seen.remote_ships(merge.pushed_commit)


def release_live(record: RunRecord, seen: Observations) -> bool:
    """The release gate saw the pushed commit live (or a newer one containing it), and it
    is live now: the gate's sighting fresh from this process, else a look (or no gate)."""
    release = _release(record)
    pushed = _merge(record).pushed_commit
    if not release.live or not pushed or release.commit != pushed:
        return False
    return seen.release_live(pushed)


def production_holds_release(record: RunRecord, seen: Observations) -> bool:
    """Before an irreversible step (merge, the release gate, the monitor): production holds
    exactly the release's migrations, read now with validate's comparison (SAFE). Someone
    undoing a migration while the run was down, or a connection string now reaching another
    database, stops the run before the code goes out."""
    return seen.release_verdict() == "SAFE"


def monitor_healthy(record: RunRecord, seen: Observations) -> bool:
    """The monitor window saw no more failures than allowed."""
    return (record.steps.monitor or MonitorOutcome()).healthy


Guard = Callable[[RunRecord, Observations], bool]


@dataclass(frozen=True)
class Edge:
    """One transition of the table."""

    trigger: str
    source: str
    dest: str
    guards: tuple[Guard, ...]


# ---------------------------------------------------------------- the table

TRANSITIONS: tuple[Edge, ...] = (
    Edge("check_backup", "pending", "backup_checked", (preflight_passed, backup_recorded)),
    Edge("validate", "backup_checked", "validated", (verdict_deployable,)),
    Edge("skip_migrate", "validated", "revalidated", (already_safe,)),
    Edge("migrate", "validated", "migrated", (needs_migration, migration_recorded)),
    # The rows the run applied are still tracked (read now), and the database is SAFE.
    Edge("revalidate", "migrated", "revalidated", (migration_recorded, revalidated_safe)),
    Edge("merge", "revalidated", "merged", (merge_pushed,)),
    # The release gate: the monitor watches the new release, not the previous deployment;
    # a release reset off the remote meanwhile halts here, before a whole monitor window.
    Edge("go_live", "merged", "live", (merge_pushed, release_live)),
    Edge("monitor", "live", "monitored", (monitor_healthy,)),
    # Succeeded means live: the release must still be on the remote (a kill after the merge,
    # then someone resetting the branch, must not end "succeeded" on resume), still served
    # (a deployment rolled back during the monitor window is looked at again, not read back)
    # and its migrations still in production.
    Edge(
        "finish", "monitored", "succeeded", (merge_pushed, release_live, production_holds_release)
    ),
)

# ---------------------------------------------------------------- dead ends
#
# When no transition out of a state can fire, the run halts there. Each live state declares
# how: the exit code and the one-line reason, both read from the record (pure).


def _verdict_halt(step: str) -> Callable[[RunRecord], tuple[ExitCode, str]]:
    def halt(record: RunRecord) -> tuple[ExitCode, str]:
        outcome = _verdict(record, step)
        code = {"ERROR": ExitCode.ERROR, "PARTIAL_MIGRATION": ExitCode.PARTIAL}.get(
            str(outcome.status), ExitCode.GUARD_FAILED
        )
        return code, f"{step} verdict {outcome.status}: {outcome.recommendation}"

    return halt


def _no_backup(record: RunRecord) -> tuple[ExitCode, str]:
    missing = "no way back is on record: the backup is missing, changed or unreadable"
    return ExitCode.GUARD_FAILED, missing if _preflight(record).ok else "pre-flight did not pass"


def _migration_not_tracked(record: RunRecord) -> tuple[ExitCode, str]:
    if not _verdict(record, "validate").deployable:
        return _verdict_halt("validate")(record)
    return (
        ExitCode.PARTIAL,
        "the database does not track every migration the run applied: someone changed it",
    )


def _not_revalidated(record: RunRecord) -> tuple[ExitCode, str]:
    if _verdict(record, "revalidate").status == "SAFE":  # then migration_recorded said no
        return (
            ExitCode.PARTIAL,
            "the database no longer tracks every migration the run applied: someone changed it",
        )
    return _verdict_halt("revalidate")(record)


def _not_pushed(record: RunRecord) -> tuple[ExitCode, str]:
    return (
        ExitCode.GUARD_FAILED,
        "the merge is not on the remote target branch, or the branch ships other migrations "
        "than the release: the push did not land, or someone changed the branch",
    )


def _unhealthy(record: RunRecord) -> tuple[ExitCode, str]:
    monitor = record.steps.monitor or MonitorOutcome()
    first = monitor.failed_checks[0] if monitor.failed_checks else None
    return ExitCode.MONITOR_UNHEALTHY, (
        f"monitor unhealthy: {monitor.failures} failed check(s) "
        f"(allowed {monitor.failures_allowed}); "
        f"first: {first.check if first else None}: {first.detail if first else None}"
    )


def _not_live(record: RunRecord) -> tuple[ExitCode, str]:
    release = _release(record)
    commit = str(release.commit or _merge(record).pushed_commit)[:12]
    if release.ending == "failed":
        why = f"the deployment failed: {release.detail}"
    elif release.ending == "timeout":
        why = f"not live after the release timeout; last seen: {release.detail}"
    else:
        why = release.detail or "the release gate did not see it"
    return ExitCode.MONITOR_UNHEALTHY, f"release {commit} is not live: {why}"


def _not_live_or_gone(record: RunRecord) -> tuple[ExitCode, str]:
    release = _release(record)
    if release.live and release.commit == _merge(record).pushed_commit:
        # The gate saw it live: merge_pushed (or the fresh look of release_live) said no.
        return _release_gone(record)
    return _not_live(record)


def _release_gone(record: RunRecord) -> tuple[ExitCode, str]:
    preflight = _preflight(record)
    where = f"{preflight.remote}/{preflight.target or 'the target'}"
    served = "" if _release(record).gate == "none" else ", or production no longer serves it"
    return ExitCode.GUARD_FAILED, (
        f"the release commit {str(_merge(record).pushed_commit)[:12]} is no longer "
        f"on {where}, or {where} ships other migrations than it or undid its changes{served}: "
        "someone moved or reverted the branch, or rolled the deployment back, after the "
        "merge (the guard events say which); release it again or deploy anew"
    )


def _not_finished(record: RunRecord) -> tuple[ExitCode, str]:
    code, gone = _release_gone(record)
    return code, f"{gone}; or production no longer holds its migrations (production_checked)"


def guard_error(code: ExitCode, message: str) -> GuardError:
    """A :class:`GuardError` (a halt) with the exit code ``code``."""
    error = GuardError(message)
    error.exit_code = code
    return error


@dataclass(frozen=True)
class GuardedStep:
    """A step that may act only while its guards hold, read from the world right before it
    acts: on resume a state's steps run without its incoming edge firing again, so a fact
    the step relies on (the way back, before migrating) is checked here. Its verdicts go to
    the audit trail as ``guard`` events (with ``step``); a guard saying no halts the run
    (exit 21, with the rollback plan) before the step changes anything."""

    step: Step
    guards: tuple[Guard, ...]
    refusal: str  # the halt reason when a guard says no
    code: ExitCode = ExitCode.GUARD_FAILED  # the halt's exit code

    @property
    def name(self) -> str:
        return self.step.name

    def done(self, ctx: RunContext) -> Outcome | None:
        """The wrapped step's postcondition: an effect already in place needs no guard."""
        return self.step.done(ctx)

    def run(self, ctx: RunContext) -> Outcome:
        """Check every guard against the world, then let the wrapped step act."""
        seen = LiveObservations(ctx)
        for guard in self.guards:
            ok = guard(ctx.record, seen)
            ctx.log.info("guard", step=self.name, guard=guard.__name__, ok=ok)
            if not ok:
                raise guard_error(self.code, self.refusal)
        return self.step.run(ctx)


NO_WAY_BACK = (
    "the way back is gone: the recorded backup is missing, changed or unreadable, so nothing "
    "was migrated; start a new deploy (a new backup), or put a dump back (same sha256) and resume"
)


NOT_THE_RELEASE = (
    "production no longer holds exactly the release's migrations (validate does not say "
    "SAFE now; the production_checked event says what it found): someone changed the "
    "database, or the connection string reaches another one; the code was not released "
    "further. Validate it, put the migrations back (or roll back), then resume"
)


def _holding_release(step: Step) -> GuardedStep:
    """``step``, allowed to act only while production holds the release's migrations."""
    return GuardedStep(step, (production_holds_release,), NOT_THE_RELEASE, ExitCode.PARTIAL)


@dataclass(frozen=True)
class StateSpec:
    """A live state: the steps it runs, then how it halts when no transition can fire."""

    steps: tuple[Step, ...]
    dead_end: Callable[[RunRecord], tuple[ExitCode, str]]


LIVE: Mapping[str, StateSpec] = {
    "pending": StateSpec((PreflightStep(), BackupStep()), _no_backup),
    "backup_checked": StateSpec((ValidateStep(),), _verdict_halt("validate")),
    "validated": StateSpec(
        (GuardedStep(MigrateStep(), (backup_before_migrating,), NO_WAY_BACK),),
        _migration_not_tracked,
    ),
    "migrated": StateSpec((RevalidateStep(),), _not_revalidated),
    "revalidated": StateSpec((_holding_release(MergeStep()),), _not_pushed),
    "merged": StateSpec((_holding_release(ReleaseStep()),), _not_live_or_gone),
    "live": StateSpec((_holding_release(MonitorStep()),), _unhealthy),
    "monitored": StateSpec((), _not_finished),
}


def edges_from(state: str) -> tuple[Edge, ...]:
    """Transitions leaving ``state``, in the order they are tried."""
    return tuple(edge for edge in TRANSITIONS if edge.source == state)


def halt_exit_code(state: str, record: RunRecord) -> ExitCode:
    """Why no transition out of ``state`` could fire, as an exit code (pure)."""
    return LIVE[state].dead_end(record)[0]


def halt_reason(state: str, record: RunRecord) -> str:
    """Why no transition out of ``state`` could fire, in one line (pure)."""
    return LIVE[state].dead_end(record)[1]


class RunModel:
    """The object ``transitions`` drives: the record, the world the guards read, and what the
    machine's callbacks do with them.

    The machine executes the declaration: on the first trigger of a state visit its
    ``prepare_event`` callback runs the state's steps (:data:`LIVE`) through ``run_step``;
    the edge's guards are its conditions (each verdict heard by ``on_guard``, the audit
    trail); its ``after_state_change`` callback sets ``record.state`` and appends the
    transition to the record, then hands it to ``on_transition`` (the engine saves the record
    and logs it). A trigger may carry ``detail`` (why: a halt's reason) and ``recorded_as``
    (the name the record gives it: ``resume`` for the ``reopen_<state>`` triggers).

    ``run_step`` is the deploy's (the step acts, or its postcondition shows it done) or the
    rehearsal's (the step's rehearsal form); it defaults to nothing for callers that only
    judge edges (the guard tests).
    """

    state: str

    def __init__(
        self,
        record: RunRecord,
        seen: Observations,
        on_guard: Callable[[str, str, bool], None] = lambda _trigger, _guard, _ok: None,
        *,
        run_step: Callable[[Step], None] = lambda _step: None,
        on_transition: Callable[[Transition], None] = lambda _transition: None,
    ) -> None:
        self.record = record
        self.seen = seen
        self.on_guard = on_guard
        self.run_step = run_step
        self.on_transition = on_transition
        self._stepped: str | None = None  # the state whose steps ran in this visit

    def run_state_steps(self, event: EventData) -> None:
        """``prepare_event``: a state's walk (one of its edges' triggers) runs its steps,
        once per visit; a halt, a failure or a reopen runs none."""
        state = self.state
        if event.event.name not in _WALK_TRIGGERS or self._stepped == state:
            return
        for step in LIVE[state].steps:
            self.run_step(step)
        self._stepped = state

    def record_transition(self, event: EventData) -> None:
        """``after_state_change``: the record's state is the machine's, the move is on record."""
        transition = event.transition
        assert transition is not None and transition.dest is not None
        self._stepped = None
        self.record.state = self.state
        move = Transition(
            at=utc_now_iso(),
            trigger=str(event.kwargs.get("recorded_as") or event.event.name),
            source=transition.source,
            dest=transition.dest,
            detail=str(event.kwargs.get("detail") or ""),
        )
        self.record.transitions.append(move)
        self.on_transition(move)


# The triggers that walk the declaration (a state's edges); halt, fail and reopen do not.
_WALK_TRIGGERS = frozenset(edge.trigger for edge in TRANSITIONS)


def build_machine(model: RunModel, initial: str) -> Machine:
    """A ``transitions`` machine over :data:`TRANSITIONS`, starting at ``initial``, whose
    callbacks run each state's steps and record each transition (see :class:`RunModel`)."""
    machine = Machine(
        model=model,
        states=list(STATES),
        initial=initial,
        auto_transitions=False,
        ignore_invalid_triggers=False,
        send_event=True,
        prepare_event="run_state_steps",
        after_state_change="record_transition",
    )
    for edge in TRANSITIONS:
        machine.add_transition(
            edge.trigger,
            edge.source,
            edge.dest,
            conditions=[_bind(edge.trigger, guard, model) for guard in edge.guards],
        )
    # Any live state may stop: halted by a guard, or failed by an error.
    live: list[Any] = [s for s in STATES if s not in TERMINAL]
    machine.add_transition("halt", live, "halted")
    machine.add_transition("fail", live, "failed")
    # resume: a stopped run goes back to the state it stopped in (reopen_<state>).
    for state in live:
        machine.add_transition(reopen_trigger(state), ["halted", "failed"], state)
    return machine


def reopen_trigger(state: str) -> str:
    """The trigger that takes a halted or failed run back to ``state``."""
    return f"reopen_{state}"


def _bind(trigger: str, guard: Guard, model: RunModel) -> Callable[[EventData], bool]:
    def condition(_event: EventData) -> bool:
        verdict = guard(model.record, model.seen)
        model.on_guard(trigger, guard.__name__, verdict)
        return verdict

    condition.__name__ = guard.__name__
    return condition
