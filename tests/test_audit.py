"""The audit trail: ordered JSON lines, redaction of every secret, safe rendering, torn lines."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pydantic
import pytest
import structlog

from orchestrator.audit import AuditTrail, make_redactor, read_events
from orchestrator.redaction import is_secret_key

SECRET = "s3cr3t"


@dataclass
class BackupInfo:
    snapshot: str
    taken_at: datetime
    password: str
    lock: Any = field(default_factory=threading.Lock)  # not deep-copyable: asdict would fail


class Verdict(Enum):
    SAFE = "SAFE"


class PlaybookPart(pydantic.BaseModel):
    name: str
    database_url: str


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


class LeakyObject:
    def __str__(self) -> str:
        return f"<conn postgresql://admin:{SECRET}@db/app>"


def run_processor(processor: Any, event: dict[str, Any]) -> dict[str, Any]:
    """Call a structlog processor directly, as structlog would."""
    out = processor(None, "info", event)
    assert isinstance(out, dict)
    return out


def trail_at(tmp_path: Path, **kwargs: Any) -> AuditTrail:
    return AuditTrail(tmp_path / "runs" / "r1" / "audit.jsonl", run_id="r1", **kwargs)


# --- events on disk --------------------------------------------------------------------


def test_events_land_in_order_as_json_lines(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    trail = trail_at(tmp_path)
    trail.log.info("run_started", playbook="/srv/p.yaml")
    trail.log.info("transition", trigger="validate", source="backup_checked", dest="validated")
    trail.log.warning("slow_query", seconds=2.5)
    trail.log.debug("detail", n=1)
    trail.log.error("halted", reason="guard")
    trail.close()
    after = datetime.now(UTC)

    lines = trail.path.read_text().splitlines()
    assert len(lines) == 5
    events = [json.loads(line) for line in lines]
    assert read_events(trail.path) == events
    assert [e["event"] for e in events] == [
        "run_started",
        "transition",
        "slow_query",
        "detail",
        "halted",
    ]
    assert [e["level"] for e in events] == ["info", "info", "warning", "debug", "error"]
    assert all(e["run_id"] == "r1" for e in events)
    assert list(events[1])[:4] == ["timestamp", "level", "event", "run_id"]
    assert events[1]["trigger"] == "validate" and events[1]["dest"] == "validated"
    stamps = [datetime.fromisoformat(e["timestamp"]) for e in events]
    assert all(s.utcoffset() == timedelta(0) for s in stamps)
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after


def test_each_event_is_on_disk_before_the_call_returns(tmp_path: Path) -> None:
    trail = trail_at(tmp_path)
    trail.log.info("one")
    assert [e["event"] for e in read_events(trail.path)] == ["one"]  # no close, no flush
    trail.log.info("two")
    assert [e["event"] for e in read_events(trail.path)] == ["one", "two"]
    trail.close()


def test_reopening_appends(tmp_path: Path) -> None:
    with trail_at(tmp_path) as first:
        first.log.info("first")
    with trail_at(tmp_path) as second:
        second.log.info("second")
    assert [e["event"] for e in read_events(second.path)] == ["first", "second"]


def test_a_name_that_is_not_utf8_is_logged_and_read_back(tmp_path: Path) -> None:
    """A folder named in Latin-1 reaches Python surrogate-escaped: its event is written (as
    the JSON escape of the stray byte, the file stays UTF-8) and reads back the same name."""
    folder = os.fsdecode(b"/srv/caf\xe9/release.yaml")
    with trail_at(tmp_path) as trail:
        trail.log.info("run_started", playbook=folder)
    trail.path.read_bytes().decode("utf-8")
    [event] = read_events(trail.path)
    assert event["playbook"] == folder and os.fsencode(event["playbook"]).startswith(
        b"/srv/caf\xe9"
    )


def test_logging_after_close_is_an_error(tmp_path: Path) -> None:
    trail = trail_at(tmp_path)
    trail.close()
    trail.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        trail.log.info("late")


def test_trails_coexist_without_touching_global_structlog_config(tmp_path: Path) -> None:
    config_before = structlog.get_config()
    a = AuditTrail(tmp_path / "a.jsonl", run_id="run-a")
    b = AuditTrail(tmp_path / "b.jsonl", run_id="run-b", secrets=["only-b"])
    a.log.info("hello", note="only-b")
    b.log.info("hello", note="only-b")
    a.close()
    b.close()
    assert structlog.get_config() == config_before
    [event_a] = read_events(tmp_path / "a.jsonl")
    [event_b] = read_events(tmp_path / "b.jsonl")
    assert (event_a["run_id"], event_a["note"]) == ("run-a", "only-b")
    assert (event_b["run_id"], event_b["note"]) == ("run-b", "***")


# --- redaction -------------------------------------------------------------------------


def test_no_form_of_a_password_reaches_the_file_or_the_console(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    trail = trail_at(tmp_path, secrets=[SECRET, ""], console=seen.append)
    log = trail.log
    log.info("connecting", url=f"postgresql://u:{SECRET}@h/db")
    log.info("conninfo", dsn=f"host=h user=u password={SECRET} dbname=db")
    log.info("keyed", password=SECRET, DB_Password=SECRET, github_token=SECRET)
    log.info(
        "nested",
        config={"db": {"password": SECRET, "hosts": [f"postgres://a:{SECRET}@x", "plain"]}},
        items=[{"api_key": SECRET}, (f"password='{SECRET}'",)],
    )
    log.info("literal", note=f"the password is {SECRET}!", **{f"key-{SECRET}": 1})
    log.info(f"event text with postgresql://u:{SECRET}@h/db")
    log.info("objects", backup=BackupInfo("snap", datetime.now(UTC), SECRET), obj=LeakyObject())
    log.info("model", part=PlaybookPart(name="p", database_url=f"postgresql://u:{SECRET}@h/d"))
    log.info("error", error=RuntimeError(f"could not connect to postgresql://u:{SECRET}@h"))
    try:
        raise ConnectionError(f"password={SECRET} rejected")
    except ConnectionError:
        log.exception("crashed")
    trail.close()

    raw = trail.path.read_bytes()
    assert SECRET.encode() not in raw
    assert SECRET not in json.dumps(seen)
    events = read_events(trail.path)
    assert len(events) == len(seen) == 10  # nothing was dropped to hide it
    by_event = {e["event"]: e for e in events}
    assert by_event["connecting"]["url"] == "postgresql://u:***@h/db"
    assert by_event["conninfo"]["dsn"] == "host=h user=u password=*** dbname=db"
    assert by_event["keyed"]["password"] == "***"
    assert by_event["keyed"]["DB_Password"] == "***"
    assert by_event["nested"]["config"]["db"]["hosts"] == ["postgres://a:***@x", "plain"]
    assert by_event["nested"]["items"] == [{"api_key": "***"}, ["password=***"]]
    assert by_event["literal"]["note"] == "the password is ***!"
    assert by_event["literal"]["key-***"] == 1
    assert by_event["objects"]["backup"]["snapshot"] == "snap"
    assert by_event["objects"]["backup"]["password"] == "***"
    assert by_event["model"]["part"] == {"name": "p", "database_url": "postgresql://u:***@h/d"}
    assert by_event["error"]["error"] == "RuntimeError: could not connect to postgresql://u:***@h"
    assert "ConnectionError: password=***" in by_event["crashed"]["exception"]
    assert by_event["crashed"]["level"] == "error"


def test_console_receives_the_same_redacted_events(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    trail = trail_at(tmp_path, console=seen.append)
    trail.log.info("transition", trigger="migrate", url=f"postgresql://u:{SECRET}@h/db")
    trail.log.warning("done", when=datetime(2025, 10, 21, tzinfo=UTC))
    trail.close()
    assert seen == read_events(trail.path)
    assert seen[0]["url"] == "postgresql://u:***@h/db"
    assert seen[1]["when"] == "2025-10-21T00:00:00+00:00"


def test_literal_secret_is_scrubbed_percent_encoded_too(tmp_path: Path) -> None:
    secret = "p@ss w/rd"
    trail = trail_at(tmp_path, secrets=[secret])
    trail.log.info("x", a=f"said {secret}", b="http://h/?q=p%40ss%20w%2Frd")
    trail.close()
    [event] = read_events(trail.path)
    assert event["a"] == "said ***" and event["b"] == "http://h/?q=***"


# --- safe rendering (pure, no I/O) -----------------------------------------------------


def test_redactor_renders_awkward_values_without_crashing() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    event = {
        "event": "values",
        "path": Path("/srv/app"),
        "when": datetime(2025, 10, 21, 14, 30, 5, tzinfo=UTC),
        "delta": timedelta(seconds=90),
        "verdict": Verdict.SAFE,
        "nan": float("nan"),
        "tags": {"b"},
        "blob": b"bytes\xff",
        "weird": Unprintable(),
        "ints": {1: "one"},
        "cycle": cyclic,
    }
    out = run_processor(make_redactor(), event)
    json.dumps(out, allow_nan=False)  # strictly JSON now
    assert out["path"] == "/srv/app"
    assert out["when"] == "2025-10-21T14:30:05+00:00"
    assert out["delta"] == 90.0
    assert out["verdict"] == "SAFE"
    assert out["nan"] == "nan"
    assert out["tags"] == ["b"]
    assert out["blob"] == "bytes\ufffd"
    assert out["weird"] == "<unprintable Unprintable>"
    assert out["ints"] == {"1": "one"}
    assert "too deep" in json.dumps(out["cycle"])


def test_redactor_orders_the_head_keys_first() -> None:
    out = run_processor(make_redactor(), {"z": 1, "run_id": "r", "event": "e", "level": "info"})
    assert list(out) == ["level", "event", "run_id", "z"]


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("PGPASSWORD", True),
        ("client-secret", True),
        ("access_token", True),
        ("Authorization", True),
        ("api_key", True),
        ("credentials", True),
        ("database_url", False),
        ("trigger", False),
        ("event", False),
    ],
)
def test_secret_keys(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


# --- reading back ----------------------------------------------------------------------


def test_read_events_tolerates_a_truncated_last_line(tmp_path: Path) -> None:
    trail = trail_at(tmp_path)
    trail.log.info("one", n=1)
    trail.log.info("two", n=2)
    trail.close()
    with trail.path.open("ab") as f:
        f.write(b'{"timestamp": "2025-10-21T14:3')  # a crash mid-write
    assert [e["event"] for e in read_events(trail.path)] == ["one", "two"]


def test_a_resumed_run_appends_cleanly_after_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "r1" / "audit.jsonl"
    with trail_at(tmp_path) as trail:
        trail.log.info("before_crash")
    with path.open("ab") as f:
        f.write(b'{"event": "torn')
    with trail_at(tmp_path) as resumed:
        resumed.log.info("resumed")
    assert [e["event"] for e in read_events(path)] == ["before_crash", "resumed"]


def test_read_events_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_events(tmp_path / "nope.jsonl") == []
