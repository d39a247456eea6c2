"""What a rehearsal reports: each step as rehearsed, the prediction, and the exit code the
real deploy would end with; and the bounds a rehearsal on production keeps to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ExitCode
from orchestrator.gitrepo import TrialMerge
from orchestrator.redaction import redact, redact_url
from orchestrator.validation import ValidationReport

if TYPE_CHECKING:
    from orchestrator.engine.platform_rehearsal import PlatformLook

__all__ = ["DryRun", "RehearsalBounds", "RehearsedStep", "announcement"]


@dataclass
class RehearsedStep:
    """One step of the rehearsal: what it found and what the deploy would do."""

    name: str
    status: str  # "ok", "skipped" or "would_halt"
    summary: str
    details: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RehearsalBounds:
    """How much a rehearsal on production may hold: it runs the real DDL, rolled back."""

    lock_timeout: float = 1.0  # seconds a statement may wait for a lock
    statement_timeout: float = 60.0  # seconds a statement may run

    def within(self, lock_timeout: float, statement_timeout: float) -> RehearsalBounds:
        """These bounds, tightened to the given timeouts where those are shorter."""
        return RehearsalBounds(
            min(self.lock_timeout, lock_timeout), min(self.statement_timeout, statement_timeout)
        )


def announcement(rehearse_on: str | None, bounds: RehearsalBounds) -> str:
    """Pure: the line printed before a rehearsal starts: which kind runs, what production
    sees of it and within which bounds."""
    if rehearse_on is None:
        return (
            "rehearsal on production, in a transaction that is rolled back: lock waits at "
            f"most {bounds.lock_timeout:g}s, statements at most {bounds.statement_timeout:g}s; "
            "the DDL takes the locks the real migration takes (ACCESS EXCLUSIVE for most "
            "ALTER TABLE) while it runs"
        )
    if rehearse_on == "local":
        return (
            "rehearsal on a local schema-only copy of production: production is only read by "
            "pg_dump (ACCESS SHARE locks while the schema is dumped, waited for at most "
            f"{bounds.lock_timeout:g}s: DDL waits for them, reads and writes do not); the "
            "migrations run on the copy"
        )
    if rehearse_on == "neon-branch":
        return (
            "rehearsal on a temporary Neon branch of production (migrated for real, then "
            "deleted): production's database gets no connection"
        )
    return (
        f"rehearsal on another database, {redact_url(rehearse_on)} (migrated for real): "
        "production is only asked which database it is"
    )


@dataclass
class DryRun:
    """The rehearsal's plan and the exit code the real deploy would end with."""

    kind: str = "production, rolled back"
    steps: list[RehearsedStep] = field(default_factory=list)
    exit_code: ExitCode = ExitCode.OK
    report: ValidationReport | None = None  # the database now
    predicted: ValidationReport | None = None  # after the migrations, as rehearsed
    merge: TrialMerge | None = None
    warnings: list[str] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=dict)  # known before a step ends
    platforms: PlatformLook | None = None  # what GitHub and the release gate said
    # What the prediction rests on without having been tried (a migration not rehearsed).
    caveats: list[str] = field(default_factory=list)

    def step(self, name: str, summary: str, details: list[str] | None = None) -> None:
        """Record a step that would go ahead."""
        self.steps.append(RehearsedStep(name, "ok", summary, details or []))

    def skip(self, name: str, summary: str) -> None:
        """Record a step the deploy would skip."""
        self.steps.append(RehearsedStep(name, "skipped", summary))

    def halt(
        self, name: str, code: ExitCode, summary: str, details: list[str] | None = None
    ) -> DryRun:
        """Record that the real run would stop at step ``name``, with ``code``."""
        done = next((s for s in reversed(self.steps) if s.name == name), None)
        if done is not None and done.status == "ok":  # it ran; the route stops after it
            done.status, done.summary = "would_halt", summary
            done.details = details if details is not None else done.details
        else:
            self.steps.append(RehearsedStep(name, "would_halt", summary, details or []))
        self.exit_code = code
        return self

    def details_of(self, name: str) -> list[str]:
        """What is known of step ``name``'s details (for a halt there)."""
        done = next((s for s in reversed(self.steps) if s.name == name), None)
        return list(done.details if done is not None else self.details.get(name, []))

    @property
    def verdict(self) -> str:
        """The predicted end of the deploy, in one line."""
        if self.exit_code is ExitCode.OK:
            return "the deploy would succeed (if production stays healthy while it is watched)"
        halted = next(s for s in self.steps if s.status == "would_halt")
        return f"the deploy would HALT at {halted.name} (exit {int(self.exit_code)})"

    @property
    def halt_line(self) -> str | None:
        """One line saying where and why the deploy would halt (None if it would not)."""
        halted = next((s for s in self.steps if s.status == "would_halt"), None)
        if halted is None:
            return None
        line = f"the deploy would halt at {halted.name} (exit {int(self.exit_code)}): "
        return redact(line + halted.summary)  # a check's URL may carry its credential

    @property
    def lines(self) -> list[str]:
        """The plan as text, one line per step and detail."""
        marks = {"ok": "ok  ", "skipped": "skip", "would_halt": "HALT"}
        lines: list[str] = []
        for step in self.steps:
            lines.append(f"[{marks[step.status]}] {step.name}: {step.summary}")
            lines.extend(f"         {detail}" for detail in step.details)
        lines.append(f"prediction: {self.verdict}")
        lines.extend(f"caveat: {caveat}" for caveat in self.caveats)
        lines.append(f"rehearsed on: {self.kind}; nothing was committed to production")
        return [redact(line) for line in lines]  # a check's URL may carry its credential

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "rehearsed_on": self.kind,
            "exit_code": int(self.exit_code),
            "prediction": self.verdict,
            "caveats": self.caveats,
            "warnings": self.warnings,
            "steps": [asdict(s) for s in self.steps],
            "merge": None
            if self.merge is None
            else {
                "outcome": self.merge.outcome,
                "source_commit": self.merge.source_commit,
                "target_commit": self.merge.target_commit,
                "conflicts": list(self.merge.conflicts),
            },
            "validation": self.report.to_json() if self.report else None,
            "predicted_validation": self.predicted.to_json() if self.predicted else None,
            "plan": self.lines,
        }
