"""The validation report and its vocabulary: verdicts, migration states, checks, findings.

Plain frozen values, rendered by the CLI as a table or JSON; nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from orchestrator.errors import DatabaseError, ExitCode, UsageError


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


#: States that only a human can reconcile (all but applied and pending): migrate refuses to
#: run over them.
UNRECONCILED = frozenset(MigrationState) - {MigrationState.APPLIED, MigrationState.PENDING}

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
    row_hashes: tuple[str, ...] = ()  # the hash of each tracking row
    # j when the schema is exactly the state after the journal's first j entries.
    matched_prefix: int | None = None
    replayed_on: str = ""  # the shadow server the history was replayed on
    # The schema is exactly the state of the tracked migrations and the untracked_present
    # ones: tracking those is all it takes (what ``repair`` may do).
    repairable: bool = False
    # The objects that differ from the catalog the tracked migrations build (schema_drift).
    drifted: tuple[str, ...] = ()
    # What would still differ were the untracked migrations found in the database tracked.
    repair_differences: tuple[str, ...] = ()

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

    def first_error(self, default: str) -> str:
        """The message of the first error finding (``default`` when there is none)."""
        return next((f.message for f in self.findings if f.severity == "error"), default)

    def refuse_unjudged(self) -> None:
        """Before writing: DatabaseError on ERROR (cannot tell); UsageError when the tracking
        table is missing where asked but exists in another schema (a mistyped schema)."""
        if self.status is Verdict.ERROR:
            raise DatabaseError(self.first_error("cannot tell the migration state"))
        for finding in self.findings:
            if finding.code == "tracking_table_wrong_schema":
                raise UsageError(f"{finding.message}; check the tracking schema: nothing changed")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document: status, checks, migrations, findings, recommendation."""
        return {
            "status": self.status.value,
            "exit_code": int(self.exit_code),
            "database": self.database,
            # Spelled out, not asdict: a large folder has thousands of checks, and asdict
            # deep-copies every field.
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
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
            "findings": [asdict(f) for f in self.findings],  # four plain fields each
            "schema_matches_prefix": self.matched_prefix,
            "replayed_on": self.replayed_on,
            "recommendation": self.recommendation,
        }


_PARTS = frozenset({"column", "constraint", "trigger", "policy", "rule"})


def summarize_missing(missing: Sequence[str]) -> list[str]:
    """Missing objects for people: a missing table stands for its columns and constraints."""
    tables = {key.split(" ", 1)[1] for key in missing if key.startswith("table ")}
    parts: dict[str, int] = {}
    lines = []
    for key in missing:
        kind, _, identity = key.partition(" ")
        parent = identity.rsplit(".", 1)[0]
        if kind in _PARTS and parent in tables:
            parts[parent] = parts.get(parent, 0) + 1
        elif kind != "table":
            lines.append(key)
    return [
        f"table {name}"
        + (f" (and its {parts[name]} columns/constraints)" if parts.get(name) else "")
        for name in sorted(tables)
    ] + lines  # tables first
