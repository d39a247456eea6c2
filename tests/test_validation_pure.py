"""validation.py's decisions, without any I/O: plain journals, object models and snapshots."""

from __future__ import annotations

import pytest

from orchestrator.db.catalog import CatalogSnapshot, TrackingRow
from orchestrator.drizzle.journal import Journal, Migration, hash_sql
from orchestrator.drizzle.model import DbObject, ObjectModel
from orchestrator.validation import (
    MigrationState,
    Verdict,
    evidence_state,
    summarize_missing,
    validate,
    verdict_for,
)
from orchestrator.validation.matching import MigrationEvidence

A, P = MigrationState.APPLIED, MigrationState.PENDING
U, T, H = (
    MigrationState.UNTRACKED_PRESENT,
    MigrationState.TRACKED_MISSING,
    MigrationState.PARTIALLY_PRESENT,
)


@pytest.mark.parametrize(
    ("tracked", "present", "absent", "state"),
    [
        (True, 3, 0, A),
        (True, 0, 0, A),  # nothing the database can show: its hash decides
        (True, 0, 3, T),
        (True, 2, 1, H),
        (False, 0, 3, P),
        (False, 0, 0, P),
        (False, 3, 0, U),
        (False, 1, 2, H),
    ],
)
def test_evidence_state_table(tracked: bool, present: int, absent: int, state: object) -> None:
    obj = [DbObject("table", "public", f"t{i}") for i in range(present + absent)]
    evidence = MigrationEvidence("0001_x", tuple(obj[:present]), tuple(obj[present:]))
    assert evidence_state(tracked, evidence) is state


@pytest.mark.parametrize(
    ("states", "verdict"),
    [
        ([A, A, A], Verdict.SAFE),
        ([P, P, P], Verdict.NEEDS_MIGRATION),
        ([A, A, P], Verdict.NEEDS_MIGRATION),
        ([A, P, A], Verdict.PARTIAL_MIGRATION),  # a hole: drizzle's skipped migration
        ([A, U, P], Verdict.PARTIAL_MIGRATION),
        ([A, A, T], Verdict.PARTIAL_MIGRATION),
        ([H, P, P], Verdict.PARTIAL_MIGRATION),
    ],
)
def test_verdict_table(states: list[MigrationState], verdict: Verdict) -> None:
    assert verdict_for(states) is verdict


def test_a_missing_table_stands_for_its_parts() -> None:
    missing = [
        DbObject("column", "public", "a", "t"),
        DbObject("constraint", "public", "t_pkey", "t"),
        DbObject("index", "public", "idx_t_a"),
        DbObject("table", "public", "t"),
        DbObject("column", "public", "x", "other"),
    ]
    assert summarize_missing(missing) == [
        "table public.t (and its 2 columns/constraints)",
        "index public.idx_t_a",
        "column public.other.x",
    ]


def migration(idx: int, when: int, sql: str) -> Migration:
    return Migration(idx, f"000{idx}_m", when, True, sql, hash_sql(sql))


def snapshot(objects: set[DbObject], rows: list[tuple[str, int]]) -> CatalogSnapshot:
    return CatalogSnapshot(
        server_version="15",
        database="db",
        objects=frozenset(objects),
        tracking_schema="drizzle",
        tracking_table="__drizzle_migrations",
        tracking_present=bool(rows),
        tracking_readable=bool(rows),
        tracking_rows=tuple(TrackingRow(i + 1, h, c) for i, (h, c) in enumerate(rows)),
        tracking_elsewhere=(),
    )


def test_out_of_order_names_what_drizzle_would_skip() -> None:
    m0, m1, m2 = migration(0, 100, "a"), migration(1, 300, "b"), migration(2, 200, "c")
    journal = Journal("mem", "postgresql", (m0, m1, m2))
    tables = {tag: frozenset({DbObject("table", "public", tag)}) for tag in ("0000_m", "0001_m")}
    model = ObjectModel({**tables, "0002_m": frozenset()}, {})
    present = {DbObject("table", "public", "0000_m"), DbObject("table", "public", "0001_m")}
    report = validate(journal, model, snapshot(present, [(m0.hash, 100), (m1.hash, 300)]))
    assert report.status is Verdict.NEEDS_MIGRATION
    [finding] = [f for f in report.findings if f.code == "out_of_order"]
    assert finding.migration == "0002_m"
    assert "200" in finding.message and "300" in finding.message and "0001_m" in finding.message


def test_a_long_history_folds_runs_of_applied_migrations() -> None:
    from orchestrator.render import FOLD_ABOVE, migration_rows
    from orchestrator.validation import MigrationState, MigrationStatus

    def status(number: int, state: MigrationState) -> MigrationStatus:
        tracked = state is MigrationState.APPLIED
        return MigrationStatus(f"{number:04d}_m", "h", number, state, tracked, (), ())

    few = [status(i, MigrationState.APPLIED) for i in range(FOLD_ABOVE)]
    assert migration_rows(few) == few  # a short history is shown in full
    many = [status(i, MigrationState.APPLIED) for i in range(100)]
    many[50] = status(50, MigrationState.PENDING)
    many[53] = status(53, MigrationState.PENDING)
    rows = migration_rows(many)
    assert rows[0] == "… 50 applied: 0000_m … 0049_m"
    assert rows[1] is many[50]
    assert rows[2:5] == [many[51], many[52], many[53]]  # a short run stays as it is
    assert rows[5] == "… 46 applied: 0054_m … 0099_m"
    assert len(rows) == 6


def test_a_fully_applied_long_history_is_one_line_of_text() -> None:
    from rich.console import Console

    from orchestrator.render import validation
    from orchestrator.validation import MigrationState, MigrationStatus, ValidationReport

    statuses = tuple(
        MigrationStatus(f"{i:04d}_m", "h", i, MigrationState.APPLIED, True, (), ())
        for i in range(1000)
    )
    report = ValidationReport(Verdict.SAFE, (), statuses, (), "safe")
    console = Console(record=True, width=40, soft_wrap=True)  # as the CLI's
    validation(console, report, "postgresql://db")
    text = console.export_text()
    assert "migrations: 1000 applied: 0000_m … 0999_m\n" in text  # no table, not cut
    assert len(text.splitlines()) == 4


def test_the_json_report_carries_every_field_of_checks_and_findings() -> None:
    """to_json spells checks and findings out by hand (for speed): a field added to either
    dataclass must reach the JSON too, with the same values dataclasses.asdict gives."""
    from dataclasses import asdict

    from orchestrator.validation import Check, Finding, ValidationReport

    checks = (Check("connectivity", True, "connected"), Check("tracked 0001", False, "missing"))
    findings = (
        Finding("stray_file", "0009_x.sql ignored", None, "warning"),
        Finding("e", "m", "t"),
    )
    document = ValidationReport(Verdict.SAFE, checks, (), findings, "safe").to_json()
    assert document["checks"] == [asdict(c) for c in checks]
    assert document["findings"] == [asdict(f) for f in findings]
    assert list(document["findings"][0]) == list(asdict(findings[0]))  # same key order


def test_object_names_print_what_str_prints() -> None:
    from orchestrator.drizzle.model import object_names

    objects = [
        DbObject("schema", "auth", "auth"),
        DbObject("table", "public", "users"),
        DbObject("column", "public", "email", "users"),
        DbObject("constraint", "auth", "users_pkey", "users"),
        DbObject("index", "public", "users_email_idx"),
        DbObject("enum_value", "public", "active", "status"),
        DbObject("function", "public", "touch"),
        DbObject("trigger", "public", "t", "users"),
    ]
    assert object_names(objects) == tuple(str(o) for o in objects)
    assert object_names([]) == ()
