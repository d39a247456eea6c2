"""A release carrying a non-transactional migration (issue 15) through the deploy: the
rehearsal predicts what the deploy does (the refusal without the opt-in; with it, the
concurrent migration not run on production, or run for real on a copy), a deploy killed
in the middle of the concurrent phase resumes and converges, and one failed or interrupted
there records the migrations that committed before it. Real PostgreSQL, real git, a real
killed process."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time

import psycopg
import pytest

from orchestrator.audit import read_events
from orchestrator.cli import run
from orchestrator.engine.run import resume
from orchestrator.errors import ExitCode
from orchestrator.runs import RunRecord
from tests.drizzle_helpers import tracking_rows
from tests.release_world import World, add_staging_migration
from tests.test_resume import assert_converged, deploy_process, kill, only_run

INDEX_TAG = "0012_case_index"
INDEX_NAME = "case_classifications_offering_idx"
INDEX_SQL = (
    f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{INDEX_NAME}" '
    'ON "case_classifications" ("service_offering");'
)


def opt_in(world: World) -> None:
    """``migrations.concurrent: true`` in the world's playbook."""
    text = world.playbook.read_text()
    world.playbook.write_text(re.sub(r"(statement_timeout: \w+)", r"\1, concurrent: true", text))


def dry_run(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *extra: str
) -> tuple[int, str]:
    """``deploy --dry-run`` through the CLI: its exit code and its output."""
    monkeypatch.setenv("DATABASE_URL", world.database_url)
    code = run(["deploy", "--playbook", str(world.playbook), "--dry-run", *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def production(world: World) -> tuple[int, bool, list[str]]:
    """Tracking rows, whether the release's index exists, and the columns 0011 adds."""
    with psycopg.connect(world.database_url) as conn:
        index = conn.execute("SELECT to_regclass(%s)", (INDEX_NAME,)).fetchone()
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'case_classifications' AND column_name = 'service_offering'"
        ).fetchall()
    return len(tracking_rows(world.database_url)), bool(index and index[0]), [c[0] for c in columns]


def test_without_the_opt_in_the_rehearsal_predicts_the_deploys_refusal(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_staging_migration(world, INDEX_TAG, [INDEX_SQL])
    code, out = dry_run(world, capsys, monkeypatch)
    assert code == 2
    assert "prediction: the deploy would HALT at migrate (exit 2)" in out
    # PostgreSQL's own refusal, met on the shadow (never on production), is quoted.
    assert "(PostgreSQL: CREATE INDEX CONCURRENTLY cannot run inside a transaction block" in out
    before = production(world)

    record = world.deploy()
    assert record.exit_code == 2 and record.halt_reason is not None
    assert record.halt_reason.startswith(f"{INDEX_TAG}.sql:1: CREATE INDEX CONCURRENTLY")
    assert f"[HALT] migrate: {record.halt_reason}" in out  # the same words, the same code
    assert production(world) == before  # the deploy refused before changing anything


def test_with_the_opt_in_the_concurrent_migration_is_not_run_on_production(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_staging_migration(world, INDEX_TAG, [INDEX_SQL])
    opt_in(world)
    before = production(world)
    assert before == (9, False, [])
    code, out = dry_run(world, capsys, monkeypatch)
    assert code == 0, out
    assert "prediction: the deploy would succeed" in out
    assert f"{INDEX_TAG} NOT rehearsed on production: it runs outside a transaction" in out
    assert "would block the table's writes" in out
    assert f"{INDEX_TAG}.sql:1: CREATE INDEX CONCURRENTLY" in out
    assert "checked without running it: what it names resolves on the rehearsed schema" in out
    assert f"caveat: {INDEX_TAG} was not run by this rehearsal" in out
    assert "[ok  ] revalidate: verdict SAFE" in out
    assert production(world) == before  # no index, no tracking row, 0011 rolled back too


def test_with_the_opt_in_a_statement_naming_a_missing_column_predicts_the_failure(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = INDEX_SQL.replace('("service_offering")', '("no_such_column")')
    add_staging_migration(world, INDEX_TAG, [wrong])
    opt_in(world)
    before = production(world)
    code, out = dry_run(world, capsys, monkeypatch)
    assert code == 21, out
    # The shadow's replay ran it as the deploy would, outside a transaction: PostgreSQL said.
    assert f"would fail in {INDEX_TAG}, statement 1" in out
    assert 'column "no_such_column" does not exist' in out
    assert production(world) == before


def test_rehearsed_on_a_local_copy_the_concurrent_migration_runs_for_real(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_staging_migration(world, INDEX_TAG, [INDEX_SQL])
    opt_in(world)
    before = production(world)
    code, out = dry_run(world, capsys, monkeypatch, "--rehearse-on", "local", "--json")
    assert code == 0, out
    document, _end = json.JSONDecoder().raw_decode(out[out.index("{") :])  # stderr follows
    migrate = next(s for s in document["steps"] if s["name"] == "migrate")
    assert migrate["summary"].startswith("4 migration(s) applied for real on the copy")
    # No migration left unrehearsed; the one caveat is the empty copy's SQL checks.
    assert [c for c in document["caveats"] if "SQL checks" not in c] == []
    predicted = document["predicted_validation"]
    assert predicted["status"] == "SAFE"
    assert {m["tag"]: m["state"] for m in predicted["migrations"]}[INDEX_TAG] == "applied"
    assert production(world) == before


def test_killed_during_the_concurrent_build_resume_converges(world: World) -> None:
    add_staging_migration(world, INDEX_TAG, [INDEX_SQL])
    opt_in(world)
    main_before = world.origin_main()
    resumed: list[RunRecord] = []
    with psycopg.connect(world.database_url, autocommit=True) as old:
        # An old snapshot (on no table of the release, so 0011's ALTER TABLE is not held
        # up): CREATE INDEX CONCURRENTLY waits for it to end before it marks its index
        # valid, so the deploy stays in the middle of its concurrent phase.
        old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        old.execute("SELECT count(*) FROM pg_class")
        process = deploy_process(world, "never")
        builder = wait_for_build(world, process)
        kill(process)
        interrupted = only_run(world)
        assert interrupted.state == "validated"
        planned = {p.tag: p.hash for p in interrupted.planned}
        rows = {h for _id, h, _c in tracking_rows(world.database_url)}
        assert planned["0011_cute_skin"] in rows and planned[INDEX_TAG] not in rows
        assert index_valid(world) is False  # the build is under way, its index INVALID
        # The killed deploy's backend still waits to build; resume must end it first.
        thread = threading.Thread(
            target=lambda: resumed.append(resume(None, world.store, world.interaction()))
        )
        thread.start()
        assert gone_while(world, builder, thread), "resume did not end the orphan build"
        old.execute("ROLLBACK")
        thread.join()
    assert resumed, "resume did not finish"
    record = resumed[0]
    assert_converged(world, record, main_before)  # SAFE, every row once, merged once
    assert index_valid(world) is True
    with psycopg.connect(world.database_url) as conn:
        invalid = conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()
    assert invalid == (0,)
    events = read_events(world.store.audit_path(record.run_id))
    detected = next(e for e in events if e["event"] == "interruption_detected")
    assert builder in detected["orphan_sessions_ended"]
    notes = [e["message"] for e in events if e["event"] == "migrate_note"]
    assert any(f"dropped INVALID index public.{INDEX_NAME}" in n for n in notes), notes
    after = events[[e["event"] for e in events].index("run_resumed") :]
    applying = [e.get("tag") for e in after if e["event"] == "applying_migration"]
    assert applying == [INDEX_TAG]  # the committed transactional migrations did not rerun


def assert_partly_migrated(world: World, record: RunRecord) -> None:
    """The run recorded 0009-0011 (committed before the concurrent migration stopped) as
    applied, read from the tracking rows, and its plan names them."""
    committed = [p.tag for p in record.planned][:-1]
    assert record.exit_code == int(ExitCode.PARTIAL), record.halt_reason
    assert len(tracking_rows(world.database_url)) == 12  # 9 before the run
    assert record.steps.migrate is not None and record.steps.migrate.tags == committed
    plan = "\n".join(record.rollback_plan)
    assert f"this run applied {', '.join(committed)}" in plan, plan
    assert f"stopped before {INDEX_TAG}" in plan, plan


def test_a_concurrent_migration_failing_after_the_others_committed_halts_partial(
    world: World,
) -> None:
    unique = INDEX_SQL.replace("INDEX", "UNIQUE INDEX").replace("service_offering", "category")
    add_staging_migration(world, INDEX_TAG, [unique])
    opt_in(world)
    main_before = world.origin_main()
    duplicates = "INSERT INTO case_classifications (case_number, category) VALUES (%s, 'network')"
    with psycopg.connect(world.database_url) as conn:
        conn.cursor().executemany(duplicates, [("INC1",), ("INC2",)])
    record = world.deploy()
    assert (record.state, record.steps.halt.stopped_in) == ("halted", "validated")
    assert "could not create unique index" in str(record.halt_reason)
    assert_partly_migrated(world, record)

    with psycopg.connect(world.database_url) as conn:
        conn.execute("DELETE FROM case_classifications WHERE case_number = 'INC2'")
    resumed = resume(None, world.store, world.interaction())
    assert_converged(world, resumed, main_before)
    assert resumed.steps.migrate.tags == [p.tag for p in resumed.planned]


def test_interrupted_during_the_concurrent_build_records_what_committed_and_exits_20(
    world: World,
) -> None:
    add_staging_migration(world, INDEX_TAG, [INDEX_SQL])
    opt_in(world)
    main_before = world.origin_main()
    with psycopg.connect(world.database_url, autocommit=True) as old:
        old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")  # holds the build (see above)
        old.execute("SELECT count(*) FROM pg_class")
        process = deploy_process(world, "never")
        wait_for_build(world, process)
        process.send_signal(signal.SIGTERM)  # a cancelled CI job
        _out, err = process.communicate()
        old.execute("ROLLBACK")
    assert process.returncode == int(ExitCode.PARTIAL), err.decode()
    record = only_run(world)
    assert record.state == "validated"
    assert "interrupted by SIGTERM halfway through the release" in str(record.halt_reason)
    assert_partly_migrated(world, record)

    resumed = resume(None, world.store, world.interaction())
    assert_converged(world, resumed, main_before)
    assert resumed.steps.migrate.tags == [p.tag for p in resumed.planned]


def wait_for_build(world: World, process: subprocess.Popen[bytes]) -> int:
    """The backend pid of the deploy's CREATE INDEX CONCURRENTLY, once it is building and
    its (still INVALID) index is in the catalog: the build shows in the progress view a
    moment before its first transaction commits the index's catalog row."""
    with psycopg.connect(world.database_url, autocommit=True) as probe:
        while True:
            row = probe.execute(
                # production's own database: the shadow, on the same server, replays
                # the build in databases of its own
                "SELECT pid FROM pg_stat_progress_create_index WHERE datname = current_database()"
            ).fetchone()
            if row is not None and index_valid(world) is False:
                return int(row[0])
            if process.poll() is not None:
                _out, err = process.communicate()
                pytest.fail(f"deploy exited {process.returncode} before the build: {err!r}")
            time.sleep(0.05)


def index_valid(world: World) -> bool | None:
    """True valid, False INVALID, None absent."""
    with psycopg.connect(world.database_url) as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = %s",
            (INDEX_NAME,),
        ).fetchone()
    return None if row is None else bool(row[0])


def gone_while(world: World, pid: int, thread: threading.Thread) -> bool:
    """Whether backend ``pid`` ends before ``thread`` does (no clock)."""
    with psycopg.connect(world.database_url, autocommit=True) as probe:
        while True:
            running = thread.is_alive()
            row = probe.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
            if row.fetchone() is None:
                return True
            if not running:
                return False
            time.sleep(0.05)


def test_a_rehearsal_of_a_concurrent_release_using_a_console_extension_predicts_the_deploy(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """citext came from a console and the release uses it before a concurrent index: the
    rehearsal judges its transactional part by a history holding citext, as the deploy does."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION citext")
    column = 'ALTER TABLE "case_classifications" ADD COLUMN "label" citext;'
    add_staging_migration(world, "0012_label", [column])
    add_staging_migration(world, "0013_case_index", [INDEX_SQL])
    opt_in(world)
    code, out = dry_run(world, capsys, monkeypatch)
    assert code == 0 and "prediction: the deploy would succeed" in out, out
    assert world.deploy().exit_code == 0
