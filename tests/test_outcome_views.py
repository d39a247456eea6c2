"""Outcomes are built and read through the typed views of ``engine/outcomes.py``: the console
line of a finished step reads its view (chosen by the step's name, not guessed from its keys),
and outcomes of the shape older runs wrote stay readable (pure)."""

from __future__ import annotations

from typing import Any

from orchestrator.engine.outcomes import (
    MergeOutcome,
    MonitorOutcome,
    PreflightOutcome,
    ReleaseOutcome,
)
from orchestrator.render import event_line


def step_end(step: str, outcome: dict[str, Any]) -> str | None:
    return event_line(
        {"event": "step_end", "timestamp": "2026-01-01T10:11:12Z", "step": step, "outcome": outcome}
    )


def test_each_step_line_reads_its_own_view() -> None:
    assert step_end("validate", {"status": "SAFE"}) == "10:11:12 step validate done: SAFE"
    assert step_end("migrate", {"applied": [{"tag": "0001_a"}, {"tag": "0002_b"}]}) == (
        "10:11:12 step migrate done: applied 0001_a, 0002_b"
    )
    assert step_end("migrate", {"applied": [], "skipped": "validate said SAFE"}) == (
        "10:11:12 step migrate done: validate said SAFE"
    )
    # A migrate outcome that happens to carry a status is still read as migrate's.
    assert step_end("migrate", {"applied": [], "after": "SAFE", "status": "x"}) == (
        "10:11:12 step migrate done: nothing"
    )
    assert step_end("backup", {"kind": "pg_dump", "path": "/d"}) == (
        "10:11:12 step backup done: pg_dump"
    )
    assert step_end("unknown", {"status": "SAFE"}) == "10:11:12 step unknown done"


def test_the_entries_steps_write_read_back_through_the_views() -> None:
    merged = MergeOutcome.entry(
        pushed_commit="b" * 40,
        previous_target_commit="c" * 40,
        merge_commit="b" * 40,
        fast_forward=False,
        pull_request=(7, "https://github.test/o/r/pull/7"),
    )
    view = MergeOutcome.parse(merged)
    assert (view.pull_request, view.pull_request_url) == (7, "https://github.test/o/r/pull/7")
    assert step_end("merge", merged) == (
        f"10:11:12 step merge done: merged pull request #7 (https://github.test/o/r/pull/7), "
        f"merge commit {'b' * 40}"
    )
    monitor = MonitorOutcome.entry(
        healthy=False,
        rounds=3,
        failures=2,
        failures_allowed=1,
        ended_early=True,
        elapsed_s=0.5,
        failed_checks=[("health", "500")],
    )
    assert MonitorOutcome.parse(monitor).first_failure == ("health", "500")
    assert step_end("monitor", monitor) == "10:11:12 step monitor done: UNHEALTHY (3 rounds)"
    release = ReleaseOutcome.entry("url", "timeout", {"commit": "b" * 40, "detail": "old"}, 30.0)
    assert ReleaseOutcome.parse(release).ending == "timeout" and release["live"] is False
    assert step_end("release", release) == "10:11:12 step release done: timeout (old)"
    preflight = PreflightOutcome.entry(
        repo="/r",
        remote="origin",
        source="staging",
        target="main",
        via="push",
        source_commit="a" * 40,
        target_commit="c" * 40,
        fast_forward=True,
        already_merged=False,
        migrations_dir="drizzle",
        migrations=["0001_a"],
    )
    assert PreflightOutcome.parse(preflight).ok
    assert step_end("preflight", preflight) == (
        f"10:11:12 step preflight done: source {'a' * 12}, trial merge clean"
    )


def test_outcomes_of_the_shape_older_runs_wrote_stay_readable() -> None:
    # Literal dicts as state.json of earlier versions holds them: same keys, same views.
    old_merge = {
        "pushed_commit": "b" * 40,
        "previous_target_commit": "c" * 40,
        "merge_commit": None,
        "fast_forward": True,
        "note": "found merged on resume: the interrupted attempt pushed",
    }
    assert MergeOutcome.parse(old_merge).as_result().fast_forward
    assert step_end("merge", old_merge) == f"10:11:12 step merge done: pushed {'b' * 12}"
    old_monitor = {"healthy": True, "rounds": 2, "failures": 0, "failed_checks": []}
    assert step_end("monitor", old_monitor) == "10:11:12 step monitor done: healthy (2 rounds)"
