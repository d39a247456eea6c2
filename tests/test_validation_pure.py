"""The judgement's decisions, without any I/O: plain journals, histories and snapshots.

A history here is written by hand in the shape the shadow replay produces (the catalog
before the first migration, then what each migration changed), so each test states exactly
which catalog each migration builds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

import pytest

from orchestrator.catalog import CatalogSnapshot, History, TrackingRow, delta
from orchestrator.drizzle.journal import Journal, Migration, hash_sql
from orchestrator.repair import plan_repair
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
        (True, 0, 0, A),  # nothing the catalog can show (data only): its hash decides
        (True, 0, 3, T),
        (True, 2, 1, H),
        (False, 0, 3, P),
        (False, 0, 0, P),
        (False, 3, 0, U),
        (False, 1, 2, H),
    ],
)
def test_evidence_state_table(tracked: bool, present: int, absent: int, state: object) -> None:
    keys = [f"table public.t{i}" for i in range(present + absent)]
    evidence = MigrationEvidence("0001_x", tuple(keys[:present]), tuple(keys[present:]))
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
        "column public.t.a",
        "constraint public.t.t_pkey",
        "index public.idx_t_a",
        "table public.t",
        "column public.other.x",
    ]
    assert summarize_missing(missing) == [
        "table public.t (and its 2 columns/constraints)",
        "index public.idx_t_a",
        "column public.other.x",
    ]


# -- a three-migration history: users, then users.email, then an index on it ------------------


def props(**values: Any) -> str:
    """An object's properties as the catalog reader gives them: one JSON text."""
    return json.dumps(values)


BASE: dict[str, Any] = {"schema public": props(comment=None), "extension plpgsql": props()}
STATES: list[dict[str, Any]] = [BASE]
STATES.append({**STATES[-1], "table public.users": props(kind="table")})
STATES.append({**STATES[-1], "column public.users.email": props(type="text", not_null=True)})
STATES.append({**STATES[-1], "index public.users_email": props(definition="CREATE INDEX ...")})
MIGRATIONS = tuple(
    Migration(i, f"000{i}_m", 100 * (i + 1), sql, hash_sql(sql))
    for i, sql in enumerate(["create table", "add column", "create index"])
)
JOURNAL = Journal("mem", "postgresql", MIGRATIONS)
HISTORY = History(
    hashes=tuple(m.hash for m in MIGRATIONS),
    initial=BASE,
    deltas=tuple(delta(a, b) for a, b in itertools.pairwise(STATES)),
    server="PostgreSQL 15.8 on a test",
    server_major=15,
)


def snapshot(objects: dict[str, Any], tracked: int, *, major: int = 15) -> CatalogSnapshot:
    rows = tuple(TrackingRow(i + 1, m.hash, m.when) for i, m in enumerate(MIGRATIONS[:tracked]))
    return CatalogSnapshot(
        server_version=f"{major}.1",
        server_major=major,
        database="db",
        objects=objects,
        tracking_schema="drizzle",
        tracking_table="__drizzle_migrations",
        tracking_present=True,
        tracking_readable=True,
        tracking_rows=rows,
    )


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_the_state_after_the_tracked_prefix_is_safe_or_needs_the_rest(k: int) -> None:
    report = validate(JOURNAL, HISTORY, snapshot(STATES[k], k))
    assert report.status is (Verdict.SAFE if k == 3 else Verdict.NEEDS_MIGRATION)
    assert [m.tag for m in report.pending] == [m.tag for m in MIGRATIONS[k:]]
    assert report.matched_prefix == k
    assert report.replayed_on == "PostgreSQL 15.8 on a test"


def test_a_later_state_makes_the_migrations_between_untracked_present() -> None:
    report = validate(JOURNAL, HISTORY, snapshot(STATES[2], 1))
    assert [m.state for m in report.migrations] == [A, U, P]
    assert report.status is Verdict.PARTIAL_MIGRATION
    assert report.repairable


@pytest.mark.parametrize("tracked", [0, 1])  # 0: a schema built by `drizzle-kit push`
def test_a_data_only_migration_among_hand_run_ones_stays_pending_and_gets_no_row(
    tracked: int,
) -> None:
    # 0000 users, 0001 a seed (no catalog change), 0002 users.email. 0000 is tracked or not;
    # users.email was added by hand: whether the seed ran, the catalog cannot say.
    texts = ["create table", "insert into users", "add column"]
    seeded = tuple(
        Migration(i, tag, 100 * (i + 1), sql, hash_sql(sql))
        for i, (tag, sql) in enumerate(
            zip(["0000_users", "0001_seed", "0002_email"], texts, strict=True)
        )
    )
    journal = Journal("mem", "postgresql", seeded)
    history = dataclasses.replace(
        HISTORY,
        hashes=tuple(m.hash for m in seeded),
        deltas=(HISTORY.deltas[0], {}, HISTORY.deltas[1]),
    )
    found = snapshot(STATES[2], 0)
    rows = tuple(TrackingRow(i + 1, m.hash, m.when) for i, m in enumerate(seeded[:tracked]))
    report = validate(journal, history, dataclasses.replace(found, tracking_rows=rows))

    assert [m.state for m in report.migrations] == [A if tracked else U, P, U]
    assert report.status is Verdict.PARTIAL_MIGRATION
    assert report.repairable
    assert "The catalog cannot show whether 0001_seed ran" in report.recommendation
    # repair tracks what the catalog proves, never the seed: migrate will run it
    plan = plan_repair(report)
    assert [row.tag for row in plan.rows] == ["0000_users", "0002_email"][tracked:]
    assert plan.refusals == ()


def test_any_other_state_is_partial_with_the_exact_difference() -> None:
    found = dict(STATES[3])
    found["column public.users.email"] = props(type="text", not_null=False)  # by hand
    report = validate(JOURNAL, HISTORY, snapshot(found, 3))
    assert report.status is Verdict.PARTIAL_MIGRATION
    [drift] = [f for f in report.findings if f.code == "schema_drift"]
    assert "column public.users.email: not_null expected True, found False" in drift.message
    assert [m.state for m in report.migrations] == [A, T, A]
    assert not report.repairable


def test_a_missing_object_of_an_applied_migration_is_named() -> None:
    found = {k: v for k, v in STATES[3].items() if k != "index public.users_email"}
    report = validate(JOURNAL, HISTORY, snapshot(found, 3))
    assert report.status is Verdict.PARTIAL_MIGRATION
    assert report.migrations[2].state is T
    assert report.migrations[2].missing_objects == ("index public.users_email",)


def test_objects_no_migration_touches_are_a_warning_only() -> None:
    found = {**STATES[1], "table public.other_tool": props(kind="table"), "extension neon": props()}
    report = validate(JOURNAL, HISTORY, snapshot(found, 1))
    assert report.status is Verdict.NEEDS_MIGRATION
    [warning] = [f for f in report.findings if f.code == "untouched_objects"]
    assert warning.severity == "warning"
    assert "extension neon" in warning.message and "table public.other_tool" in warning.message


def test_another_major_version_on_the_shadow_is_said() -> None:
    report = validate(JOURNAL, HISTORY, snapshot(STATES[3], 3, major=16))
    assert report.status is Verdict.SAFE
    [finding] = [f for f in report.findings if f.code == "shadow_version"]
    assert "15" in finding.message and "16" in finding.message


def test_a_hole_that_commutes_is_no_drift() -> None:
    # 0001 was skipped (drizzle's `when` rule), 0002 applied: the catalog is exactly what
    # 0000 and 0002 build, so migrate may apply 0001 last.
    found = {**STATES[1], "index public.users_email": STATES[3]["index public.users_email"]}
    rows = (TrackingRow(1, MIGRATIONS[0].hash, 100), TrackingRow(2, MIGRATIONS[2].hash, 300))
    report = validate(JOURNAL, HISTORY, dataclasses.replace(snapshot(found, 0), tracking_rows=rows))
    assert [m.state for m in report.migrations] == [A, P, A]
    assert not [f for f in report.findings if f.code == "schema_drift"]


def test_a_tracking_row_without_created_at_is_said_drizzle_kit_would_rerun_everything() -> None:
    rows = (TrackingRow(1, MIGRATIONS[0].hash, None), TrackingRow(2, MIGRATIONS[1].hash, 200))
    report = validate(
        JOURNAL, HISTORY, dataclasses.replace(snapshot(STATES[2], 0), tracking_rows=rows)
    )
    assert report.status is Verdict.NEEDS_MIGRATION
    [finding] = [f for f in report.findings if f.code == "created_at_missing"]
    assert "tracking row 1 " in finding.message and finding.severity == "error"
    assert "would run every migration again" in report.recommendation
    assert not [
        f
        for f in validate(JOURNAL, HISTORY, snapshot(STATES[2], 2)).findings
        if f.code == "created_at_missing"
    ]


def test_a_text_tracked_once_per_entry_that_repeats_it_is_no_duplicate() -> None:
    grant = "GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader"
    twice = tuple(
        Migration(i, f"000{i}_grant", 100 * (i + 1), grant, hash_sql(grant)) for i in (0, 1)
    )
    history = History(
        hashes=tuple(m.hash for m in twice),
        initial=BASE,
        deltas=(delta(BASE, BASE), delta(BASE, BASE)),
        server="PostgreSQL 15.8 on a test",
        server_major=15,
    )

    def duplicates(rows: int) -> list[str]:
        tracked = tuple(TrackingRow(i + 1, hash_sql(grant), 100 * (i + 1)) for i in range(rows))
        seen = dataclasses.replace(snapshot(BASE, 0), tracking_rows=tracked)
        report = validate(Journal("mem", "postgresql", twice), history, seen)
        return [f.message for f in report.findings if f.code == "duplicate_tracking_row"]

    assert duplicates(2) == []  # drizzle wrote a row per entry
    assert len(duplicates(3)) == 1


def test_out_of_order_names_what_drizzle_would_skip() -> None:
    m0, m1, m2 = (
        Migration(0, "0000_m", 100, "a", hash_sql("a")),
        Migration(1, "0001_m", 300, "b", hash_sql("b")),
        Migration(2, "0002_m", 200, "c", hash_sql("c")),
    )
    journal = Journal("mem", "postgresql", (m0, m1, m2))
    history = History(
        hashes=(m0.hash, m1.hash, m2.hash),
        initial=BASE,
        deltas=(
            {"table public.a": (None, props(kind="table"))},
            {"table public.b": (None, props(kind="table"))},
            {},
        ),
        server="test",
        server_major=15,
    )
    objects = {**BASE, "table public.a": props(kind="table"), "table public.b": props(kind="table")}
    found = CatalogSnapshot(
        server_version="15.1",
        server_major=15,
        database="db",
        objects=objects,
        tracking_schema="drizzle",
        tracking_table="__drizzle_migrations",
        tracking_present=True,
        tracking_readable=True,
        tracking_rows=(TrackingRow(1, m0.hash, 100), TrackingRow(2, m1.hash, 300)),
    )
    report = validate(journal, history, found)
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


def test_the_report_prints_tags_that_look_like_markup_as_written() -> None:
    from rich.console import Console

    from orchestrator.render import validation
    from orchestrator.validation import MigrationState, MigrationStatus, ValidationReport

    def status(i: int, state: MigrationState, missing: tuple[str, ...] = ()) -> MigrationStatus:
        applied = state is not MigrationState.TRACKED_MISSING
        return MigrationStatus(f"{i:04d}_[x]m", "h", i, state, applied, missing, missing, missing)

    statuses = [status(i, MigrationState.APPLIED) for i in range(50)]
    statuses[49] = status(49, MigrationState.TRACKED_MISSING, ("table public.t",))
    report = ValidationReport(Verdict.PARTIAL_MIGRATION, (), tuple(statuses), (), "look")
    console = Console(record=True, width=100, soft_wrap=True)
    validation(console, report, "postgresql://db")
    text = console.export_text()
    assert "… 49 applied: 0000_[x]m … 0048_[x]m" in text  # the folded row
    assert "0049_[x]m missing: table public.t" in text
