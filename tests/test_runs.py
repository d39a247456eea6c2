"""Run records on disk: ids, round-trips, atomic saves, lookups, listing and the run lock."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.outcomes import (
    AppliedMigration,
    BackupOutcome,
    MigrateOutcome,
    ReleaseOutcome,
    StepOutcomes,
    ValidationOutcome,
)
from orchestrator.errors import ExitCode, GuardError, UsageError
from orchestrator.runs import RunRecord, RunStore, Transition, new_run_id

REPO_ROOT = Path(__file__).resolve().parent.parent

# A second process driving a run: takes the lock, says so, holds it until stdin closes.
HOLD_LOCK = """
import sys
from pathlib import Path
from orchestrator.runs import RunStore
with RunStore(Path(sys.argv[1])).lock(sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()
"""

# A process saving big records in a tight loop, to be killed at a random moment.
SAVE_FOREVER = """
import sys
from pathlib import Path
from orchestrator.runs import RunStore
store = RunStore(Path(sys.argv[1]))
record = store.load(sys.argv[2])
blob = "x" * 300_000
i = 0
while True:
    i += 1
    record.state = f"s{i}"
    record.halt_reason = str(i)
    record.rollback_plan = [blob]
    store.save(record)
    if i == 2:
        print("saving", flush=True)
"""


def make_record(run_id: str | None = None, **changes: Any) -> RunRecord:
    record = RunRecord(
        run_id=new_run_id() if run_id is None else run_id,
        playbook="/srv/release/playbook.yaml",
        name="release-42",
    )
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def full_record() -> RunRecord:
    return RunRecord(
        run_id="20251021T143005Z-3fa9c2",
        playbook="/srv/release/playbook.yaml",
        name="release-42",
        state="validated",
        created_at="2025-10-21T14:30:05.123456Z",
        updated_at="2025-10-21T14:31:00.000001Z",
        source_commit="0123456789abcdef0123456789abcdef01234567",
        steps=StepOutcomes(
            backup=BackupOutcome(kind="restore_point", taken_at="t", wal_lsn="0/1", bytes=42),
            validation=ValidationOutcome(status="NEEDS_MIGRATION", pending=["0010_x", "0011_y"]),
            revalidate=ValidationOutcome(recommendation="ü"),
        ),
        transitions=[
            move("2025-10-21T14:30:06Z", "check_backup", "pending", "backup_checked"),
            move("2025-10-21T14:30:07Z", "validate", "backup_checked", "validated", "2 pending"),
        ],
        halt_reason="guard: lock_timeout",
        exit_code=21,
        rollback_plan=["git revert abc", "restore snap-1"],
    )


def move(at: str, trigger: str, source: str, dest: str, detail: str = "") -> Transition:
    return Transition(at=at, trigger=trigger, source=source, dest=dest, detail=detail)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / ".orchestrator")


# --- run ids ---------------------------------------------------------------------------


def test_new_run_id_is_utc_timestamp_plus_six_hex() -> None:
    plus_two = timezone(timedelta(hours=2))
    run_id = new_run_id(datetime(2025, 10, 21, 16, 30, 5, tzinfo=plus_two))
    assert re.fullmatch(r"20251021T143005Z-[0-9a-f]{6}", run_id)
    assert new_run_id(datetime(2025, 10, 21, 14, 30, 5)).startswith("20251021T143005Z-")


def test_new_run_id_defaults_to_now_and_is_random() -> None:
    before = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ids = {new_run_id() for _ in range(50)}
    after = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    assert len(ids) == 50
    assert all(before <= i.split("-")[0] <= after for i in ids)


def test_new_run_ids_sort_by_time() -> None:
    start = datetime(2025, 9, 30, 23, 59, 58, tzinfo=UTC)
    moments = [start + timedelta(seconds=s) for s in (0, 1, 2, 3600, 86400 * 40)]
    ids = [new_run_id(m) for m in moments]
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled) == ids


# --- record round-trip -----------------------------------------------------------------


def test_record_round_trips_exactly_through_json() -> None:
    record = full_record()
    data = json.loads(json.dumps(record.to_json()))
    again = RunRecord.from_json(data)
    assert again == record
    assert again.to_json() == data
    assert isinstance(again.transitions[0], Transition)


def test_record_defaults() -> None:
    record = make_record("r1")
    assert record.state == "pending"
    assert record.steps == StepOutcomes() and record.transitions == [] == record.rollback_plan
    assert datetime.fromisoformat(record.created_at).tzinfo is not None
    assert RunRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("run_id"), "run_id"),
        (lambda d: d.update(state=3), "state"),
        (lambda d: d.update(created_at="yesterday"), "created_at"),
        (lambda d: d.update(exit_code="21"), "exit_code"),
        (lambda d: d.update(exit_code=True), "exit_code"),
        (lambda d: d.update(steps={"backup": [1]}), "steps"),
        (lambda d: d.update(rollback_plan=[1]), "rollback_plan"),
        (lambda d: d.update(transitions=[{"at": "x"}]), "transitions.0"),
        (lambda d: d["transitions"][1].update(dest=None), "transitions.1.dest"),
        (lambda d: d["steps"]["validate"].update(pending="0010_x"), "steps.validate.pending"),
        (lambda d: d.update(surprise=1), "surprise"),
    ],
)
def test_from_json_rejects_malformed_records(mutate: Any, needle: str) -> None:
    data = full_record().to_json()
    mutate(data)
    with pytest.raises(UsageError, match=re.escape(needle)):
        RunRecord.from_json(data)


def test_from_json_rejects_non_objects() -> None:
    with pytest.raises(UsageError, match="valid dictionary"):
        RunRecord.from_json([1, 2])


# --- create / save / load --------------------------------------------------------------


def test_create_writes_the_record_and_refuses_duplicates(store: RunStore) -> None:
    record = full_record()
    run_dir = store.create(record)
    assert run_dir == store.state_dir / "runs" / record.run_id
    assert json.loads((run_dir / "state.json").read_text()) == record.to_json()
    assert store.load(record.run_id) == record
    with pytest.raises(UsageError, match="already exists"):
        store.create(record)
    assert store.load(record.run_id) == record


def test_save_persists_and_stamps_updated_at(store: RunStore) -> None:
    record = full_record()
    store.create(record)
    record.state = "migrated"
    record.steps.migrate = MigrateOutcome(applied=[AppliedMigration(tag="0010_x")])
    record.transitions.append(move("2025-10-21T14:32:00Z", "migrate", "validated", "migrated"))
    store.save(record)
    assert record.updated_at > "2025-10-21T14:31:00.000001Z"
    assert store.load(record.run_id) == record


def test_save_of_an_uncreated_run_is_refused(store: RunStore) -> None:
    with pytest.raises(UsageError, match="unknown run id"):
        store.save(make_record("never-created"))


def test_paths(store: RunStore) -> None:
    assert store.run_dir("abc") == store.state_dir / "runs" / "abc"
    assert store.audit_path("abc") == store.state_dir / "runs" / "abc" / "audit.jsonl"


def test_garbage_tmp_sibling_after_a_crash_does_not_hide_the_last_good_record(
    store: RunStore,
) -> None:
    record = full_record()
    store.create(record)
    record.state = "migrated"
    store.save(record)
    # What a crash between "write tmp" and "rename" leaves behind.
    run_dir = store.run_dir(record.run_id)
    (run_dir / ".state.json.crash1.tmp").write_bytes(b'{"run_id": "2025102')
    (run_dir / "state.json.tmp").write_bytes(b"\x00garbage")
    assert store.load(record.run_id) == record
    assert [r.run_id for r in store.list()] == [record.run_id]


def test_unserialisable_record_raises_before_touching_the_file(store: RunStore) -> None:
    record = full_record()
    store.create(record)
    before = store.record_path(record.run_id).read_bytes()
    stamp = record.updated_at
    record.steps.release = ReleaseOutcome(waited_s=float("nan"))  # not JSON
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        store.save(record)
    assert store.record_path(record.run_id).read_bytes() == before
    assert record.updated_at == stamp
    assert sorted(p.name for p in store.run_dir(record.run_id).iterdir()) == ["state.json"]


def test_a_name_that_is_not_utf8_is_refused_in_one_line_before_any_run(store: RunStore) -> None:
    """A playbook in a folder named in Latin-1 (surrogate-escaped by Python): bad input, in
    one line naming it, and no half-made run left behind (it was an internal error)."""
    record = make_record("latin", playbook=os.fsdecode(b"/srv/caf\xe9/release.yaml"))
    with pytest.raises(UsageError, match=r"not UTF-8: \"playbook\": \"/srv/caf\\udce9") as caught:
        store.create(record)
    assert len(str(caught.value).splitlines()) == 1
    assert not store.runs_dir.exists() or list(store.runs_dir.iterdir()) == []


def test_concurrent_saves_never_expose_a_half_written_record(store: RunStore) -> None:
    base = make_record("concurrent", rollback_plan=["y" * 100_000])
    store.create(base)
    written: set[str] = set()
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(n: int) -> None:
        record = store.load("concurrent")  # each thread its own record object
        try:
            for i in range(15):
                record.state = f"w{n}-{i}"
                record.halt_reason = record.state
                written.add(record.state)
                store.save(record)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        while not done.is_set():
            try:
                seen = store.load("concurrent")
                # the record is internally consistent: state and step output agree
                assert seen.state == (seen.halt_reason or "pending")
                json.loads(store.record_path("concurrent").read_bytes())
            except BaseException as exc:
                errors.append(exc)
                return

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert errors == []
    assert store.load("concurrent").state in written
    assert sorted(p.name for p in store.run_dir("concurrent").iterdir()) == ["state.json"]


def test_killing_a_saving_process_leaves_a_complete_record(store: RunStore) -> None:
    record = make_record("killed")
    store.create(record)
    rng = random.Random(1234)
    for _ in range(4):
        with subprocess.Popen(
            [sys.executable, "-c", SAVE_FOREVER, str(store.state_dir), "killed"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        ) as proc:
            try:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "saving"
                threading.Event().wait(rng.uniform(0, 0.05))
            finally:
                proc.send_signal(signal.SIGKILL)
        survivor = store.load("killed")
        assert survivor.state == f"s{survivor.halt_reason}"
        assert len(survivor.rollback_plan[0]) == 300_000


# --- lookups ---------------------------------------------------------------------------


def test_unknown_id_is_a_one_line_usage_error(store: RunStore) -> None:
    store.create(make_record("20251021T143005Z-aaaaaa"))
    with pytest.raises(UsageError) as info:
        store.load("20251021T143005Z-bbbbbb")
    assert info.value.exit_code == ExitCode.USAGE
    assert "unknown run id" in str(info.value)
    assert "\n" not in str(info.value)


def test_load_on_an_empty_state_dir(store: RunStore) -> None:
    with pytest.raises(UsageError, match="unknown run id"):
        store.load("20251021")
    assert store.list() == []


def test_unique_prefix_loads_and_ambiguous_prefix_is_refused(store: RunStore) -> None:
    a = make_record("20251021T143005Z-aaaaaa")
    b = make_record("20251021T143005Z-abbbbb")
    c = make_record("20251022T090000Z-cccccc")
    for r in (a, b, c):
        store.create(r)
    assert store.load("20251022") == c
    assert store.load("20251021T143005Z-aa") == a
    assert store.load(b.run_id) == b
    with pytest.raises(UsageError, match="ambiguous") as info:
        store.load("20251021T143005Z-a")
    assert a.run_id in str(info.value) and b.run_id in str(info.value)


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/etc/passwd", "", ".hidden", "x\ny"])
def test_ids_that_could_leave_the_runs_dir_are_refused(store: RunStore, bad: str) -> None:
    # A valid record right outside runs/ that traversal would reach.
    outside = store.state_dir / "x"
    outside.mkdir(parents=True)
    (outside / "state.json").write_text(json.dumps(make_record("x").to_json()))
    store.create(make_record("x"))
    with pytest.raises(UsageError, match="invalid run id") as info:
        store.load(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError):
        store.run_dir(bad)
    with pytest.raises(UsageError):
        store.create(make_record(bad))


def test_corrupt_record_is_a_one_line_usage_error(store: RunStore) -> None:
    good = make_record("20251021T143005Z-aaaaaa")
    store.create(good)
    path = store.record_path(good.run_id)
    for garbage in (b'{"run_id": "2025', b"\xff\xfe", b"[]", b'{"run_id": 1}'):
        path.write_bytes(garbage)
        with pytest.raises(UsageError) as info:
            store.load(good.run_id)
        assert info.value.exit_code == ExitCode.USAGE
        assert good.run_id in str(info.value) and "\n" not in str(info.value)


def test_record_naming_another_run_is_corrupt(store: RunStore) -> None:
    store.create(make_record("run-a"))
    store.record_path("run-a").write_text(json.dumps(make_record("run-b").to_json()))
    with pytest.raises(UsageError, match="names run 'run-b'"):
        store.load("run-a")


def test_missing_record_file_is_a_usage_error(store: RunStore) -> None:
    store.runs_dir.mkdir(parents=True)
    (store.runs_dir / "half-made").mkdir()
    with pytest.raises(UsageError, match="cannot read"):
        store.load("half-made")


# --- listing ---------------------------------------------------------------------------


def test_list_is_newest_first_and_skips_corrupt_dirs(store: RunStore) -> None:
    start = datetime(2025, 10, 21, 14, 0, 0, tzinfo=UTC)
    records = []
    for hours in (2, 0, 1):
        moment = start + timedelta(hours=hours)
        records.append(
            make_record(new_run_id(moment), created_at=moment.isoformat().replace("+00:00", "Z"))
        )
    for r in records:
        store.create(r)
    # Damage of every kind next to the good runs.
    (store.runs_dir / "20250101T000000Z-badbad").mkdir()
    (store.runs_dir / "20250101T000000Z-badbad" / "state.json").write_text("{not json")
    (store.runs_dir / "20250101T000000Z-empty0").mkdir()
    (store.runs_dir / "20250101T000000Z-wrong0").mkdir()
    (store.runs_dir / "20250101T000000Z-wrong0" / "state.json").write_text('{"run_id": 5}')
    (store.runs_dir / "notes.txt").write_text("hello")
    (store.runs_dir / ".trash").mkdir()
    listed = store.list()
    expected = sorted(records, key=lambda r: r.created_at, reverse=True)
    assert [r.run_id for r in listed] == [r.run_id for r in expected]
    assert listed == expected


# --- the run lock ----------------------------------------------------------------------


@contextlib.contextmanager
def lock_held_elsewhere(store: RunStore, run_id: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of ``run_id`` (it lets go when its stdin closes)."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store.state_dir), run_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "locked"
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def test_lock_held_by_another_process_is_a_guard_error(store: RunStore) -> None:
    run_id = "20251021T143005Z-aaaaaa"
    store.create(make_record(run_id))
    with lock_held_elsewhere(store, run_id) as proc:
        with pytest.raises(GuardError) as info, store.lock(run_id):
            pass
        assert str(info.value) == f"run {run_id} is in use by another process (pid {proc.pid})"
        assert info.value.exit_code == ExitCode.GUARD_FAILED
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait() == 0
    with store.lock("20251021"):  # free again once the holder let go; prefixes work
        pass


def test_lock_of_a_killed_holder_is_free(store: RunStore) -> None:
    store.create(make_record("crashed"))
    with lock_held_elsewhere(store, "crashed") as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with store.lock("crashed"):
        assert (store.run_dir("crashed") / "lock").read_text().strip() == str(os.getpid())


def test_lock_is_exclusive_within_one_process_too(store: RunStore) -> None:
    store.create(make_record("solo"))
    with (
        store.lock("solo"),
        pytest.raises(GuardError, match="in use by another process"),
        store.lock("solo"),
    ):
        pass
    with store.lock("solo"):  # released on exit
        pass


def test_lock_of_an_unknown_run_is_a_usage_error(store: RunStore) -> None:
    with pytest.raises(UsageError, match="unknown run id"), store.lock("nope"):
        pass


def test_a_run_named_like_markup_is_listed_as_written(
    store: RunStore, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import run

    store.create(make_record(name="hotfix [/api/v2] timeouts"))
    assert run(["runs", "--state-dir", str(store.state_dir)]) == 0
    assert "[/api/v2]" in capsys.readouterr().out  # as written, not read as a closing tag


@pytest.mark.parametrize("columns", ["60", "40"])
def test_a_narrow_terminal_cuts_no_state_of_the_runs_table(store: RunStore, columns: str) -> None:
    store.create(make_record(name="release-2025-10-21-hotfix", state="backup_checked"))
    store.create(make_record(name="r", state="revalidated"))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "runs", "--state-dir", str(store.state_dir)],
        env={**os.environ, "COLUMNS": columns},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "backup_checked" in done.stdout and "revalidated" in done.stdout
    assert "…" not in done.stdout  # the name and the time fold instead


def test_rollback_refusing_after_its_json_plan_prints_no_second_document(
    store: RunStore, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import run

    record = make_record(state="halted")
    store.create(record)
    assert run(["rollback", record.run_id, "--json", "--state-dir", str(store.state_dir)]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["run_id"] == record.run_id  # the plan, and nothing else
    assert captured.err.startswith("error: rollback changes production: pass --yes")
