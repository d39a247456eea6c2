"""Decide the migration state of a database: pure functions over plain data.

Inputs are a parsed journal, the modelled history of its migrations (from
:mod:`orchestrator.drizzle.objects`) and a catalog snapshot. The database is judged as a whole
against the history (:mod:`orchestrator.matching`):

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

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from orchestrator.db.catalog import CatalogSnapshot
from orchestrator.drizzle.journal import Journal, Migration, stray_file_message
from orchestrator.drizzle.objects import DbObject, ObjectModel
from orchestrator.errors import ExitCode
from orchestrator.matching import (
    Difference,
    MigrationEvidence,
    drift,
    effect_evidence,
    first_matching_prefix,
    migration_evidence,
    universe,
)


class Verdict(StrEnum):
    """The answer to "can this release's code go out?"."""

    SAFE = "SAFE"  # every migration applied
    NEEDS_MIGRATION = "NEEDS_MIGRATION"  # a clean prefix applied, the rest pending
    PARTIAL_MIGRATION = "PARTIAL_MIGRATION"  # anything else: nobody chose this state
    ERROR = "ERROR"  # cannot tell

    @property
    def exit_code(self) -> ExitCode:
        """The process exit code of this verdict."""
        return {
            Verdict.SAFE: ExitCode.OK,
            Verdict.NEEDS_MIGRATION: ExitCode.NEEDS_MIGRATION,
            Verdict.PARTIAL_MIGRATION: ExitCode.PARTIAL,
            Verdict.ERROR: ExitCode.ERROR,
        }[self]


class MigrationState(StrEnum):
    """Where one migration stands, from its tracking row and its objects."""

    APPLIED = "applied"  # tracked, and its objects present
    PENDING = "pending"  # not tracked, none of its objects present
    UNTRACKED_PRESENT = "untracked_present"  # objects present, hash missing
    TRACKED_MISSING = "tracked_missing"  # hash present, objects missing
    PARTIALLY_PRESENT = "partially_present"  # some of its objects present, some not


#: States that only a human can reconcile: migrate refuses to run over them.
UNRECONCILED = frozenset(
    {
        MigrationState.UNTRACKED_PRESENT,
        MigrationState.TRACKED_MISSING,
        MigrationState.PARTIALLY_PRESENT,
    }
)

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Check:
    """One line of the runbook's checklist."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Finding:
    """Something a release engineer must know, with a stable code."""

    code: str
    message: str
    migration: str | None = None
    severity: Severity = "error"


@dataclass(frozen=True)
class MigrationStatus:
    """The state of one migration and the evidence behind it."""

    tag: str
    hash: str
    when: int
    state: MigrationState
    tracked: bool
    expected_objects: tuple[str, ...]
    missing_objects: tuple[str, ...]
    missing_summary: tuple[str, ...] = ()  # the same, a missing table standing for its parts


@dataclass(frozen=True)
class ValidationReport:
    """Everything ``validate`` knows; rendered by the CLI as a table or JSON."""

    status: Verdict
    checks: tuple[Check, ...]
    migrations: tuple[MigrationStatus, ...]
    findings: tuple[Finding, ...]
    recommendation: str
    database: dict[str, Any] = field(default_factory=dict)
    tracked_hashes: frozenset[str] = frozenset()  # every hash in the tracking table
    # j when the schema is exactly the modelled state after the journal's first j entries.
    matched_prefix: int | None = None

    @property
    def exit_code(self) -> ExitCode:
        """The process exit code for this report."""
        return self.status.exit_code

    @property
    def pending(self) -> tuple[MigrationStatus, ...]:
        """Migrations not applied and with none of their objects present."""
        return tuple(m for m in self.migrations if m.state is MigrationState.PENDING)

    @property
    def unreconciled(self) -> tuple[MigrationStatus, ...]:
        """Migrations in a state that blocks migrating."""
        return tuple(m for m in self.migrations if m.state in UNRECONCILED)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document: status, checks, migrations, findings, recommendation."""
        return {
            "status": self.status.value,
            "exit_code": int(self.exit_code),
            "database": self.database,
            "checks": [asdict(c) for c in self.checks],
            "migrations": [
                {
                    "tag": m.tag,
                    "hash": m.hash,
                    "when": m.when,
                    "state": m.state.value,
                    "tracked": m.tracked,
                    "expected_objects": list(m.expected_objects),
                    "missing_objects": list(m.missing_objects),
                }
                for m in self.migrations
            ],
            "findings": [asdict(f) for f in self.findings],
            "schema_matches_prefix": self.matched_prefix,
            "recommendation": self.recommendation,
        }


def summarize_missing(missing: Sequence[DbObject]) -> list[str]:
    """Missing objects for people: a missing table stands for its columns and constraints."""
    tables = {(o.schema, o.name) for o in missing if o.kind == "table"}
    parts: dict[tuple[str, str], int] = {}
    lines = []
    for obj in missing:
        if obj.kind in ("column", "constraint") and (obj.schema, obj.parent or "") in tables:
            key = (obj.schema, obj.parent or "")
            parts[key] = parts.get(key, 0) + 1
        elif obj.kind != "table":
            lines.append(str(obj))
    tables_first = [
        f"table {schema}.{name}"
        + (
            f" (and its {parts[(schema, name)]} columns/constraints)"
            if parts.get((schema, name))
            else ""
        )
        for schema, name in sorted(tables)
    ]
    return tables_first + lines


def migration_state(tracked: bool, expected: int, missing: int) -> MigrationState:
    """The state of one migration from whether it is tracked and how much of it is there."""
    present = expected - missing
    if tracked:
        if missing == 0:
            return MigrationState.APPLIED
        return MigrationState.TRACKED_MISSING if present == 0 else MigrationState.PARTIALLY_PRESENT
    if expected == 0 or present == 0:
        return MigrationState.PENDING
    return MigrationState.UNTRACKED_PRESENT if missing == 0 else MigrationState.PARTIALLY_PRESENT


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
    statuses = []
    for migration, state, evidence in zip(
        journal.migrations, reading.states, reading.evidence, strict=True
    ):
        checked = evidence.checked
        if state is MigrationState.APPLIED or state is MigrationState.UNTRACKED_PRESENT:
            missing: tuple[DbObject, ...] = (
                () if reading.matched_prefix is not None else (evidence.absent)
            )
        else:
            missing = evidence.absent
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
                expected_objects=tuple(str(o) for o in checked),
                missing_objects=tuple(str(o) for o in missing),
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
    return str(Difference(obj, expected, found)).replace(": expected", " is not as it defines:", 1)


def drift_finding(differences: Sequence[Difference]) -> Finding:
    """The schema differs from the modelled state after the tracked migrations."""
    shown = "; ".join(str(d) for d in differences[:5])
    more = f" and {len(differences) - 5} more" if len(differences) > 5 else ""
    return Finding(
        "schema_drift",
        "the schema is not the one the tracked migrations build: " + (shown or "?") + more,
    )


def stray_file_findings(journal: Journal) -> list[Finding]:
    """A warning per migration-named file without a journal entry (drizzle ignores it)."""
    return [
        Finding("stray_file", stray_file_message(name), severity="warning")
        for name in journal.stray_files
    ]


def tracking_findings(snapshot: CatalogSnapshot) -> list[Finding]:
    """Findings about the tracking table itself."""
    name = f"{snapshot.tracking_schema}.{snapshot.tracking_table}"
    if snapshot.tracking_present:
        if not snapshot.tracking_readable:
            return [
                Finding(
                    "tracking_table_malformed",
                    f"{name} lacks drizzle's columns (id, hash, created_at): cannot read it",
                )
            ]
        return []
    if snapshot.tracking_elsewhere:
        others = ", ".join(f"{s}.{snapshot.tracking_table}" for s in snapshot.tracking_elsewhere)
        return [
            Finding(
                "tracking_table_wrong_schema",
                f"{name} is missing but {others} exists: drizzle-kit reads only {name}, "
                "so it would re-run every migration",
            )
        ]
    return [
        Finding(
            "tracking_table_missing",
            f"{name} does not exist: no migration has been applied by drizzle here",
            severity="warning",
        )
    ]


def out_of_order_findings(
    migrations: Sequence[Migration],
    statuses: Sequence[MigrationStatus],
    snapshot: CatalogSnapshot,
) -> list[Finding]:
    """What drizzle-kit's ``when > newest created_at`` rule would silently skip.

    drizzle-orm's migrator reads the newest tracked ``created_at`` and applies only journal
    entries whose ``when`` is greater. A pending migration older than an applied one is
    therefore never applied by drizzle-kit, and it says nothing.
    """
    findings: list[Finding] = []
    newest = snapshot.newest_created_at
    by_created_at = {row.created_at: row.hash for row in snapshot.tracking_rows}
    tag_of_hash = {m.hash: m.tag for m in migrations}
    for migration, status in zip(migrations, statuses, strict=True):
        if status.tracked or newest is None or migration.when > newest:
            continue
        newest_tag = tag_of_hash.get(by_created_at.get(newest) or "", "an unknown migration")
        findings.append(
            Finding(
                "out_of_order",
                f"drizzle-kit migrate would skip {migration.tag}: its journal 'when' "
                f"{migration.when} is not newer than the newest tracked created_at {newest} "
                f"({newest_tag}); `orchestrator migrate` applies it",
                migration.tag,
            )
        )
    tracked = {s.tag for s in statuses if s.tracked}
    flagged = {f.migration for f in findings}
    for earlier, later in itertools.pairwise(migrations):
        # Only a migration still to apply can be skipped; once applied it is history.
        if later.when <= earlier.when and later.tag not in tracked | flagged:
            findings.append(
                Finding(
                    "journal_out_of_order",
                    f"{later.tag}'s 'when' ({later.when}) is not newer than {earlier.tag}'s "
                    f"({earlier.when}): drizzle-kit skips {later.tag} if {earlier.tag} is ever "
                    "applied in an earlier run",
                    later.tag,
                    "warning",
                )
            )
    return findings


def unknown_hash_findings(
    migrations: Sequence[Migration],
    statuses: Sequence[MigrationStatus],
    snapshot: CatalogSnapshot,
) -> list[Finding]:
    """Tracked hashes that match no file: edited migrations or foreign ones."""
    known = {m.hash for m in migrations}
    untracked_by_when = {
        m.when: m.tag for m, s in zip(migrations, statuses, strict=True) if not s.tracked
    }
    findings: list[Finding] = []
    seen: set[str] = set()
    for row in snapshot.tracking_rows:
        if row.hash is None or row.hash in known:
            continue
        if row.hash in seen:
            continue
        seen.add(row.hash)
        edited = untracked_by_when.get(row.created_at) if row.created_at is not None else None
        if edited:
            findings.append(
                Finding(
                    "edited_migration",
                    f"{edited}.sql changed after it was applied: tracked hash {row.hash[:12]}… "
                    f"has its created_at {row.created_at} but not its current hash",
                    edited,
                )
            )
        else:
            findings.append(
                Finding(
                    "unknown_hash",
                    f"tracked hash {row.hash[:12]}… (id {row.id}, created_at {row.created_at}) "
                    "matches no migration file: applied from another branch or folder",
                    severity="warning",
                )
            )
    duplicates = _duplicates(row.hash for row in snapshot.tracking_rows if row.hash)
    for digest in sorted(duplicates):
        findings.append(
            Finding(
                "duplicate_tracking_row",
                f"hash {digest[:12]}… is tracked more than once",
                severity="warning",
            )
        )
    return findings


def build_checks(snapshot: CatalogSnapshot, statuses: Sequence[MigrationStatus]) -> list[Check]:
    """The runbook's checklist, one line per check."""
    name = f"{snapshot.tracking_schema}.{snapshot.tracking_table}"
    if snapshot.tracking_present:
        tracking = Check(
            "tracking_table",
            snapshot.tracking_readable,
            f"{name} present, {len(snapshot.tracking_rows)} rows"
            if snapshot.tracking_readable
            else f"{name} present but unreadable",
        )
    else:
        elsewhere = ", ".join(f"{s}.{snapshot.tracking_table}" for s in snapshot.tracking_elsewhere)
        tracking = Check(
            "tracking_table",
            False,
            f"{name} missing" + (f" (found {elsewhere}: wrong schema)" if elsewhere else ""),
        )
    checks = [
        Check(
            "connectivity",
            True,
            f"connected to {snapshot.database} (PostgreSQL {snapshot.server_version})",
        ),
        tracking,
    ]
    for status in statuses:
        expected = len(status.expected_objects)
        if expected == 0:
            detail = "no objects to check (decided by its hash)"
        elif status.missing_objects:
            shown = ", ".join(status.missing_summary[:4])
            more = len(status.missing_summary) - 4
            detail = f"{expected - len(status.missing_objects)}/{expected} present; missing {shown}"
            detail += f" and {more} more" if more > 0 else ""
        else:
            detail = f"{expected}/{expected} present"
        checks.append(Check(f"objects {status.tag}", not status.missing_objects, detail))
        checks.append(
            Check(
                f"tracked {status.tag}",
                status.tracked,
                f"hash {status.hash[:12]}… {'tracked' if status.tracked else 'not tracked'}",
            )
        )
    return checks


def recommend(
    verdict: Verdict,
    statuses: Sequence[MigrationStatus],
    findings: Sequence[Finding],
    snapshot: CatalogSnapshot | None,
) -> str:
    """What to do next, in the runbook's terms."""
    if verdict is Verdict.SAFE:
        return "All migrations are applied: safe to merge and deploy the code."
    if verdict is Verdict.ERROR:
        return (
            "Cannot tell the migration state: fix the connection string, network or "
            "permissions, then validate again. Do not deploy."
        )
    pending = [s.tag for s in statuses if s.state is MigrationState.PENDING]
    skipped = [f.migration for f in findings if f.code == "out_of_order" and f.migration]
    if verdict is Verdict.NEEDS_MIGRATION:
        text = (
            f"Migrations first (Strategy A): confirm a backup, run `orchestrator migrate` to "
            f"apply {', '.join(pending)}, validate again (expect SAFE), then merge and deploy."
        )
        if skipped:
            text += f" Do not use `drizzle-kit migrate`: it would skip {', '.join(skipped)}."
        return text
    if any(f.code == "schema_drift" for f in findings):
        return (
            "Do not deploy: the schema differs from what the tracked migrations build (see "
            "schema_drift). Find who changed it; put it back (restore point or backup) or "
            "write a migration that states the change; then validate again."
        )
    problems = [f"{s.tag} is {s.state.value}" for s in statuses if s.state in UNRECONCILED]
    if problems:
        return (
            "Do not deploy: " + "; ".join(problems) + ". Reconcile by hand: objects present but "
            "untracked need their tracking row (or removal), tracked-but-missing need the "
            "objects restored (restore point or backup); then validate again."
        )
    return (
        f"Do not deploy with drizzle-kit: {', '.join(pending)} pending behind applied "
        "migrations (a hole). `orchestrator migrate` applies them in journal order; then "
        "validate again."
    )


def _duplicates(values: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    dupes: set[str] = set()
    for value in values:
        (dupes if value in seen else seen).add(value)
    return dupes
