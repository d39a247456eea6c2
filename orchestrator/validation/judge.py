"""Decide the migration state of a database as a whole: pure functions over plain data.

Inputs are a parsed journal, the modelled history of its migrations (from
:mod:`orchestrator.drizzle.model`) and a catalog snapshot. The database is judged as a whole
against the history (:mod:`orchestrator.validation.matching`):

1. tracked rows are a prefix of the journal (k entries) and the schema equals the modelled
   state after those k: SAFE, or NEEDS_MIGRATION with exactly the rest pending;
2. tracked rows are a prefix and the schema equals the state after a longer prefix j: the
   migrations k..j-1 ran without their tracking rows (``untracked_present``);
3. anything else: each migration's own effect is read in the database to say which ran,
   which did not and which half-ran; the verdict is PARTIAL_MIGRATION (or NEEDS_MIGRATION /
   SAFE only if that reading and the schema both agree, which case 1 already covers).

Output is a report: a state per migration, named findings, the checks of the runbook, a
verdict and what to do next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.db.catalog import CatalogSnapshot
from orchestrator.drizzle.journal import Journal
from orchestrator.drizzle.model import DbObject, ObjectModel, object_names
from orchestrator.validation.findings import (
    build_checks,
    drift_finding,
    out_of_order_findings,
    recommend,
    stray_file_findings,
    tracking_findings,
    unknown_hash_findings,
)
from orchestrator.validation.matching import (
    Difference,
    MigrationEvidence,
    drift,
    effect_evidence,
    first_matching_prefix,
    migration_evidence,
    universe,
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
    if all(s is MigrationState.APPLIED for s in states):
        return Verdict.SAFE
    first_pending = next(i for i, s in enumerate(states) if s is not MigrationState.APPLIED)
    head, tail = states[:first_pending], states[first_pending:]
    if all(s is MigrationState.APPLIED for s in head) and all(
        s is MigrationState.PENDING for s in tail
    ):
        return Verdict.NEEDS_MIGRATION
    return Verdict.PARTIAL_MIGRATION


@dataclass(frozen=True)
class HistoryReading:
    """How the catalog matches the history, before it is put in a report's words."""

    states: tuple[MigrationState, ...]
    evidence: tuple[MigrationEvidence, ...]
    tracked_prefix: int  # the leading journal entries that are tracked
    matched_prefix: int | None  # j when the schema equals the state after the first j
    drift: tuple[Difference, ...]  # vs the state after the tracked prefix, when unexplained


def read_history(journal: Journal, model: ObjectModel, snapshot: CatalogSnapshot) -> HistoryReading:
    """Judge the schema as a whole against the history (see the module's docstring)."""
    tags = [m.tag for m in journal.migrations]
    tracked = [m.hash in snapshot.tracked_hashes for m in journal.migrations]
    keys = universe(model, tags)
    facts = snapshot.facts
    k = next((i for i, is_tracked in enumerate(tracked) if not is_tracked), len(tags))
    clean = not any(tracked[k:])
    n = len(tags)
    if clean:
        matched = first_matching_prefix(model, tags, facts, keys, k)
        if matched is not None:
            states = (
                [MigrationState.APPLIED] * k
                + [MigrationState.UNTRACKED_PRESENT] * (matched - k)
                + [MigrationState.PENDING] * (n - matched)
            )
            known = [
                effect_evidence(model, tag, facts, keys, applied=i < matched)
                for i, tag in enumerate(tags)
            ]
            return HistoryReading(tuple(states), tuple(known), k, matched, ())
    evidence = migration_evidence(model, tags, facts, keys)
    states = [
        evidence_state(is_tracked, e) for is_tracked, e in zip(tracked, evidence, strict=True)
    ]
    applied = [tag for tag, is_tracked in zip(tags, tracked, strict=True) if is_tracked]
    differences = tuple(drift(model, applied, facts, keys))
    return HistoryReading(tuple(states), tuple(evidence), k, None, differences)


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


def validate(journal: Journal, model: ObjectModel, snapshot: CatalogSnapshot) -> ValidationReport:
    """Judge ``snapshot`` against the migrations of ``journal``."""
    reading = read_history(journal, model, snapshot)
    ready_objects, ready_names = model.effect_objects, model.effect_names
    statuses = []
    for migration, state, evidence in zip(
        journal.migrations, reading.states, reading.evidence, strict=True
    ):
        # When the schema is a known prefix state, applied migrations have no absent objects.
        checked, missing = evidence.checked, evidence.absent
        gone = [o for o in missing if o not in snapshot.facts]
        changed = [
            describe_difference(model, migration.tag, o, snapshot.facts[o])
            for o in missing
            if o in snapshot.facts
        ]
        statuses.append(
            MigrationStatus(
                tag=migration.tag,
                hash=migration.hash,
                when=migration.when,
                state=state,
                tracked=migration.hash in snapshot.tracked_hashes,
                # An applied migration's evidence is usually the model's own sorted effect,
                # whose names were made while the catalog was read.
                expected_objects=(
                    ready_names[migration.tag]
                    if checked is ready_objects.get(migration.tag)
                    else object_names(checked)
                ),
                missing_objects=object_names(missing),
                missing_summary=tuple(summarize_missing(gone) + changed),
            )
        )

    findings = [
        *stray_file_findings(journal),
        *tracking_findings(snapshot),
        *out_of_order_findings(journal.migrations, statuses, snapshot),
        *unknown_hash_findings(journal.migrations, statuses, snapshot),
        *(
            Finding("unparsed_sql", f"{tag}: {reason}; only its hash decides", tag, "warning")
            for tag, reason in model.unparsed.items()
        ),
    ]
    if snapshot.tracking_present and not snapshot.tracking_readable:
        verdict = Verdict.ERROR
    else:
        verdict = verdict_for([s.state for s in statuses])
        if reading.matched_prefix is None and verdict is not Verdict.PARTIAL_MIGRATION:
            # Each migration looks right on its own, yet the schema is no state the
            # history passes through: someone changed it by hand.
            verdict = Verdict.PARTIAL_MIGRATION
            findings.append(drift_finding(reading.drift))
    return ValidationReport(
        status=verdict,
        checks=tuple(build_checks(snapshot, statuses)),
        migrations=tuple(statuses),
        findings=tuple(findings),
        recommendation=recommend(verdict, statuses, findings, snapshot),
        database={"name": snapshot.database, "server_version": snapshot.server_version},
        tracked_hashes=snapshot.tracked_hashes,
        matched_prefix=reading.matched_prefix,
    )


def error_report(message: str, *, database: dict[str, Any] | None = None) -> ValidationReport:
    """The report when the database cannot be reached or read: verdict ERROR."""
    return ValidationReport(
        status=Verdict.ERROR,
        checks=(Check("connectivity", False, message),),
        migrations=(),
        findings=(Finding("database_error", message),),
        recommendation=recommend(Verdict.ERROR, [], [], None),
        database=database or {},
    )


def describe_difference(model: ObjectModel, tag: str, obj: DbObject, found: Any) -> str:
    """An object present, but not as migration ``tag`` leaves it."""
    expected = model.effects[tag][obj][1]
    return Difference(obj, expected, found).describe("is not as it defines:")
