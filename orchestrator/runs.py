"""Run records: ids, the on-disk record of one deploy run, atomic saves, and the run lock.

Every run lives in ``<state-dir>/runs/<run-id>/``: ``state.json`` (the :class:`RunRecord`),
``audit.jsonl`` (the audit trail, see :mod:`orchestrator.audit`) and ``lock`` (held while a
process drives the run). ``orchestrator resume`` continues a run from ``state.json`` alone, so
that file is only ever replaced atomically: a crash leaves either the previous record or the
new one, never a torn file.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.engine.outcomes import StepOutcomes
from orchestrator.errors import GuardError, UsageError
from orchestrator.redaction import Redactor

if TYPE_CHECKING:
    from orchestrator.audit import AuditTrail, ConsoleCallback

RUNS_DIRNAME = "runs"
RECORD_FILENAME = "state.json"
AUDIT_FILENAME = "audit.jsonl"
LOCK_FILENAME = "lock"
ABANDONED_FILENAME = "abandoned"  # `runs abandon`: the run is closed for good

# Letters, digits, '-' and '_' only: no '/', no '.', so an id can never leave runs/.
_RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def utc_now_iso() -> str:
    """The current time as ISO-8601 UTC with a ``Z`` suffix (the format of every record time)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def new_run_id(now: datetime | None = None) -> str:
    """A fresh run id such as ``20251021T143005Z-3fa9c2``.

    The UTC timestamp first makes ids sort by creation time; 6 random hex digits keep two runs
    started in the same second apart. A naive ``now`` is taken to be UTC already.
    """
    moment = now or datetime.now(UTC)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a well-formed id (or id prefix); UsageError otherwise."""
    if not isinstance(run_id, str) or not _RUN_ID_PATTERN.fullmatch(run_id):
        raise UsageError(
            f"invalid run id {run_id!r}: expected letters, digits, '-' or '_' "
            "(e.g. 20251021T143005Z-3fa9c2)"
        )
    return run_id


class Transition(BaseModel):
    """One move of the state machine, as recorded in the run."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    at: str  # ISO-8601 UTC
    trigger: str
    source: str
    dest: str
    detail: str = ""


class PlannedMigration(BaseModel):
    """A migration the run set out to apply."""

    model_config = ConfigDict(strict=True, frozen=True)

    tag: str
    hash: str


class RunRecord(BaseModel):
    """Everything needed to show, resume or roll back one deploy run.

    Saved as ``model_dump(mode="json")`` and read back validated (:meth:`from_json`): a
    field of the wrong type or an unknown field is refused, not dropped (a later save would
    silently lose it); a step outcome's missing keys take their defaults.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    run_id: str
    playbook: str  # absolute path of the playbook file
    name: str  # playbook name
    state: str = "pending"  # machine state
    created_at: str = Field(default_factory=utc_now_iso)
    updated_at: str = Field(default_factory=utc_now_iso)
    source_commit: str | None = None
    # The playbook as it was when the run started (its text and the sha256 of that text): a
    # resume walks on with it, never with a file edited since.
    playbook_text: str | None = None
    playbook_sha256: str | None = None
    # The production database the run started on (system_identifier, database oid and name):
    # a resume, or a restore from its dump, that reaches another one is refused.
    database: dict[str, str] = {}
    # the migrations this run set out to apply, fixed by its first validate
    planned: list[PlannedMigration] = []
    # each tracking row's hash before the run changed anything: with ``planned``, all it may see
    tracked_before: list[str] = []
    steps: StepOutcomes = Field(default_factory=StepOutcomes)
    transitions: list[Transition] = []
    halt_reason: str | None = None
    exit_code: int | None = None
    rollback_plan: list[str] = []

    @field_validator("created_at", "updated_at")
    @classmethod
    def _iso_time(cls, text: str) -> str:
        _parse_time(text)
        return text

    def to_json(self) -> dict[str, Any]:
        """The record as ``state.json`` holds it (a step not run yet, a value not known yet
        left out); :meth:`from_json` reads it back."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_json(cls, data: Any) -> RunRecord:
        """A record from its JSON data; UsageError (one line) if it is malformed."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise UsageError(
                f"malformed run record: {f'{where}: ' if where else ''}{first['msg']}"
            ) from None


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not ISO-8601") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class RunListing:
    """What ``runs`` shows: every readable run (newest first), every run directory whose
    record cannot be read, with why, and when and why each abandoned run was closed."""

    records: list[RunRecord]
    unreadable: list[tuple[str, str]]
    abandoned: dict[str, dict[str, Any]]


class RunStore:
    """The run records under ``<state_dir>/runs/``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.runs_dir = self.state_dir / RUNS_DIRNAME
        #: What every saved record goes through. A run replaces it with its audit trail's
        #: redactor (:func:`orchestrator.engine.run.open_run`), so ``state.json`` masks the
        #: same literal secrets (the values of ``*_TOKEN`` variables, ...) the trail masks.
        self.redactor = Redactor()

    def run_dir(self, run_id: str) -> Path:
        """The directory of run ``run_id`` (validated; it need not exist)."""
        return self.runs_dir / check_run_id(run_id)

    def audit_path(self, run_id: str) -> Path:
        """Where the audit trail of run ``run_id`` is appended."""
        return self.run_dir(run_id) / AUDIT_FILENAME

    def audit_trail(self, run_id: str, console: ConsoleCallback | None = None) -> AuditTrail:
        """Open the audit trail of run ``run_id``, masked as its record is (:attr:`redactor`)."""
        from orchestrator.audit import AuditTrail  # it imports this module

        return AuditTrail(
            self.audit_path(run_id), run_id=run_id, secrets=self.redactor, console=console
        )

    def record_path(self, run_id: str) -> Path:
        """Where the record of run ``run_id`` is kept."""
        return self.run_dir(run_id) / RECORD_FILENAME

    def create(self, record: RunRecord) -> Path:
        """Make ``runs/<id>/`` and write the first ``state.json``; return the run directory.

        UsageError if a run with that id already exists.
        """
        directory = self.run_dir(record.run_id)
        private_directory(self.runs_dir)
        try:
            directory.mkdir(mode=PRIVATE_DIR)
            directory.chmod(PRIVATE_DIR)  # mkdir's mode is filtered by the umask; this is not
        except FileExistsError:
            raise UsageError(f"run {record.run_id} already exists in {self.runs_dir}") from None
        try:
            _write_atomically(directory / RECORD_FILENAME, _encode(record, self.redactor))
        except BaseException:
            # Leave no half-made run behind: list() and prefix lookups would trip on it.
            with contextlib.suppress(OSError):
                directory.rmdir()
            raise
        _fsync_dir(self.runs_dir)
        return directory

    def save(self, record: RunRecord) -> None:
        """Replace ``state.json`` with ``record`` (stamping ``updated_at``), atomically
        (:func:`_write_atomically`); a record that cannot be serialised raises first."""
        directory = self.run_dir(record.run_id)
        if not directory.is_dir():
            raise UsageError(f"unknown run id {record.run_id!r}: create it before saving")
        stamped = record.model_copy(update={"updated_at": utc_now_iso()})
        _write_atomically(directory / RECORD_FILENAME, _encode(stamped, self.redactor))
        record.updated_at = stamped.updated_at  # only once the new record is on disk

    def resolve(self, run_id: str) -> str:
        """The full id of the one run whose id is ``run_id`` or starts with it."""
        check_run_id(run_id)
        if (self.runs_dir / run_id).is_dir():
            return run_id
        matches = sorted(name for name in self._run_dir_names() if name.startswith(run_id))
        if not matches:
            raise UsageError(f"unknown run id {run_id!r} (see `orchestrator runs`)")
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise UsageError(f"run id prefix {run_id!r} is ambiguous: matches {shown}")
        return matches[0]

    def load(self, run_id: str) -> RunRecord:
        """The record of run ``run_id`` (full id or unique prefix).

        UsageError (exit 2, one line) if the id is malformed, unknown or ambiguous, or the
        record is missing, unreadable or corrupt.
        """
        full_id = self.resolve(run_id)
        path = self.record_path(full_id)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"run {full_id}: cannot read {path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"run {full_id}: corrupt record {path}: {reason}") from None
        try:
            record = RunRecord.from_json(data)
        except UsageError as exc:
            raise UsageError(f"run {full_id}: {path}: {exc}") from None
        if record.run_id != full_id:
            raise UsageError(
                f"run {full_id}: corrupt record {path}: it names run {record.run_id!r}"
            )
        return record

    def list(self) -> list[RunRecord]:
        """Every readable run, newest first; :meth:`listing` has the others too."""
        return self.listing().records

    def listing(self) -> RunListing:
        """Every run, its record read once: the readable ones, those whose record cannot be
        read (truncated, corrupt, missing) with why, each newest first; the abandoned ones."""
        listing = RunListing([], [], {})
        for name in sorted(self._run_dir_names(), reverse=True):  # ids begin with their time
            try:
                listing.records.append(self.load(name))
            except UsageError as exc:
                listing.unreadable.append((name, str(exc)))
            if (mark := self.abandoned(name)) is not None:
                listing.abandoned[name] = mark
        listing.records.sort(key=lambda r: (_parse_time(r.created_at), r.run_id), reverse=True)
        return listing

    def abandon(self, run_id: str, reason: str) -> str:
        """Close run ``run_id`` for good (``resume`` refuses it; ``runs`` shows it abandoned),
        whether or not its record is readable; its full id. Refused while a process drives it
        (its lock is held). Its audit trail says so too."""
        full_id = self.resolve(run_id)
        with self.lock(full_id):
            mark = {"at": utc_now_iso(), "reason": reason}
            _write_atomically(
                self.run_dir(full_id) / ABANDONED_FILENAME,
                (json.dumps(self.redactor.value(mark)) + "\n").encode(),
            )
            with self.audit_trail(full_id) as trail:
                trail.log.warning("run_abandoned", reason=reason)
        return full_id

    def abandoned(self, run_id: str) -> dict[str, Any] | None:
        """When and why run ``run_id`` was abandoned; None if it was not."""
        path = self.run_dir(self.resolve(run_id)) / ABANDONED_FILENAME
        try:
            mark = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"at": None, "reason": "unreadable mark"}
        return mark if isinstance(mark, dict) else {"at": None, "reason": str(mark)}

    def check_writable(self, *, create: bool = True) -> None:
        """UsageError unless run records can be written here (a run never goes unrecorded).

        Writes, fsyncs and removes a probe file (a full disk, a read-only directory show before
        the run); without ``create`` (a dry run) in the nearest existing directory, making none.
        """
        existing = [p for p in (self.runs_dir, *self.runs_dir.parents) if p.exists()]
        probe = (self.runs_dir if create else existing[0]) / f".probe-{os.getpid()}"
        try:
            if create:
                private_directory(self.runs_dir)
            _write_atomically(probe, b"{}" + b" " * 4096)
        except OSError as exc:
            raise UsageError(
                f"cannot write run records in {self.runs_dir}: {exc.strerror or exc}; "
                "nothing was started"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def newest_unfinished(self) -> RunRecord:
        """The newest run that has not succeeded (nor been rolled back or abandoned);
        UsageError if none, or if a run newer than it has an unreadable record (that one
        may be the run to resume: the operator decides, by id or with `runs abandon`)."""
        listing = self.listing()
        readable = {record.run_id: record for record in listing.records}
        for name in sorted(self._run_dir_names(), reverse=True):
            if name in listing.abandoned:
                continue
            record = readable.get(name)
            if record is None:
                why = dict(listing.unreadable).get(name, "unreadable")
                raise UsageError(
                    f"the newest run {name} has an unreadable record ({why}); resume names "
                    f"no run for you: repair it, resume another run by id, or close it with "
                    f"`orchestrator runs abandon {name}`"
                )
            if record.state != "succeeded" and record.steps.rollback is None:
                return record
        raise UsageError(f"no unfinished run in {self.runs_dir} (see `orchestrator runs`)")

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """Hold the exclusive lock of run ``run_id`` for the ``with`` block.

        Uses ``fcntl.flock`` on ``runs/<id>/lock`` without blocking: if another process (or
        another ``lock`` in this one) holds it, GuardError names its pid. The kernel drops the
        lock when the holder dies, so a crashed run never stays locked. The lock file itself
        is kept (deleting it would let two processes lock two different inodes).
        """
        full_id = self.resolve(run_id)
        path = self.run_dir(full_id) / LOCK_FILENAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        try:
            os.fchmod(fd, PRIVATE_FILE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = _read_pid(fd)
                raise GuardError(
                    f"run {full_id} is in use by another process (pid {holder or 'unknown'})"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)  # no stale pid once we let go
        finally:
            os.close(fd)  # closing releases the flock

    def _run_dir_names(self) -> builtins.list[str]:
        """Names of the directories under runs/ that are well-formed run ids."""
        try:
            entries = list(self.runs_dir.iterdir())
        except FileNotFoundError:
            return []
        return [p.name for p in entries if _RUN_ID_PATTERN.fullmatch(p.name) and p.is_dir()]


def _read_pid(fd: int) -> str | None:
    """The pid written in a lock file by its holder, if any yet."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def _encode(record: RunRecord, redactor: Redactor) -> bytes:
    """The record as redacted UTF-8 JSON; TypeError or UsageError before any write."""
    try:
        text = json.dumps(
            redactor.value(record.to_json()), indent=2, ensure_ascii=False, allow_nan=False
        )
        return (text + "\n").encode()
    except UnicodeEncodeError as exc:  # a folder's name in another encoding, as Python read it
        near = exc.object[: exc.end].rsplit("\n", 1)[-1].strip().encode(errors="backslashreplace")
        raise UsageError(f"cannot record a name that is not UTF-8: {near.decode()}") from None
    except (TypeError, ValueError) as exc:
        raise TypeError(f"run {record.run_id}: record is not JSON-serialisable: {exc}") from None


#: Run folders and everything in them belong to the operator alone, whatever the umask:
#: they hold restore points, backup paths, branch names and error messages from production.
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_directory(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by its owner only."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    for created in missing:  # only what we made: an existing parent is the operator's
        with contextlib.suppress(OSError):
            created.chmod(PRIVATE_DIR)


def _write_atomically(target: Path, payload: bytes) -> None:
    """Write ``payload`` to ``target`` via tmp file + fsync + ``os.replace``.

    The tmp name is unique per call so concurrent writers never share (and tear) a tmp file.
    """
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, PRIVATE_FILE)  # mkstemp's 0600 already; said here so it stays so
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(payload)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)  # make the rename itself durable


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
