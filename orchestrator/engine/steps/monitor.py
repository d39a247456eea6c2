"""Watch production after the push: HTTP and SQL checks for a window."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.engine.outcomes import FailedCheck, MonitorOutcome
from orchestrator.engine.steps.base import RunContext
from orchestrator.monitor import Check, CheckResult, http_check, sql_check, watch


def build_checks(ctx: RunContext) -> list[Check]:
    """The playbook's checks as callables."""
    spec = ctx.playbook.monitor
    checks = [
        http_check(h.url, expect_status=h.expect_status, timeout=h.timeout, name=h.label)
        for h in spec.http
    ]
    checks += [
        sql_check(ctx.database_url, name=s.name, query=s.query, max=s.max, min=s.min)
        for s in spec.sql
    ]
    return checks


@dataclass(frozen=True)
class MonitorStep:
    """Run every check each interval for the window; too many failures end it early."""

    name: str = "monitor"

    def run(self, ctx: RunContext) -> MonitorOutcome:
        spec = ctx.playbook.monitor

        def on_result(result: CheckResult, failures: int, round_number: int) -> None:
            ctx.log.info(
                "check",
                check=result.name,
                kind=result.kind,
                ok=result.ok,
                detail=result.detail,
                round=round_number,
                failures=failures,
            )
            mark = "ok" if result.ok else "FAIL"
            ctx.on_progress(
                f"monitor round {round_number}: {mark} {result.name}: {result.detail} "
                f"(failures {failures}/{spec.failures_allowed} allowed)"
            )

        report = watch(
            build_checks(ctx),
            duration=spec.duration,
            interval=spec.interval,
            failures_allowed=spec.failures_allowed,
            on_result=on_result,
        )
        return MonitorOutcome(
            healthy=report.healthy,
            rounds=report.rounds,
            failures=report.failures,
            failures_allowed=spec.failures_allowed,
            ended_early=report.ended_early,
            elapsed_s=round(report.elapsed, 3),
            failed_checks=[
                FailedCheck(check=r.name, detail=r.detail) for r in report.results if not r.ok
            ][:20],
        )

    def done(self, ctx: RunContext) -> MonitorOutcome | None:
        return None  # a resumed run watches a fresh window
