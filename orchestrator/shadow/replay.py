"""Replay a migrations folder on a shadow database, as drizzle applies it, and read back
what PostgreSQL built after each migration.

Each migration runs in a transaction of its own, sent as one message as ``migrate`` sends
it, BEGIN and COMMIT with it (after a refusal, again statement by statement, rolled back, to
name the statement); the catalog is then read with the reader production is read with. One
PostgreSQL refuses in a transaction (``CREATE INDEX CONCURRENTLY``) runs statement by
statement, as ``migrate --allow-concurrent`` runs it. The shadow starts empty, so a role
production has and a migration names (a policy, a grant, ``SET ROLE``) is created when
PostgreSQL says it is missing, in a transaction or outside one.

A whole read after each of hundreds of migrations would cost minutes. So the catalog is read
whole once, before the first migration; after each only the objects it touched are: an event
trigger records what each DDL command created, altered or dropped
(``pg_event_trigger_ddl_commands``, ``pg_event_trigger_dropped_objects``), widened to the
objects that depend on those at any distance (a view on a renamed table, a foreign key to it,
an array column of a renamed enum) and to their owners (a column's, constraint's or index's
table). At the end the catalog is read whole again and must equal what the deltas built;
where it does not (or where the server does not let us create an event trigger), the folder
is replayed again with a whole read after each migration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from orchestrator.catalog import Change, History, Properties, ReplayFailure, delta
from orchestrator.catalog.snapshot import CatalogSnapshot
from orchestrator.db.catalog_reader import read_catalog
from orchestrator.db.connect import connect
from orchestrator.db.migrator import create_tracking_sql
from orchestrator.drizzle.journal import Journal, Migration
from orchestrator.errors import UsageError

NOT_IN_TRANSACTION = "25001"  # active_sql_transaction: "cannot run inside a transaction block"
# A deadlock's or a serialization failure's victim: says nothing of the SQL, run it again.
TRANSIENT = frozenset({"40P01", "40001"})
# A role PostgreSQL says is missing: undefined_object, or invalid_parameter_value (SET ROLE).
_NO_SUCH_ROLE = frozenset({"42704", "22023"})
_MISSING_ROLE = re.compile(r'role "([^"]+)" does not exist')
_EXISTING_ROLE = re.compile(r'role "([^"]+)" already exists')  # duplicate_object, 42710
# PostgreSQL 15+: extension "x" is not available; 13 and 14: could not open extension
# control file ".../x.control"
_MISSING_EXTENSION = re.compile(r'extension (?:control file )?"(?:[^"]*/)?([^"/]+?)(?:\.control)?"')
_CREATE_EXTENSION = sql.SQL(
    "CREATE SCHEMA IF NOT EXISTS {1}; CREATE EXTENSION IF NOT EXISTS {0} SCHEMA {1} CASCADE"
)
_SEED_OWNERS = """SELECT 'e' || oid FROM pg_extension WHERE extname = ANY(%s)
UNION ALL SELECT 'n' || oid FROM pg_namespace WHERE nspname = ANY(%s)"""
#: A type, function or schema that does not exist: maybe an extension production has.
UNDEFINED = frozenset({"42704", "42883", "3F000"})
_ATTEMPTS = 20  # roles created, or transient failures, before giving up


class ReplayError(UsageError):
    """The shadow cannot replay the folder: it lacks an extension the folder needs."""


class IncompleteReplay(Exception):
    """The deltas read after each migration do not add up to the catalog at the end."""


@dataclass(frozen=True)
class ReplayStart:
    """What production's migrations found before the first ran, as a shadow database starts:
    drizzle's tracking table (left out of every snapshot), its sessions' TimeZone (see docs)."""

    schema: str = "drizzle"
    table: str = "__drizzle_migrations"
    zone: str = "UTC"
    # Production's extensions (name, schema) a migration it has not run creates: it had them.
    extensions: tuple[tuple[str, str], ...] = ()


def replay_history(
    url: str,
    journal: Journal,
    *,
    start: ReplayStart,
    server: str,
    incremental: bool = True,
    extensions: Mapping[str, str] | None = None,
) -> History:
    """Replay every migration of ``journal`` on the empty database at ``url``; production's
    ``extensions`` (name: schema) are created where a migration needs one that no migration
    creates (:func:`apply_migration`), and belong to the history's start.

    A migration PostgreSQL refuses ends the history there (its ``failure``), unless the
    shadow lacks an extension the folder needs (:class:`ReplayError`). ``incremental``:
    read only what each migration touched (see the module's docstring);
    raises :class:`IncompleteReplay` when the server refuses the event trigger or when the
    deltas do not add up, and the caller replays again with ``incremental=False``.
    """
    schema, table = start.schema, start.table
    with connect(url, autocommit=True) as conn:
        start_as_production(conn, start)
        seeded = create_extensions(conn, dict(start.extensions), dict(start.extensions))
        if incremental and not _watch_ddl(conn):
            raise IncompleteReplay("the shadow server does not allow an event trigger")
        state = _State(read_catalog(conn, schema=schema, table=table, refs=True))
        initial, deltas, rewrites = dict(state.objects), [], []
        failure = None
        for migration in journal.migrations:
            created: dict[str, str] = {}
            failure = apply_migration(conn, migration, server, extensions, created)
            if created:  # a console created them before the first migration: the start has them
                seeded.update(created)
                ours = _owners_of(conn, created, state.objects)
                read = read_catalog(conn, schema=schema, table=table, owners=ours, refs=True)
                change, _ = state.update(read, ours)
                initial.update({key: new for key, (_, new) in change.items() if new is not None})
            if failure is not None:
                break
            owners = _touched_owners(conn, state) if incremental else None
            read = read_catalog(conn, schema=schema, table=table, owners=owners, refs=True)
            change, rewritten = state.update(read, owners)
            deltas.append(change)
            rewrites.append(rewritten)
        if incremental and read_catalog(conn, schema=schema, table=table).objects != state.objects:
            raise IncompleteReplay("the deltas do not add up to the catalog at the end")
    names = ", ".join(sorted(seeded))
    return History(
        hashes=tuple(m.hash for m in journal.migrations),
        initial=initial,
        deltas=tuple(deltas),
        server=f"{server}, with production's {names}" if seeded else server,
        server_major=state.server_major,
        rewrites=tuple(rewrites),
        failure=failure,
        seeded=tuple(sorted(seeded.items())),
    )


class _State:
    """The shadow's catalog as the replay has read it: objects, and who owns each."""

    def __init__(self, whole: CatalogSnapshot) -> None:
        self.server_major = whole.server_major
        self.objects: dict[str, Properties] = dict(whole.objects)
        self.refs: dict[str, Sequence[str]] = dict(whole.refs)
        self.storage: dict[str, int] = dict(whole.storage)
        self.owners: dict[str, str] = {own: owner for owner, own in whole.refs.values()}

    def update(
        self, read: CatalogSnapshot, owners: Collection[str] | None
    ) -> tuple[dict[str, Change], tuple[str, ...]]:
        """Take in a read (of ``owners``' objects, or everything); what changed, and the
        tables whose storage is new (rewritten)."""
        if owners is None:
            old_keys: Collection[str] = list(self.objects)
        else:
            wanted = set(owners)
            old_keys = [key for key, (owner, _) in self.refs.items() if owner in wanted]
        before = {key: self.objects.pop(key) for key in old_keys}
        change = delta(before, read.objects)
        for key in old_keys:
            del self.refs[key]
        self.objects.update(read.objects)
        self.refs.update(read.refs)
        self.owners.update({own: owner for owner, own in read.refs.values()})
        old = self.storage
        rewritten = tuple(sorted(n for n, node in read.storage.items() if old.get(n, node) != node))
        self.storage = dict(read.storage) if owners is None else {**old, **read.storage}
        return change, rewritten


_WATCH_DDL = """
CREATE TEMPORARY TABLE orchestrator_touched (classid oid, objid oid);
-- The triggers run as the current role: a migration's SET ROLE must still record.
GRANT ALL ON pg_temp.orchestrator_touched TO PUBLIC;
CREATE FUNCTION pg_temp.orchestrator_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.orchestrator_touched
        SELECT classid, objid FROM pg_event_trigger_ddl_commands();
END $$;
CREATE FUNCTION pg_temp.orchestrator_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.orchestrator_touched
        SELECT classid, objid FROM pg_event_trigger_dropped_objects();
END $$;
CREATE EVENT TRIGGER orchestrator_ddl ON ddl_command_end
    EXECUTE FUNCTION pg_temp.orchestrator_ddl();
CREATE EVENT TRIGGER orchestrator_drop ON sql_drop
    EXECUTE FUNCTION pg_temp.orchestrator_drop();
"""

# What the recorded objects and the ones depending on them, at any distance (an array
# column's type through the renamed enum's array type), belong to, as the reader's refs;
# the record is emptied for the next migration.
_TOUCHED_OWNERS = """
WITH RECURSIVE near AS (
    SELECT DISTINCT classid, objid FROM pg_temp.orchestrator_touched
    UNION
    SELECT d.classid, d.objid FROM pg_depend d
    JOIN near t ON d.refclassid = t.classid AND d.refobjid = t.objid
)
SELECT DISTINCT CASE classid
    WHEN 'pg_class'::regclass THEN 'c' || coalesce(
        (SELECT indrelid FROM pg_index WHERE indexrelid = objid), objid)
    WHEN 'pg_constraint'::regclass THEN coalesce(
        (SELECT CASE WHEN conrelid <> 0 THEN 'c' || conrelid ELSE 't' || contypid END
         FROM pg_constraint WHERE oid = objid), 'o' || objid)
    WHEN 'pg_trigger'::regclass THEN coalesce(
        (SELECT 'c' || tgrelid FROM pg_trigger WHERE oid = objid), 'g' || objid)
    WHEN 'pg_policy'::regclass THEN coalesce(
        (SELECT 'c' || polrelid FROM pg_policy WHERE oid = objid), 'y' || objid)
    WHEN 'pg_rewrite'::regclass THEN coalesce(
        (SELECT 'c' || ev_class FROM pg_rewrite WHERE oid = objid), 'w' || objid)
    WHEN 'pg_attrdef'::regclass THEN
        (SELECT 'c' || adrelid FROM pg_attrdef WHERE oid = objid)
    WHEN 'pg_namespace'::regclass THEN 'n' || objid
    WHEN 'pg_type'::regclass THEN 't' || objid
    WHEN 'pg_proc'::regclass THEN 'p' || objid
    WHEN 'pg_extension'::regclass THEN 'e' || objid
END
FROM near
"""


def start_as_production(conn: psycopg.Connection[Any], start: ReplayStart) -> None:
    """Make the new shadow database what production's migrations find when they run."""
    statements = [
        # A literal without an offset is fixed in the session's zone: production's, as there.
        sql.SQL("SET TimeZone = {}; SET DateStyle = 'ISO, MDY'").format(sql.Literal(start.zone)),
        # Production gave the roles migrations SET ROLE to what PostgreSQL 15 took from PUBLIC;
        # a hardened shadow (no public, or not ours to grant on) goes on without it.
        sql.SQL(
            "DO $$ BEGIN GRANT CREATE ON SCHEMA public TO PUBLIC; EXCEPTION WHEN "
            "invalid_schema_name OR insufficient_privilege THEN NULL; END $$"
        ),
        # drizzle's migrator (and migrate) create these before the first migration.
        *create_tracking_sql(start.schema, start.table),
    ]
    conn.execute(sql.SQL(";\n").join(statements).as_bytes(conn))


def _settle_extension(
    conn: psycopg.Connection[Any],
    migration: Migration,
    extensions: Mapping[str, str],
    created: dict[str, str],
    failure: ReplayFailure,
    *,
    resume: bool,
) -> bool:
    """Where PostgreSQL says a type, function or schema does not exist, create the first of
    production's ``extensions`` (name: schema) the database lacks with which ``migration``
    runs past the refused statement, tried in a transaction rolled back (from that statement
    when ``resume``: the ones before it are committed); into ``created``. One enabled from a
    console, which no migration creates; one a migration creates itself is left to it."""
    if failure.sqlstate not in UNDEFINED:
        return False
    for name in sorted(extensions.keys() - _extension_names(conn)):
        with conn.transaction(force_rollback=True):
            if not _create_extension(conn, name, extensions[name]):
                continue  # the shadow cannot create it
            again = _statement_by_statement(conn, [migration], failure if resume else None)
        if again is None or again.number > failure.number:
            created.update(create_extensions(conn, extensions, [name]))
            return True
    return False


def create_extensions(
    conn: psycopg.Connection[Any], extensions: Mapping[str, str], names: Collection[str]
) -> dict[str, str]:
    """Create ``names`` each in its schema of ``extensions`` (the schema too), with those they
    require; one the shadow cannot create is left out. Those of ``extensions`` created."""
    if not names:
        return {}
    before = _extension_names(conn)
    for name in names:
        _create_extension(conn, name, extensions[name])
    return {
        name: extensions[name] for name in _extension_names(conn) - before if name in extensions
    }


def _create_extension(conn: psycopg.Connection[Any], name: str, schema: str) -> bool:
    """Create it in ``schema`` (a transaction or savepoint of its own); whether the shadow could."""
    try:
        with conn.transaction():
            conn.execute(_CREATE_EXTENSION.format(sql.Identifier(name), sql.Identifier(schema)))
    except psycopg.Error as exc:
        if exc.sqlstate is None:
            raise
        return False
    return True


def _extension_names(conn: psycopg.Connection[Any]) -> set[str]:
    return {name for (name,) in conn.execute("SELECT extname FROM pg_extension")}


def _owners_of(
    conn: psycopg.Connection[Any], extensions: Mapping[str, str], objects: Collection[str]
) -> list[str]:
    """The catalog entries of ``extensions`` and of their schemas not among ``objects``."""
    schemas = [s for s in extensions.values() if f"schema {s}" not in objects]
    return [owner for (owner,) in conn.execute(_SEED_OWNERS, (list(extensions), schemas))]


def _watch_ddl(conn: psycopg.Connection[Any]) -> bool:
    """Record what each DDL command touches (needs a superuser); False when refused."""
    try:
        with conn.transaction():
            conn.execute(_WATCH_DDL)
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def _touched_owners(conn: psycopg.Connection[Any], state: _State) -> set[str]:
    """The owners whose objects the last migration may have changed."""
    # Emptied by a statement of its own: a DELETE ... RETURNING scans pg_depend per object.
    emptied = conn.execute(_TOUCHED_OWNERS + ";\nDELETE FROM pg_temp.orchestrator_touched")
    refs = {row[0] for row in emptied.fetchall() if row[0]}
    # A dropped object is no longer in the catalog to say whose it was: the last read does.
    return {state.owners.get(ref, ref) for ref in refs} | refs


def apply_migration(
    conn: psycopg.Connection[Any],
    migration: Migration,
    server: str,
    extensions: Mapping[str, str] | None = None,
    created: dict[str, str] | None = None,
) -> ReplayFailure | None:
    """Run one migration in a transaction of its own (committed); its failure, if any. One
    refused there runs statement by statement, each committed, as ``migrate --allow-concurrent``
    runs it: another attempt (:func:`_attempted`) goes on from the statement refused. Those of
    production's ``extensions`` it needs are created first (:func:`_settle_extension`), into
    ``created``."""
    settle = partial(
        _settle_extension, conn, migration, extensions or {}, {} if created is None else created
    )
    failure = run_in_transaction(
        conn, [migration], commit=True, server=server, settle=partial(settle, resume=False)
    )
    if failure is None or failure.sqlstate != NOT_IN_TRANSACTION:
        return failure
    attempt = partial(_statement_by_statement, conn, [migration])
    return _attempted(conn, server, attempt, partial(settle, resume=True))


def run_in_transaction(
    conn: psycopg.Connection[Any],
    migrations: Sequence[Migration],
    *,
    commit: bool,
    server: str,
    settle: Callable[[ReplayFailure], bool] = lambda _failure: False,
) -> ReplayFailure | None:
    """Run ``migrations`` in one transaction, committed or rolled back, one message each as
    ``migrate`` sends them (BEGIN goes with the first, the end with the last); the first
    refusal (see :func:`_attempted`), named by running the statements one by one again."""
    sent = [m for m in migrations if _statements(m)]
    end = b"\n;\nCOMMIT" if commit else b"\n;\nROLLBACK"  # the newline ends a trailing comment

    def attempt(_last: ReplayFailure | None) -> ReplayFailure | None:
        current: Migration | None = None
        try:
            for current in sent:
                message = b"\n;\n".join(s.encode("utf-8") for s in _statements(current))
                begin = b"BEGIN;\n" if current is sent[0] else b""
                conn.execute(begin + message + (end if current is sent[-1] else b""))
            return None
        except psycopg.Error as exc:
            if current is None or exc.sqlstate is None:
                raise
            conn.execute("ROLLBACK")  # the failed block (a failed COMMIT ended it: a warning)
            with conn.transaction(force_rollback=True):  # only to name the statement
                located = _statement_by_statement(conn, migrations)
            return located or _failure((current, 0, ""), exc)

    return _attempted(conn, server, attempt, settle)


def _attempted(
    conn: psycopg.Connection[Any],
    server: str,
    attempt: Callable[[ReplayFailure | None], ReplayFailure | None],
    settle: Callable[[ReplayFailure], bool],
) -> ReplayFailure | None:
    """The refusal of ``attempt`` (given the one before), attempted again once the roles it
    says are missing are created (production has them; a new shadow does not), once
    ``settle`` created an extension of production's it needs, or after a deadlock. Raises
    :class:`ReplayError` when the shadow lacks an extension: the shadow, not the folder, is at
    fault, and another shadow is the way out."""
    failure = None
    for _ in range(_ATTEMPTS):
        if (failure := attempt(failure)) is None:
            return None
        missing = _MISSING_EXTENSION.search(failure.message)
        if missing and failure.sqlstate in ("0A000", "58P01"):
            raise ReplayError(
                f"{failure.tag} needs the extension {missing.group(1)!r}, which the shadow "
                f"({server}) does not have: name a shadow server that has it (--shadow-url, or "
                "the playbook's shadow: {url_env: NAME})"
            )
        if failure.sqlstate not in TRANSIENT and not (
            _settle_role(conn, failure) or settle(failure)
        ):
            return failure
    return failure


def _statement_by_statement(
    conn: psycopg.Connection[Any],
    migrations: Sequence[Migration],
    resume: ReplayFailure | None = None,
) -> ReplayFailure | None:
    """Run ``migrations`` one statement at a time (in the caller's transaction, or each on
    its own); the first refusal. ``resume``: the last refusal of a migration run on its own,
    each statement committed: it goes on from the statement refused."""
    current: tuple[Migration, int, str] | None = None
    start = resume.number if resume else 1
    try:
        for migration in migrations:
            for number, statement in enumerate(_statements(migration)[start - 1 :], start):
                current = (migration, number, statement)
                conn.execute(statement.encode("utf-8"))
    except psycopg.Error as exc:
        if current is None or exc.sqlstate is None:
            raise
        return _failure(current, exc)
    return None


def _settle_role(conn: psycopg.Connection[Any], failure: ReplayFailure) -> bool:
    """Create the role a statement named if PostgreSQL said it is missing; drop the one it said
    exists: an earlier replay's outlives its database (roles are the server's, with no record
    of who made them: dropped on conflict, a crash's leftovers go too). One that objects
    elsewhere depend on cannot be dropped: the failure stands."""
    if failure.sqlstate == "42710" and (existing := _EXISTING_ROLE.search(failure.message)):
        try:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(existing.group(1))))
        except psycopg.Error:
            return False
        return True
    found = _MISSING_ROLE.search(failure.message)
    if failure.sqlstate not in _NO_SUCH_ROLE or found is None:
        return False
    try:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(found.group(1))))
    except psycopg.errors.InsufficientPrivilege:
        raise UsageError(
            f"{failure.tag} names the role {found.group(1)!r}, which the shadow lacks and its "
            f"user {conn.info.user!r} may not create: grant that user CREATEROLE on the "
            "shadow server, or create the role there"
        ) from None
    return True


def _statements(migration: Migration) -> list[str]:
    return [piece for piece in migration.statements if piece.strip()]


def _failure(current: tuple[Migration, int, str], exc: psycopg.Error) -> ReplayFailure:
    migration, number, statement = current
    message = exc.diag.message_primary or str(exc).splitlines()[0]
    return ReplayFailure(migration.tag, statement.strip(), message, exc.sqlstate, number)
