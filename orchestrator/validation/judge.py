"""Decide the migration state of a database as a whole: pure functions over plain data.

Inputs are a parsed journal, its history as PostgreSQL built it on a shadow database
(:class:`~orchestrator.catalog.History`) and a catalog snapshot of the database. The
database is judged as a whole against the history (:mod:`orchestrator.validation.matching`):

1. tracked rows are a prefix of the journal (k entries) and the schema equals the state
   after those k: SAFE, or NEEDS_MIGRATION with exactly the rest pending;
2. tracked rows are a prefix and the schema equals the state after a longer prefix j: the
   migrations k..j-1 ran without their tracking rows (``untracked_present``), but for those
   that change nothing in the catalog: only a hash tells they ran, so they are pending;
3. anything else: PARTIAL_MIGRATION, with every difference against the state the tracked
   migrations build (object, property, expected, found), and each migration's own changes
   read in the database to say which ran, which did not and which half-ran.

Objects no state of the history holds are reported as warnings and do not change the
verdict. Output is a report: a state per migration, named findings, the checks of the
runbook, a verdict and what to do next.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.catalog import CatalogSnapshot, Difference, History, ReplayFailure, fold
from orchestrator.drizzle.journal import Journal
from orchestrator.validation.findings import (
    build_checks,
    drift_finding,
    out_of_order_findings,
    recommend,
    stray_file_findings,
    tracking_findings,
    unknown_hash_findings,
    untouched_finding,
    version_finding,
)
from orchestrator.validation.matching import (
    MigrationEvidence,
    drift,
    first_matching_prefix,
    inherited,
    migration_evidence,
    untouched,
)
from orchestrator.validation.report import (
    Check,
    Finding,
    MigrationState,
    MigrationStatus,
    ValidationReport,
    Verdict,
    summarize_missing,
)


def verdict_for(states: Sequence[MigrationState]) -> Verdict:
    """SAFE if all applied; NEEDS_MIGRATION if applied* then pending+; else PARTIAL."""
    first = next((i for i, s in enumerate(states) if s is not MigrationState.APPLIED), None)
    if first is None:
        return Verdict.SAFE
    if all(s is MigrationState.PENDING for s in states[first:]):
        return Verdict.NEEDS_MIGRATION
    return Verdict.PARTIAL_MIGRATION


@dataclass(frozen=True)
class HistoryReading:
    """How the catalog matches the history, before it is put in a report's words."""

    states: tuple[MigrationState, ...]
    evidence: tuple[MigrationEvidence, ...]
    matched_prefix: int | None  # j when the schema equals the state after the first j
    drift: tuple[Difference, ...]  # vs the state the tracked migrations build, unexplained
    # The schema is exactly what the tracked and the untracked_present migrations build.
    repairable: bool = False
    # The differences that would remain were the untracked migrations found (partly) in the
    # database tracked too (what repair would leave).
    if_tracked: tuple[Difference, ...] = ()


def tracked_state(history: History, tracked: Sequence[bool]) -> dict[str, Any]:
    """The catalog the tracked migrations build, applied in journal order."""
    changes = zip(tracked, history.deltas, strict=True)
    return fold(history.initial, (change for is_tracked, change in changes if is_tracked))


def read_history(
    journal: Journal, history: History, snapshot: CatalogSnapshot, tracked: list[bool]
) -> HistoryReading:
    """Judge the schema as a whole against the history (see the module's docstring), each
    migration ``tracked`` or not."""
    tags = [m.tag for m in journal.migrations]
    found, _ = inherited(history, snapshot.objects)  # the template's are not the folder's
    k = next((i for i, is_tracked in enumerate(tracked) if not is_tracked), len(tags))
    matched = None if any(tracked[k:]) else first_matching_prefix(history, found, k)
    if matched is not None:
        evidence = [
            MigrationEvidence(tag, tuple(sorted(change)), ())
            if i < matched
            else MigrationEvidence(tag, (), tuple(sorted(change)))
            for i, (tag, change) in enumerate(zip(tags, history.deltas, strict=True))
        ]
    else:
        evidence = migration_evidence(history, tags, found)
    # A migration that changes nothing in the catalog (a seed, a backfill) stays pending, even
    # between migrations run by hand: only its hash can say it ran.
    states = [
        evidence_state(is_tracked, e) for is_tracked, e in zip(tracked, evidence, strict=True)
    ]
    if matched is not None:
        return HistoryReading(tuple(states), tuple(evidence), matched, (), matched > k)
    differences = tuple(drift(history, tracked_state(history, tracked), found))
    # What tracking the untracked migrations whose changes are (partly) there would leave:
    # repair may write their rows only where nothing differs then.
    candidates = [t or bool(e.present) for t, e in zip(tracked, evidence, strict=True)]
    if_tracked = tuple(drift(history, tracked_state(history, candidates), found))
    repairable = (
        candidates != tracked
        and not {MigrationState.PARTIALLY_PRESENT, MigrationState.TRACKED_MISSING} & set(states)
        and not if_tracked
    )
    return HistoryReading(tuple(states), tuple(evidence), None, differences, repairable, if_tracked)


def tracked_flags(journal: Journal, snapshot: CatalogSnapshot) -> list[bool]:
    """Whether each migration of the journal has its tracking row."""
    untracked = {m.tag for m in journal.untracked(snapshot.row_hashes)}
    return [m.tag not in untracked for m in journal.migrations]


def evidence_state(tracked: bool, evidence: MigrationEvidence) -> MigrationState:
    """The state of one migration from its tracking row and its own effect's evidence."""
    present, absent = len(evidence.present), len(evidence.absent)
    if tracked:
        if absent == 0:
            return MigrationState.APPLIED
        return MigrationState.TRACKED_MISSING if present == 0 else MigrationState.PARTIALLY_PRESENT
    if present == 0:
        return MigrationState.PENDING
    return MigrationState.UNTRACKED_PRESENT if absent == 0 else MigrationState.PARTIALLY_PRESENT


def validate(journal: Journal, history: History, snapshot: CatalogSnapshot) -> ValidationReport:
    """Judge ``snapshot`` against the migrations of ``journal`` as ``history`` replays them.

    When PostgreSQL refused a migration on the shadow (``history.failure``), the database is
    judged against the migrations before it and every later one is pending; if production
    tracks one of those, there is nothing to judge it by: ERROR.
    """
    if history.failure is not None:
        return _judged_before_failure(journal, history, snapshot, history.failure)
    flags = tracked_flags(journal, snapshot)
    reading = read_history(journal, history, snapshot, flags)
    statuses = []
    for m, state, evidence, tracked in zip(
        journal.migrations, reading.states, reading.evidence, flags, strict=True
    ):
        missing = () if state is MigrationState.PENDING else evidence.absent
        summary = tuple(summarize_missing(missing))
        statuses.append(
            MigrationStatus(
                m.tag, m.hash, m.when, state, tracked, evidence.checked, missing, summary
            )
        )

    findings = [
        *stray_file_findings(journal),
        *tracking_findings(snapshot),
        *out_of_order_findings(journal.migrations, statuses, snapshot),
        *unknown_hash_findings(journal.migrations, statuses, snapshot),
    ]
    if history.server_major != snapshot.server_major:
        findings.append(version_finding(history.server_major, snapshot.server_major))
    if foreign := untouched(history, snapshot.objects):
        findings.append(untouched_finding(foreign))
    if snapshot.tracking_present and not snapshot.tracking_readable:
        verdict = Verdict.ERROR
    else:
        verdict = verdict_for([s.state for s in statuses])
        if any(f.code == "edited_migration" for f in findings):
            # Its old text ran (its row says so): never pending, nor reconciled by a guess.
            verdict = Verdict.PARTIAL_MIGRATION
        if reading.drift and not reading.repairable:
            # The schema is no state the history passes through: say exactly how it differs
            # from the one the tracked migrations build.
            verdict = Verdict.PARTIAL_MIGRATION
            findings.append(drift_finding(reading.drift))
    return ValidationReport(
        status=verdict,
        checks=tuple(build_checks(snapshot, statuses)),
        migrations=tuple(statuses),
        findings=tuple(findings),
        recommendation=recommend(verdict, statuses, findings),
        database={"name": snapshot.database, "server_version": snapshot.server_version},
        row_hashes=snapshot.row_hashes,
        matched_prefix=reading.matched_prefix,
        replayed_on=history.server,
        repairable=reading.repairable,
        repair_differences=tuple(str(d) for d in reading.if_tracked),
        drifted=tuple(sorted({d.key for d in reading.drift})),
    )


def _judged_before_failure(
    journal: Journal, history: History, snapshot: CatalogSnapshot, failure: ReplayFailure
) -> ValidationReport:
    replayed = len(history.deltas)
    finding = Finding(
        "replay_failed",
        f"{failure.tag} does not replay on an empty database ({history.server}): "
        f"{failure.message} [{failure.sqlstate}] (statement: "
        f"{' '.join(failure.statement.split())[:120]}); migrate refuses it: fix the migration",
        failure.tag,
    )
    if any(tracked_flags(journal, snapshot)[replayed:]):
        report = error_report(
            f"cannot tell the migration state: production tracks migrations from {failure.tag} "
            f"on, which the shadow cannot replay ({failure.message})"
        )
        return dataclasses.replace(report, findings=(*report.findings, finding))
    head = validate(
        dataclasses.replace(journal, migrations=journal.migrations[:replayed]),
        dataclasses.replace(history, hashes=history.hashes[:replayed], failure=None),
        snapshot,
    )
    pending = tuple(
        MigrationStatus(m.tag, m.hash, m.when, MigrationState.PENDING, False, (), ())
        for m in journal.migrations[replayed:]
    )
    migrations = head.migrations + pending
    status = Verdict.NEEDS_MIGRATION if head.status is Verdict.SAFE else head.status
    findings = (*head.findings, finding)
    return dataclasses.replace(
        head,
        status=status,
        migrations=migrations,
        findings=findings,
        checks=tuple(build_checks(snapshot, migrations)),
        recommendation=recommend(status, migrations, findings),
    )


def error_report(message: str, code: str = "database_error") -> ValidationReport:
    """The report when the database cannot be reached or read: verdict ERROR. With another
    finding ``code``, a command stopped on something else (``usage``: its input)."""
    database = code == "database_error"
    return ValidationReport(
        status=Verdict.ERROR,
        checks=(Check("connectivity", False, message),) if database else (),
        migrations=(),
        findings=(Finding(code, message),),
        recommendation=recommend(Verdict.ERROR, [], [])
        if database
        else "Fix what the error names, then run the command again.",
    )
