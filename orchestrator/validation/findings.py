"""What a release engineer must know besides the verdict: findings, checks, the advice.

Pure functions of the journal, the snapshot and the migration states.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

from orchestrator.catalog import CatalogSnapshot, Difference
from orchestrator.drizzle.journal import Journal, Migration, stray_file_message
from orchestrator.validation.report import (
    UNRECONCILED,
    Check,
    Finding,
    MigrationState,
    MigrationStatus,
    Verdict,
)


def first_few(items: Sequence[object], limit: int = 5, separator: str = "; ") -> str:
    """The first ``limit`` of ``items``, then how many more there are."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return separator.join(str(item) for item in items[:limit]) + more


def drift_finding(differences: Sequence[Difference]) -> Finding:
    """The schema differs from the state the tracked migrations build."""
    return Finding(
        "schema_drift",
        "the schema is not the one the tracked migrations build: " + first_few(differences),
    )


def untouched_finding(keys: Sequence[str]) -> Finding:
    """Objects no migration of the folder ever touches: other tools' or the platform's."""
    return Finding(
        "untouched_objects",
        f"{len(keys)} object(s) that no migration of this folder creates: "
        f"{first_few(keys, 5, ', ')} (another tool's or the platform's; they do not change "
        "the verdict)",
        severity="warning",
    )


def version_finding(shadow_major: int, production_major: int) -> Finding:
    """The history was replayed on another PostgreSQL major version than production's."""
    return Finding(
        "shadow_version",
        f"the history was replayed on PostgreSQL {shadow_major} but production runs "
        f"{production_major}: catalogs may print differently; name a shadow server of "
        f"version {production_major} (--shadow-url)",
        severity="warning",
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
    if snapshot.tracking_present and snapshot.tracking_readable:
        return []
    if snapshot.tracking_present:
        finding = Finding(
            "tracking_table_malformed",
            f"{name} lacks drizzle's columns (id, hash, created_at): cannot read it",
        )
    elif snapshot.tracking_elsewhere:
        others = ", ".join(f"{s}.{snapshot.tracking_table}" for s in snapshot.tracking_elsewhere)
        finding = Finding(
            "tracking_table_wrong_schema",
            f"{name} is missing but {others} exists: drizzle-kit reads only {name}, "
            "so it would re-run every migration",
        )
    else:
        finding = Finding(
            "tracking_table_missing",
            f"{name} does not exist: no migration has been applied by drizzle here",
            severity="warning",
        )
    return [finding]


def out_of_order_findings(
    migrations: Sequence[Migration], statuses: Sequence[MigrationStatus], snapshot: CatalogSnapshot
) -> list[Finding]:
    """What drizzle-kit's ``when > newest created_at`` rule would silently skip or run again.

    drizzle-orm's migrator reads the newest tracked ``created_at`` and applies only journal
    entries whose ``when`` is greater. A pending migration older than an applied one is
    therefore never applied by drizzle-kit, and an applied one whose ``when`` was raised
    since is applied again; it says nothing of either.
    """
    findings: list[Finding] = []
    # drizzle's ORDER BY created_at DESC reads a row without one first, as 0.
    if undated := next((r for r in snapshot.tracking_rows if r.created_at is None), None):
        findings.append(
            Finding(
                "created_at_missing",
                f"tracking row {undated.id} has no created_at: drizzle-kit migrate takes it for "
                "the newest row and would run every migration of the folder again; set it to "
                "its migration's journal 'when'",
            )
        )
    newest = snapshot.newest_created_at
    by_created_at = {row.created_at: row.hash for row in snapshot.tracking_rows}
    tag_of_hash = {m.hash: m.tag for m in migrations}
    for migration, status in zip(migrations, statuses, strict=True):
        if status.tracked and newest is not None and migration.when > newest:
            findings.append(
                Finding(
                    "rerun_by_drizzle",
                    f"drizzle-kit migrate would run {migration.tag} again: it is applied, but "
                    f"its journal 'when' {migration.when} is newer than the newest tracked "
                    f"created_at {newest}; put its 'when' back (`orchestrator migrate` tracks "
                    "by hash and does not run it again)",
                    migration.tag,
                )
            )
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
    migrations: Sequence[Migration], statuses: Sequence[MigrationStatus], snapshot: CatalogSnapshot
) -> list[Finding]:
    """Tracked hashes that match no file: edited migrations or foreign ones."""
    known = {m.hash for m in migrations}
    untracked_by_when = {
        m.when: m.tag for m, s in zip(migrations, statuses, strict=True) if not s.tracked
    }
    findings: list[Finding] = []
    seen: set[str] = set()
    for row in snapshot.tracking_rows:
        if row.hash is None or row.hash in known or row.hash in seen:
            continue
        seen.add(row.hash)
        edited = untracked_by_when.get(row.created_at) if row.created_at is not None else None
        if edited:
            finding = Finding(
                "edited_migration",
                f"{edited}.sql changed after it was applied: tracked hash {row.hash[:12]}… "
                f"has its created_at {row.created_at} but not its current hash",
                edited,
            )
        else:
            finding = Finding(
                "unknown_hash",
                f"tracked hash {row.hash[:12]}… (id {row.id}, created_at {row.created_at}) "
                "matches no migration file: applied from another branch or folder",
                severity="warning",
            )
        findings.append(finding)
    # drizzle writes a row per entry: a text the journal repeats is tracked once per entry
    counts = Counter(row.hash for row in snapshot.tracking_rows if row.hash)
    entries = Counter(m.hash for m in migrations)
    for digest in sorted(d for d, count in counts.items() if count > max(1, entries[d])):
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
    if not snapshot.tracking_present:
        elsewhere = ", ".join(f"{s}.{snapshot.tracking_table}" for s in snapshot.tracking_elsewhere)
        tracking = f"{name} missing" + (f" (found {elsewhere}: wrong schema)" if elsewhere else "")
    elif snapshot.tracking_readable:
        tracking = f"{name} present, {len(snapshot.tracking_rows)} rows"
    else:
        tracking = f"{name} present but unreadable"
    checks = [
        Check(
            "connectivity",
            True,
            f"connected to {snapshot.database} (PostgreSQL {snapshot.server_version})",
        ),
        Check("tracking_table", snapshot.tracking_present and snapshot.tracking_readable, tracking),
    ]
    for status in statuses:
        expected = len(status.expected_objects)
        if expected == 0:
            detail = "no objects to check (decided by its hash)"
        elif status.missing_objects:
            shown = first_few(status.missing_summary, 4, ", ")
            detail = f"{expected - len(status.missing_objects)}/{expected} present; missing {shown}"
        else:
            detail = f"{expected}/{expected} present"
        tracked = f"hash {status.hash[:12]}… {'tracked' if status.tracked else 'not tracked'}"
        checks.append(Check(f"objects {status.tag}", not status.missing_objects, detail))
        checks.append(Check(f"tracked {status.tag}", status.tracked, tracked))
    return checks


def recommend(
    verdict: Verdict, statuses: Sequence[MigrationStatus], findings: Sequence[Finding]
) -> str:
    """What to do next, in the runbook's terms."""
    if verdict is Verdict.SAFE:
        return "All migrations are applied: safe to merge and deploy the code." + (
            drizzle_kit_caution(findings)
        )
    if verdict is Verdict.ERROR:
        return (
            "Cannot tell the migration state: fix what the error names (the connection string, "
            "network, permissions, a session holding a lock), then validate again. Do not deploy."
        )
    pending = [s.tag for s in statuses if s.state is MigrationState.PENDING]
    if verdict is Verdict.NEEDS_MIGRATION:
        return (
            f"Migrations first (Strategy A): confirm a backup, run `orchestrator migrate` to "
            f"apply {', '.join(pending)}, validate again (expect SAFE), then merge and deploy."
            + drizzle_kit_caution(findings)
        )
    if edited := [f.migration for f in findings if f.code == "edited_migration"]:
        return (
            f"Do not deploy: {', '.join(map(str, edited))} changed after it was applied (see "
            "edited_migration). Put back the file as it was applied (its git history); a "
            "change to make is a new migration. Then validate again."
        )
    if any(f.code == "schema_drift" for f in findings):
        return (
            "Do not deploy: the schema differs from what the tracked migrations build (see "
            "schema_drift). Find who changed it; put it back (restore point or backup) or "
            "write a migration that states the change; then validate again."
        )
    # Pending behind migrations that ran, one that changes nothing in the catalog (a seed)
    # may have run with them: only its data can tell.
    ran = max(
        (i for i, s in enumerate(statuses) if s.state is not MigrationState.PENDING), default=0
    )
    unseen = [s.tag for s in statuses[:ran] if not (s.tracked or s.expected_objects)]
    data = "".join(
        f" The catalog cannot show whether {tag} ran: check its data before "
        "`orchestrator migrate` runs it; if it ran, insert its tracking row by hand."
        for tag in unseen
    )
    if problems := [f"{s.tag} is {s.state.value}" for s in statuses if s.state in UNRECONCILED]:
        return (
            "Do not deploy: " + "; ".join(problems) + ". Reconcile by hand: objects present but "
            "untracked need their tracking row (`orchestrator repair`) or removal, "
            "tracked-but-missing need the objects restored (restore point or backup); then "
            "validate again." + data
        )
    return (
        f"Do not deploy with drizzle-kit: {', '.join(pending)} pending behind applied "
        "migrations (a hole). `orchestrator migrate` applies them in journal order; then "
        "validate again." + data
    )


def drizzle_kit_caution(findings: Sequence[Finding]) -> str:
    """A sentence against ``drizzle-kit migrate`` where it would skip or rerun a migration."""
    skipped = [str(f.migration) for f in findings if f.code == "out_of_order"]
    again = [str(f.migration) for f in findings if f.code == "rerun_by_drizzle"]
    if any(f.code == "created_at_missing" for f in findings):
        again = ["every migration"]
    would = [f"skip {', '.join(skipped)}"] if skipped else []
    would += [f"run {', '.join(again)} again"] if again else []
    return f" Do not use `drizzle-kit migrate`: it would {' and '.join(would)}." if would else ""
