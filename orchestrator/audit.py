"""The audit trail of a run: structlog events, redacted, appended as JSON lines.

Each :class:`AuditTrail` owns its own structlog logger (``structlog.wrap_logger`` over our
own sink, never the global configuration), so several trails can coexist. Every event is
``timestamp`` (ISO-8601 UTC), ``level``, ``event``, ``run_id`` plus its fields; values are
turned into plain JSON data first (paths, datetimes, exceptions, dataclasses never crash
logging) and then redacted, so no password reaches the file or the console.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path, PurePath
from typing import Any, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from orchestrator.redaction import Redactor
from orchestrator.runs import PRIVATE_FILE, private_directory

_MAX_DEPTH = 32  # deeper structures (or cycles) are cut off rather than recursed into
HEAD_KEYS = ("timestamp", "level", "event", "run_id")

ConsoleCallback = Callable[[dict[str, Any]], None]


def to_plain(value: Any, _depth: int = 0) -> Any:
    """``value`` as JSON-ready data: str, int, float, bool, None, lists and str-keyed dicts.

    Never raises: anything unknown becomes its ``str()`` (or a placeholder if even that fails).
    """
    if _depth > _MAX_DEPTH:
        return "<too deep>"
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return to_plain(value.value, _depth + 1)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN is not JSON
    if isinstance(value, Mapping):
        return {_plain_key(k): to_plain(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v, _depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Not dataclasses.asdict: it deep-copies fields, which fails on locks, files, ...
        return {
            f.name: to_plain(getattr(value, f.name, None), _depth + 1)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {_safe_str(value)}"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    model_dump = getattr(value, "model_dump", None)  # pydantic models (the playbook)
    if callable(model_dump) and not isinstance(value, type):
        with contextlib.suppress(Exception):
            return to_plain(model_dump(mode="json"), _depth + 1)
    return _safe_str(value)


def _plain_key(key: Any) -> str:
    return key if isinstance(key, str) else str(to_plain(key))


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def make_redactor(extra_secrets: Iterable[str] | Redactor = ()) -> Processor:
    """A structlog processor making every event JSON-safe and password-free.

    Values are rendered with :func:`to_plain`, then masked by a
    :class:`~orchestrator.redaction.Redactor` (``extra_secrets`` itself, or one built from
    those literal secrets, e.g. the password parsed from DATABASE_URL): every string goes
    through :func:`~orchestrator.redaction.redact`, values under secret-looking keys become
    ``***``. The result is ordered timestamp, level, event, run_id, rest.
    """
    scrubber = extra_secrets if isinstance(extra_secrets, Redactor) else Redactor(extra_secrets)

    def redact_processor(
        logger: WrappedLogger, method_name: str, event_dict: EventDict
    ) -> EventDict:
        clean: dict[str, Any] = scrubber.value(to_plain(event_dict))
        head = {k: clean.pop(k) for k in HEAD_KEYS if k in clean}
        return {**head, **clean}

    return redact_processor


class _JsonLinesSink:
    """The structlog "logger" at the end of the chain: one durable JSON line per event."""

    def __init__(self, path: Path, console: ConsoleCallback | None) -> None:
        self.path = path
        self.console = console
        self._lock = threading.Lock()
        private_directory(path.parent)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        os.fchmod(self._fd, PRIVATE_FILE)  # whatever the umask, or an older file's mode
        self._end_torn_line()

    def _end_torn_line(self) -> None:
        """If a crash left half a line, end it so our first event starts on a line of its own."""
        with open(self.path, "rb") as existing:
            existing.seek(0, os.SEEK_END)
            if existing.tell() == 0:
                return
            existing.seek(-1, os.SEEK_END)
            if existing.read(1) != b"\n":
                self._write(b"\n")

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)  # a crash right after an event must not lose it

    def msg(self, **event: Any) -> None:
        line = json.dumps(event, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"audit trail {self.path} is closed")
            # A name that is not UTF-8 (surrogate-escaped) is written as its JSON escape.
            self._write(line.encode(errors="backslashreplace"))
        if self.console is not None:
            self.console(event)

    # structlog calls the method named after the level.
    debug = info = warning = warn = error = critical = fatal = exception = log = msg

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class AuditTrail:
    """The audit log of one run: ``trail.log.info("transition", trigger=..., dest=...)``.

    ``secrets``: the literal secrets to mask, or the run's own
    :class:`~orchestrator.redaction.Redactor` (the one its ``state.json`` goes through).
    """

    def __init__(
        self,
        path: Path,
        *,
        run_id: str,
        secrets: Iterable[str] | Redactor = (),
        console: ConsoleCallback | None = None,
    ) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self._sink = _JsonLinesSink(self.path, console)
        proxy = structlog.wrap_logger(
            self._sink,
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
                structlog.processors.format_exc_info,  # tracebacks become (redacted) text
                make_redactor(secrets),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            context_class=dict,
            cache_logger_on_first_use=True,
            run_id=run_id,
        )
        # bind() materialises the real logger from the arguments above, not global config.
        self.log = cast(FilteringBoundLogger, proxy.bind())

    def close(self) -> None:
        """Close the file; later events raise RuntimeError. Safe to call twice."""
        self._sink.close()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of an audit file, in order; [] if the file does not exist.

    A line that is not a JSON object (a crash can tear the last line; a resumed run then
    appends after it) is skipped rather than failing the whole read.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    events: list[dict[str, Any]] = []
    for line in raw.splitlines():
        try:
            event = json.loads(line.decode("utf-8", errors="replace"))
        except ValueError:  # a blank or torn line too
            continue
        if isinstance(event, dict):
            events.append(event)
    return events
