"""The state table, its guards and the rollback plan: pure functions over a run record."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from orchestrator.db.retry import RetryPolicy, call_with_retry, is_transient
from orchestrator.engine.machine import (
    LIVE,
    STATES,
    TERMINAL,
    TRANSITIONS,
    RunModel,
    build_machine,
    edges_from,
    halt_exit_code,
)
from orchestrator.engine.outcomes import BackupOutcome, StepOutcomes
from orchestrator.engine.rollback import rollback_plan
from orchestrator.errors import DatabaseError, ExitCode
from orchestrator.runs import PlannedMigration, RunRecord


@dataclass(frozen=True)
class Seen:
    """The world's facts as plain values: the guards' decisions, tested without I/O."""

    pending: frozenset[str] = frozenset({"0009_x"})  # the tags the tracking rows miss
    remote_has_release: bool = True
    dump_ok: bool = True
    commit_known: bool = True
    pull_merged: bool = True
    release_served: bool = True
    production: str = "SAFE"  # validate's verdict on production now

    def untracked(self) -> frozenset[str]:
        return self.pending

    def remote_ships(self, commit: str) -> bool:
        return self.remote_has_release

    def commit_exists(self, commit: str) -> bool:
        return self.commit_known

    def dump_intact(self, outcome: BackupOutcome) -> bool:
        return self.dump_ok

    def backup_branch_exists(self, outcome: BackupOutcome) -> bool:
        return self.dump_ok  # the same fact for a Neon branch: the backup is still there

    def pull_request_merged(self, number: int) -> bool:
        return self.pull_merged

    def release_live(self, commit: str) -> bool:
        return self.release_served

    def release_verdict(self) -> str:
        return self.production


SEEN = Seen()


def record(**steps: dict[str, object]) -> RunRecord:
    r = RunRecord(run_id="20251021T000000Z-abcdef", playbook="/p.yaml", name="r")
    r.steps = StepOutcomes.model_validate(steps)  # as state.json holds them
    r.source_commit = "a" * 40
    return r


def test_every_live_state_has_steps_and_a_way_out() -> None:
    for state in STATES:
        if state in TERMINAL:
            continue
        assert state in LIVE
        assert edges_from(state), state
    assert {e.dest for e in TRANSITIONS} | {"pending", "halted", "failed"} == set(STATES)


@pytest.mark.parametrize(
    ("verdict", "trigger", "dest"),
    [("SAFE", "skip_migrate", "revalidated"), ("NEEDS_MIGRATION", "migrate", "migrated")],
)
def test_validate_routes_by_verdict(verdict: str, trigger: str, dest: str) -> None:
    r = record(validate={"status": verdict}, migrate={"applied": []})
    fired = [e for e in edges_from("validated") if all(g(r, SEEN) for g in e.guards)]
    assert [(e.trigger, e.dest) for e in fired][:1] == [(trigger, dest)]
    model = RunModel(r, SEEN)
    build_machine(model, "validated")
    assert getattr(model, trigger)() is True and model.state == dest


@pytest.mark.parametrize(
    ("verdict", "code"),
    [("PARTIAL_MIGRATION", ExitCode.PARTIAL), ("ERROR", ExitCode.ERROR)],
)
def test_partial_and_error_halt_validate(verdict: str, code: ExitCode) -> None:
    r = record(validate={"status": verdict})
    assert not any(all(g(r, SEEN) for g in e.guards) for e in edges_from("backup_checked"))
    assert halt_exit_code("backup_checked", r) is code
    model = RunModel(r, SEEN)
    build_machine(model, "backup_checked")
    assert model.validate() is False and model.state == "backup_checked"  # type: ignore[attr-defined]


def test_revalidate_must_be_safe_and_monitor_healthy() -> None:
    r = record(revalidate={"status": "NEEDS_MIGRATION"}, monitor={"healthy": False})
    assert not any(all(g(r, SEEN) for g in e.guards) for e in edges_from("migrated"))
    assert halt_exit_code("migrated", r) is ExitCode.GUARD_FAILED
    assert not any(all(g(r, SEEN) for g in e.guards) for e in edges_from("merged"))
    assert halt_exit_code("merged", r) is ExitCode.MONITOR_UNHEALTHY


def test_machine_refuses_skipping_states() -> None:
    from transitions.core import MachineError

    model = RunModel(record(), SEEN)
    build_machine(model, "pending")
    with pytest.raises(MachineError):
        model.merge()  # type: ignore[attr-defined]


def test_rollback_plan_for_each_stopping_point() -> None:
    nothing = rollback_plan(record(preflight={"remote": "origin", "target": "main"}))
    assert any("nothing was merged" in line for line in nothing)
    assert any("applied no migration" in line for line in nothing)

    migrated = record(
        preflight={"remote": "origin", "target": "main"},
        backup={
            "kind": "restore_point",
            "taken_at": "2025-10-21 10:00:00+00",
            "wal_lsn": "0/1A2B",
            "database": "prod",
        },
        migrate={"applied": [{"tag": "0009_x"}, {"tag": "0010_y"}]},
    )
    plan = "\n".join(rollback_plan(migrated))
    assert "0009_x, 0010_y" in plan and "0/1A2B" in plan and "2025-10-21 10:00:00+00" in plan

    pushed = record(
        preflight={"remote": "origin", "target": "main"},
        migrate={"applied": []},
        merge={
            "pushed_commit": "b" * 40,
            "previous_target_commit": "c" * 40,
            "merge_commit": "b" * 40,
            "fast_forward": False,
        },
    )
    plan = "\n".join(rollback_plan(pushed))
    assert f"git revert --no-edit -m 1 {'b' * 40}" in plan
    assert "git push origin main" in plan


def test_transient_errors_are_told_from_answers() -> None:
    assert is_transient(psycopg.OperationalError("connection refused"))
    assert is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert is_transient(DatabaseError("x", transient=True))
    # What libpq says while a restarted server replays its WAL (no SQLSTATE on connect).
    assert is_transient(
        psycopg.OperationalError(
            'connection to server at "127.0.0.1", port 5432 failed: '
            "FATAL:  the database system is not yet accepting connections"
        )
    )
    assert not is_transient(DatabaseError("x"))
    assert not is_transient(psycopg.errors.UndefinedTable("relation does not exist"))
    assert not is_transient(psycopg.errors.LockNotAvailable("lock timeout"))
    assert not is_transient(psycopg.errors.QueryCanceled("statement timeout"))
    assert is_transient(psycopg.errors.AdminShutdown("terminating connection"))
    assert not is_transient(ValueError("x"))


def test_retry_policy_retries_only_transient_failures() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise DatabaseError("refused", transient=True)
        return "ok"

    policy = RetryPolicy(attempts=5, initial=0.5, max_wait=0.75, jitter=0.0)
    assert call_with_retry(flaky, policy, sleep=waits.append) == "ok"
    assert len(calls) == 3 and waits == [0.5, 0.75]

    def broken() -> str:
        calls.append(1)
        raise DatabaseError("syntax error")

    calls.clear()
    with pytest.raises(DatabaseError):
        call_with_retry(broken, policy, sleep=waits.append)
    assert len(calls) == 1


def test_retry_notices_number_every_attempt_and_the_last_error_is_raised() -> None:
    """The first attempt runs before tenacity is loaded; its failure still counts as
    attempt 1 of the policy, with the policy's wait."""
    notices: list[tuple[int, str, float]] = []
    waits: list[float] = []
    attempts = iter(range(1, 10))

    def down() -> str:
        raise DatabaseError(f"refused {next(attempts)}", transient=True)

    policy = RetryPolicy(attempts=3, initial=0.25, max_wait=10.0, jitter=0.0)
    with pytest.raises(DatabaseError, match="refused 3"):
        call_with_retry(
            down,
            policy,
            on_retry=lambda n, error, wait: notices.append((n, str(error), wait)),
            sleep=waits.append,
        )
    assert notices == [(1, "refused 1", 0.25), (2, "refused 2", 0.5)]
    assert waits == [0.25, 0.5]
    with pytest.raises(DatabaseError, match="refused 4"):  # one attempt: no retry at all
        call_with_retry(down, RetryPolicy.none(), sleep=waits.append)
    assert waits == [0.25, 0.5]


def test_guards_check_the_world_not_only_the_record() -> None:
    from orchestrator.engine.machine import (
        backup_recorded,
        merge_pushed,
        migration_recorded,
        preflight_passed,
    )

    r = record(
        preflight={"ok": True, "source_commit": "a" * 40},
        backup={"kind": "pg_dump", "path": "/d", "sha256": "x"},
        migrate={"applied": [{"tag": "0009_x"}]},
        merge={"pushed_commit": "b" * 40},
    )
    r.planned = [PlannedMigration(tag="0009_x", hash="h9")]
    world = Seen(pending=frozenset())
    assert all(g(r, world) for g in (preflight_passed, backup_recorded, merge_pushed))
    assert migration_recorded(r, world)
    assert not preflight_passed(r, Seen(commit_known=False))
    assert not backup_recorded(r, Seen(dump_ok=False))
    assert not migration_recorded(r, Seen(pending=frozenset({"0009_x"})))  # rows deleted by hand
    assert not merge_pushed(r, Seen(remote_has_release=False))  # the push was undone


def test_each_routing_guard_says_no_when_its_verdict_is_not_there() -> None:
    from orchestrator.engine.machine import (
        already_safe,
        monitor_healthy,
        needs_migration,
        revalidated_safe,
        verdict_deployable,
    )

    safe = record(validate={"status": "SAFE"})
    partial = record(validate={"status": "PARTIAL_MIGRATION"}, revalidate={"status": "ERROR"})
    assert needs_migration(record(validate={"status": "NEEDS_MIGRATION"}), SEEN)
    assert not needs_migration(safe, SEEN)
    assert already_safe(safe, SEEN) and not already_safe(partial, SEEN)
    assert not verdict_deployable(partial, SEEN)
    assert not revalidated_safe(partial, SEEN)
    assert not monitor_healthy(record(monitor={"healthy": False}), SEEN)


def test_every_live_state_declares_its_dead_end() -> None:
    from orchestrator.engine.machine import LIVE, halt_reason

    assert set(LIVE) == {s for s in STATES if s not in TERMINAL}
    pushed_gone = record(preflight={"remote": "origin", "target": "main"})
    assert "no longer on origin/main" in halt_reason("monitored", pushed_gone)
    assert halt_exit_code("monitored", pushed_gone) is ExitCode.GUARD_FAILED
    missing_rows = record(validate={"status": "NEEDS_MIGRATION"})
    assert halt_exit_code("validated", missing_rows) is ExitCode.PARTIAL


def test_resume_re_enters_through_the_machine() -> None:
    from orchestrator.engine.machine import reopen_trigger

    model = RunModel(record(), SEEN)
    build_machine(model, "halted")
    assert getattr(model, reopen_trigger("migrated"))() is True and model.state == "migrated"


def test_the_dead_end_and_the_plan_read_what_the_steps_recorded() -> None:
    from orchestrator.engine.machine import halt_reason

    r = record(
        preflight={"ok": True, "remote": "up", "target": "prod", "source_commit": "a" * 40},
        backup={"kind": "restore_point", "taken_at": "t", "wal_lsn": "0/1"},
        migrate={"applied": [{"tag": "0009_x"}]},
        merge={"pushed_commit": "b" * 40, "previous_target_commit": "c" * 40},
        monitor={"healthy": False, "failures": 2, "failed_checks": [{"check": "h", "detail": "5"}]},
    )
    assert halt_reason("live", r).endswith("2 failed check(s) (allowed None); first: h: 5")
    plan = "\n".join(rollback_plan(r))
    assert f"git commit-tree '{'c' * 40}^{{tree}}' -p {'b' * 40} " in plan
    assert "git push up prod" in plan
    assert "this run applied 0009_x" in plan and "WAL LSN 0/1" in plan
    assert "applied no migration" in "\n".join(rollback_plan(record()))


def test_a_neon_backup_branch_counts_only_while_it_exists() -> None:
    from orchestrator.engine.machine import backup_recorded

    r = record(backup={"kind": "neon_branch", "branch_id": "br-pre", "lsn": "0/1A"})
    assert backup_recorded(r, SEEN)
    assert not backup_recorded(r, Seen(dump_ok=False))  # deleted in the console
    assert not backup_recorded(record(backup={"kind": "neon_branch", "branch_id": "b"}), SEEN)


def test_the_release_gate_lets_the_monitor_start_only_once_the_pushed_commit_is_live() -> None:
    from orchestrator.engine.machine import halt_reason, release_live

    pushed = {"pushed_commit": "b" * 40, "previous_target_commit": "c" * 40}
    live = record(merge=pushed, release={"live": True, "commit": "b" * 40})
    assert release_live(live, SEEN)
    assert not release_live(live, Seen(release_served=False))  # rolled back since: not live
    assert [e.dest for e in edges_from("merged")] == ["live"]
    assert [e.dest for e in edges_from("live")] == ["monitored"]
    model = RunModel(live, SEEN)
    build_machine(model, "merged")
    assert model.go_live() is True and model.state == "live"  # type: ignore[attr-defined]
    # Another commit live, no gate outcome, or a failed deployment: the run halts, exit 22.
    other = record(merge=pushed, release={"live": True, "commit": "d" * 40})
    failed = record(
        merge=pushed,
        release={"live": False, "commit": "b" * 40, "ending": "failed", "detail": "dpl_1 ERROR"},
    )
    for r in (other, record(merge=pushed), failed):
        assert not release_live(r, SEEN)
        assert halt_exit_code("merged", r) is ExitCode.MONITOR_UNHEALTHY
    assert "the deployment failed: dpl_1 ERROR" in halt_reason("merged", failed)
    timed_out = record(merge=pushed, release={"live": False, "ending": "timeout", "detail": "x"})
    assert "not live after the release timeout" in halt_reason("merged", timed_out)


def test_a_merge_through_a_pull_request_counts_only_once_github_says_merged() -> None:
    from orchestrator.engine.machine import merge_pushed

    r = record(merge={"pushed_commit": "b" * 40, "pull_request": 7})
    assert merge_pushed(r, SEEN)
    assert not merge_pushed(r, Seen(pull_merged=False))  # reopened or never merged
    assert not merge_pushed(r, Seen(remote_has_release=False))


@dataclass(frozen=True)
class OnlyHolds(Seen):
    """A remote whose target holds exactly ``commit`` (a squash commit, say), and not the
    source commit the run pinned."""

    commit: str = ""

    def remote_ships(self, commit: str) -> bool:
        return commit == self.commit


def test_the_guard_follows_the_commit_the_merge_made_not_the_source_commit() -> None:
    from orchestrator.engine.machine import merge_pushed

    squash = "c" * 40  # GitHub's squash commit: it does not contain the source ("a" * 40)
    r = record(merge={"pushed_commit": squash, "pull_request": 7, "merge_method": "squash"})
    assert merge_pushed(r, OnlyHolds(commit=squash))
    assert not merge_pushed(r, OnlyHolds(commit="a" * 40))  # the squash commit is gone


def test_the_way_back_is_read_again_right_before_migrating() -> None:
    from orchestrator.engine.machine import LIVE, GuardedStep, backup_before_migrating

    needs = record(
        validate={"status": "NEEDS_MIGRATION"},
        backup={"kind": "pg_dump", "path": "/d", "sha256": "x"},
    )
    assert backup_before_migrating(needs, SEEN)
    assert not backup_before_migrating(needs, Seen(dump_ok=False))  # deleted while down
    # SAFE: nothing to migrate, nothing changes, no way back needed.
    safe = record(validate={"status": "SAFE"}, backup={"kind": "pg_dump", "path": "/d"})
    assert backup_before_migrating(safe, Seen(dump_ok=False))
    [migrate] = LIVE["validated"].steps
    assert isinstance(migrate, GuardedStep) and migrate.name == "migrate"
    assert [g.__name__ for g in migrate.guards] == ["backup_before_migrating"]


def test_revalidate_moves_on_only_while_the_applied_rows_are_tracked() -> None:
    r = record(revalidate={"status": "SAFE"}, migrate={"applied": [{"tag": "0009_x"}]})
    r.planned = [PlannedMigration(tag="0009_x", hash="h9")]
    assert [e.trigger for e in edges_from("migrated") if all(g(r, SEEN) for g in e.guards)] == []
    tracked = Seen(pending=frozenset())
    assert [e.trigger for e in edges_from("migrated") if all(g(r, tracked) for g in e.guards)] == [
        "revalidate"
    ]
    assert halt_exit_code("migrated", r) is ExitCode.PARTIAL
    assert halt_exit_code("migrated", record(revalidate={"status": "ERROR"})) is ExitCode.ERROR


def test_go_live_needs_the_release_still_on_the_remote() -> None:
    from orchestrator.engine.machine import halt_reason

    pushed = {"pushed_commit": "b" * 40}
    r = record(
        preflight={"remote": "origin", "target": "main"},
        merge=pushed,
        release={"live": True, "commit": "b" * 40},
    )
    assert [e.trigger for e in edges_from("merged") if all(g(r, SEEN) for g in e.guards)] == [
        "go_live"
    ]
    reset = Seen(remote_has_release=False)
    assert not any(all(g(r, reset) for g in e.guards) for e in edges_from("merged"))
    # The gate saw it live, so the guard that said no is the remote's: 21, not 22.
    assert halt_exit_code("merged", r) is ExitCode.GUARD_FAILED
    assert "no longer on origin/main" in halt_reason("merged", r)


def test_production_is_read_again_before_merge_release_gate_and_monitor() -> None:
    from orchestrator.engine.machine import LIVE, GuardedStep, production_holds_release

    r = record(revalidate={"status": "SAFE"})
    assert production_holds_release(r, SEEN)
    for verdict in ("NEEDS_MIGRATION", "PARTIAL_MIGRATION"):  # undone, or another database
        assert not production_holds_release(r, Seen(production=verdict))
    for state, step in (("revalidated", "merge"), ("merged", "release"), ("live", "monitor")):
        [guarded] = LIVE[state].steps
        assert isinstance(guarded, GuardedStep) and guarded.name == step
        assert [g.__name__ for g in guarded.guards] == ["production_holds_release"]
        assert guarded.code is ExitCode.PARTIAL
