"""A contract double of the Neon API v2 subset orchestrator uses, on a local HTTP server.

It answers the request and response shapes of Neon's published reference
(``https://api-docs.neon.tech``, the API v2 OpenAPI description) for branches (list,
create, get, delete, restore), operations (get, list) and the connection URI
(``GET /projects/{id}/connection_uri``), projects (``GET /projects``, an organization's), the
key's organizations (``GET /users/me/organizations``) and endpoints
(``GET /projects/{id}/endpoints``): bearer-key authentication, ``{"code", "message"}``
errors, operations that run for a few polls then finish (``OperationStatus``: running, then
finished, failed or error). Tests can queue failures (429 with ``Retry-After``, 503, 423),
make the next operation fail (``fail_next_operation``: ``"failed"`` or ``"error"``), and
lose answers after doing the work (``lost``: the reference's "the request may have reached
the server and been successfully processed, but the response failed to reach the
client"; the connection closed, or a 504 in its place), the branch so made listed only
after ``late_listings`` listings.

Backed by real PostgreSQL when given a cluster (``neon_double(cluster_url=...)``): each
branch is a real database of that cluster. Creating a branch copies its parent's database
(``pg_dump | pg_restore``: ``CREATE DATABASE ... TEMPLATE`` would need the parent to have no
other connection); deleting it drops the database; restoring a branch from another replaces
its contents with the source's (disconnecting its sessions, as Neon restarts the compute),
keeping the old contents as a new branch under ``preserve_under_name``. A branch created
with ``endpoints: [{type: read_write}]`` gets an endpoint, and the create answer carries
``connection_uris`` (and ``connection_uri`` answers ``{"uri"}``) pointing at the branch's
database on the local cluster, with the cluster's own role and password.

What it cannot do (it is a double of the *contract*, not of Neon's storage):

- replay to an exact LSN. A branch or a restore copies the source as it is at the moment of
  the request; the ``parent_lsn`` / ``source_lsn`` sent are recorded (on the branch, and in
  :attr:`NeonState.restores`) for tests to check, not honoured;
- keep a branch's databases under their own names: the copy of database ``app`` lives in a
  database named after the branch id, so ``connection_uri`` answers with that name;
- speak TLS: its URIs carry no ``sslmode=require&channel_binding=require``;
- stand for an organization's or a project's key: its key is a personal one, whose
  ``GET /projects`` names the organization (and one the user is not in is not refused).

Without a cluster it keeps branches in memory only (they hold no data).
"""

from __future__ import annotations

import functools
import itertools
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from orchestrator.sandbox.pg import ServerBinariesMissing, find_bindir, with_dbname
from tests.http_double import LOST, Reply, Request, lose_answer, queued_failure, serve


@functools.cache
def _tool(name: str) -> str:
    """``pg_dump`` / ``pg_restore`` of the server's installation, else from PATH."""
    try:
        return str(find_bindir() / name)
    except ServerBinariesMissing:
        found = shutil.which(name)
        if found is None:
            raise
        return found


@dataclass
class PostgresBacking:
    """The databases behind the branches, on one local cluster (superuser ``cluster_url``)."""

    cluster_url: str
    made: list[str] = field(default_factory=list)  # databases the double created

    def url(self, database: str) -> str:
        """A connection string for ``database`` on the cluster."""
        return with_dbname(self.cluster_url, database)

    def role(self) -> str:
        return str(conninfo_to_dict(self.cluster_url).get("user") or "postgres")

    def copy(self, source: str, target: str) -> None:
        """Create ``target`` holding what ``source`` holds now (pg_dump | pg_restore)."""
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
        self.made.append(target)
        dump = subprocess.Popen(
            [_tool("pg_dump"), "--format=custom", "--no-owner", f"--dbname={self.url(source)}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert dump.stdout is not None
        restore = subprocess.run(
            [_tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={self.url(target)}"],
            stdin=dump.stdout,
            capture_output=True,
            check=False,
        )
        dump.stdout.close()
        _out, dump_err = dump.communicate()
        if dump.returncode or restore.returncode:
            raise RuntimeError(f"copy {source} -> {target}: {dump_err!r} {restore.stderr!r}")

    def rename(self, old: str, new: str) -> None:
        """Rename a database, disconnecting its sessions first (Neon restarts the compute)."""
        self.disconnect(old)
        self._admin(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(old), sql.Identifier(new)
            )
        )
        self.made.append(new)

    def drop(self, database: str) -> None:
        self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )

    def exists(self, database: str) -> bool:
        with psycopg.connect(self.cluster_url, autocommit=True) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            return row.fetchone() is not None

    def disconnect(self, database: str) -> None:
        with psycopg.connect(self.cluster_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.cluster_url, autocommit=True) as conn:
            conn.execute(statement)


@dataclass
class NeonState:
    """What the double holds and what tests inspect."""

    project_id: str
    api_key: str
    backing: PostgresBacking | None = None
    org_id: str = "org-calm-sea-12345678"  # the organization holding the project
    # The organizations the key's user belongs to (``GET /users/me/organizations``).
    organizations: list[str] = field(default_factory=lambda: ["org-calm-sea-12345678"])
    branches: dict[str, dict[str, Any]] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)  # branch id -> real database
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)  # branch id -> endpoint
    database_name: str = "neondb"  # the database's name as production's URL spells it
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # method, path, body
    restores: list[dict[str, Any]] = field(default_factory=list)  # target id + body, in order
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # queued answers
    fail_next_operation: bool | str = False  # True or "failed"; "error"
    lost: list[str] = field(default_factory=list)  # answers to lose: "POST /branches", ...
    # Listings that do not show yet a branch made by a request whose answer was lost: the
    # reference says such a request "may have reached the server and been successfully
    # processed", which a gateway giving up (504) does not wait for.
    late_listings: int = 0
    _unlisted: dict[str, int] = field(default_factory=dict)  # branch id: listings left
    polls_to_finish: int = 2
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def add_branch(
        self, name: str, parent_id: str | None = None, *, database: str | None = None
    ) -> dict[str, Any]:
        """A new branch. Backed: ``database`` names an existing database to stand for it
        (production's); otherwise the parent's database is copied."""
        branch = {
            "id": f"br-{name}-{next(self._ids)}",
            "project_id": self.project_id,
            "name": name,
            "parent_id": parent_id,
            "parent_lsn": None,
            "current_state": "ready",
        }
        if self.backing is not None:
            if database is not None:
                self.database_name = database
            else:
                assert parent_id is not None, "a backed branch needs a parent or a database"
                database = f"neon_{branch['id'].replace('-', '_')}"
                self.backing.copy(self.databases[parent_id], database)
            self.databases[branch["id"]] = database
        self.branches[branch["id"]] = branch
        return branch

    def add_endpoint(
        self, branch_id: str, *, endpoint_id: str | None = None, host: str = "127.0.0.1"
    ) -> dict[str, Any]:
        """A read-write endpoint of the branch (``endpoint_id``/``host``: as Neon names
        them, ``ep-...`` and ``ep-....region.aws.neon.tech``, for tests reading a host)."""
        endpoint = {
            "id": endpoint_id or f"ep-{branch_id.removeprefix('br-')}",
            "project_id": self.project_id,
            "branch_id": branch_id,
            "type": "read_write",
            "host": host,
            "current_state": "active",
        }
        self.endpoints[branch_id] = endpoint
        return endpoint

    def uri(self, branch_id: str) -> str:
        """The branch's connection URI (its real database on the local cluster)."""
        assert self.backing is not None
        return self.backing.url(self.databases[branch_id])

    def connection_uris(self, branch_id: str) -> list[dict[str, Any]]:
        assert self.backing is not None
        params = conninfo_to_dict(self.uri(branch_id))
        return [
            {
                "connection_uri": self.uri(branch_id),
                "connection_parameters": {
                    "database": params.get("dbname"),
                    "password": params.get("password", ""),
                    "role": self.backing.role(),
                    "host": params.get("host"),
                    "pooler_host": params.get("host"),
                },
            }
        ]

    def delete_branch(self, branch_id: str) -> None:
        del self.branches[branch_id]
        self.endpoints.pop(branch_id, None)
        database = self.databases.pop(branch_id, None)
        if self.backing is not None and database is not None:
            self.backing.drop(database)

    def restore(self, branch_id: str, body: dict[str, Any]) -> None:
        """Replace the branch's contents with the source branch's; keep the old ones as
        ``preserve_under_name`` (which becomes the branch's parent, as on Neon), which takes
        the branch's children (``BranchRestoreRequest``: "All existing child branches will be
        moved to the newly created branch")."""
        self.restores.append({"branch_id": branch_id, **body})
        target, source = self.branches[branch_id], body["source_branch_id"]
        keep = body.get("preserve_under_name")
        preserved = None
        if keep:
            preserved = {
                "id": f"br-{keep}-{next(self._ids)}",
                "project_id": self.project_id,
                "name": keep,
                "parent_id": target["parent_id"],
                "current_state": "ready",
            }
            for child in self.children(branch_id):
                child["parent_id"] = preserved["id"]
            self.branches[preserved["id"]] = preserved
            target["parent_id"] = preserved["id"]
        if self.backing is None:
            return
        database = self.databases[branch_id]
        if preserved is not None:
            kept = f"neon_{preserved['id'].replace('-', '_')}"
            self.backing.rename(database, kept)
            self.databases[preserved["id"]] = kept
        else:
            self.backing.disconnect(database)
            self.backing.drop(database)
        self.backing.copy(self.databases[source], database)

    def children(self, branch_id: str) -> list[dict[str, Any]]:
        return [b for b in self.branches.values() if b["parent_id"] == branch_id]

    def operation(self, action: str, branch_id: str) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat()
        op = {
            "id": str(uuid.uuid4()),
            "project_id": self.project_id,
            "branch_id": branch_id,
            "action": action,
            "status": "running",
            "failures_count": 0,
            "created_at": now,
            "updated_at": now,
            "total_duration_ms": 0,
            "_polls": 0,
            "_fail": self.fail_next_operation,
        }
        self.fail_next_operation = False
        self.operations[op["id"]] = op
        return _public(op)

    def branch_names(self) -> list[str]:
        return sorted(str(b["name"]) for b in self.branches.values())


def _public(op: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in op.items() if not k.startswith("_")}


def _error(status: int, message: str) -> Reply:
    """Neon's error shape, ``{"code", "message"}``."""
    return status, {"code": "", "message": message}


def _answer(state: NeonState, request: Request) -> Reply:
    """Authenticate, answer a queued failure, or route the call."""
    state.requests.append((request.method, request.target, request.body))
    if request.headers.get("Authorization") != f"Bearer {state.api_key}":
        return _error(401, "authentication required")
    failure = queued_failure(state.failures, {"code": "", "message": "try again"})
    if failure is not None:
        return failure
    if request.segments == ["api", "v2", "projects"] and request.method == "GET":
        return _projects(state, request.query)
    if request.segments == ["api", "v2", "users", "me", "organizations"]:
        return 200, {"organizations": [{"id": org, "name": org} for org in state.organizations]}
    if request.segments[:4] != ["api", "v2", "projects", state.project_id]:
        return _error(404, "project not found")
    before = set(state.branches)
    reply = lose_answer(state.lost, request, _route(state, request))
    if reply[0] == LOST or (reply[0] >= 500 and request.method != "GET"):
        state._unlisted.update(dict.fromkeys(set(state.branches) - before, state.late_listings))
    return reply


def _route(state: NeonState, request: Request) -> Reply:
    method, body, rest = request.method, request.body, request.segments[4:]
    if rest == ["operations"] and method == "GET":
        # OperationsResponse: newest first, with a cursor pagination object; the batch after
        # ``cursor``, of ``limit`` ("a value from 1 to 1000 to limit number of operations in
        # the response"; no default is published: all of them here).
        listed = [_public(op) for op in reversed(state.operations.values())]
        ids = [op["id"] for op in listed]
        after = request.query.get("cursor")
        listed = listed[ids.index(after) + 1 if after in ids else 0 :]
        listed = listed[: int(request.query.get("limit", len(listed)))]
        cursor = listed[-1]["id"] if listed else after or state.project_id  # minLength 1
        return 200, {"operations": listed, "pagination": {"cursor": cursor}}
    if rest == ["branches"] and method == "GET":
        return 200, {"branches": _listed(state), "annotations": {}}
    if rest == ["branches"] and method == "POST":
        return _create(state, body or {})
    if rest == ["endpoints"] and method == "GET":
        return 200, {"endpoints": list(state.endpoints.values())}
    if rest == ["connection_uri"] and method == "GET":
        return _connection_uri(state, request.query)
    if len(rest) == 2 and rest[0] == "branches":
        branch = state.branches.get(rest[1])
        if branch is None:
            return _error(404, "branch not found")
        if method == "GET":  # Neon makes the branch whether its operation is polled or not
            for op in state.operations.values():
                if op["branch_id"] == rest[1] and op["action"] == "create_branch":
                    _advance(state, op)
            return 200, {"branch": branch}
        if method == "DELETE" and state.children(rest[1]):  # the reference: "You cannot
            return _error(409, "branch has children")  # delete a branch that has a child"
        if method == "DELETE":
            state.delete_branch(rest[1])
            op = state.operation("delete_timeline", rest[1])
            return 200, {"branch": branch, "operations": [op]}
    elif len(rest) == 3 and rest[0] == "branches" and rest[2] == "restore":
        source = (body or {}).get("source_branch_id")
        if rest[1] not in state.branches or source not in state.branches:
            return _error(404, "branch not found")
        state.restore(rest[1], body)
        op = state.operation("create_timeline", rest[1])
        return 200, {"branch": state.branches[rest[1]], "operations": [op]}
    elif len(rest) == 2 and rest[0] == "operations" and method == "GET":
        return _poll(state, rest[1])
    return _error(404, "no such endpoint")


def _listed(state: NeonState) -> list[dict[str, Any]]:
    """The branches a listing shows: not yet one whose making answered nothing clear while
    it has ``late_listings`` listings left to be missing from."""
    for branch_id, left in list(state._unlisted.items()):
        state._unlisted[branch_id] = left - 1
    return [b for b in state.branches.values() if state._unlisted.get(b["id"], -1) < 0]


def _projects(state: NeonState, query: dict[str, str]) -> Reply:
    """``GET /projects``: the projects of organization ``org_id`` (this double holds one, in
    ``state.org_id``), a page at a time; the page after the last is empty, with its
    ``cursor`` (Neon's published pagination).

    The key is a personal one, so ``org_id`` is required. Neon's reference, listProjects
    (https://neon.com/docs/reference/api/projects/list-projects.md): "Retrieves a list of
    projects for the specified organization. If using a personal API key, include the
    `org_id` parameter to specify which organization to work with." Without it, the Neon
    CLI's page on its raw ``api`` command (https://neon.com/docs/cli/api) says ``/projects``
    "returns `ERROR: org_id is required` unless you add `-Q org_id=<org_id>` or authenticate
    with an organization API key". The organizations to name are the user's:
    getCurrentUserOrganizations
    (https://neon.com/docs/reference/api/users/get-current-user-organizations.md), "the
    organizations that the currently authenticated user belongs to" (for an organization
    or project key, "the single organization that owns the key"). Neither page gives the
    refusal's status: 400 and the message below are the answer users report
    (neondatabase/website#5671), not a documented contract. Every project is an
    organization's: "Personal accounts have been migrated to organizations"
    (https://neon.com/docs/reference/api/users/transfer-projects-from-user-to-org)."""
    org = query.get("org_id")
    if not org:
        return _error(400, "org_id is required, you can find it on your organization settings page")
    project = {"id": state.project_id, "name": "service-desk", "region_id": "aws-us-east-2"}
    page = [project] if org == state.org_id and not query.get("cursor") else []
    return 200, {"projects": page, "pagination": {"cursor": state.project_id}}


def _poll(state: NeonState, op_id: str) -> Reply:
    """An operation, one poll nearer its end."""
    op = state.operations.get(op_id)
    if op is None:
        return _error(404, "operation not found")
    _advance(state, op)
    return 200, {"operation": _public(op)}


def _advance(state: NeonState, op: dict[str, Any]) -> None:
    """One look nearer the operation's end (``polls_to_finish``); a branch whose creation
    finishes is ``ready`` (BranchState: "init - the branch is being created but is not
    available for querying")."""
    op["_polls"] += 1
    if op["_polls"] >= state.polls_to_finish and op["status"] == "running":
        fail = op["_fail"]
        op["status"] = (fail if isinstance(fail, str) else "failed") if fail else "finished"
        if fail:
            op["error"] = "timeline creation failed"
        elif op["action"] == "create_branch" and op["branch_id"] in state.branches:
            state.branches[op["branch_id"]]["current_state"] = "ready"


def _create(state: NeonState, body: dict[str, Any]) -> Reply:
    """A new branch of ``parent_id``, with a read-write endpoint when asked for one."""
    spec = body.get("branch", {})
    if spec.get("parent_id") not in state.branches:
        return _error(400, "parent branch not found")
    branch = state.add_branch(spec.get("name") or "branch", spec["parent_id"])
    branch.update(parent_lsn=spec.get("parent_lsn"), current_state="init")
    operations = [state.operation("create_branch", branch["id"])]
    answer: dict[str, Any] = {"branch": branch}
    wanted = body.get("endpoints") or []
    if any(e.get("type") == "read_write" for e in wanted):
        answer["endpoints"] = [state.add_endpoint(branch["id"])]
        operations.append(state.operation("start_compute", branch["id"]))
        if state.backing is not None:
            answer["connection_uris"] = state.connection_uris(branch["id"])
    answer["operations"] = operations
    return 201, answer


def _connection_uri(state: NeonState, query: dict[str, str]) -> Reply:
    """``{"uri"}`` of a branch's database as a role, as Neon checks them."""
    branch_id = query.get("branch_id", "")
    database = query.get("database_name", "")
    role = query.get("role_name", "")
    if not database or not role:
        return _error(400, "database_name and role_name required")
    if branch_id not in state.branches:
        return _error(404, "branch not found")
    if branch_id not in state.endpoints or state.backing is None:
        return _error(404, "read-write endpoint not found")
    if database != state.database_name:
        return _error(404, f"database {database} not found")
    if role != state.backing.role():
        return _error(404, f"role {role} not found")
    return 200, {"uri": state.uri(branch_id)}


@contextmanager
def neon_double(
    project_id: str = "round-river-123456",
    api_key: str = "napi_test",
    *,
    cluster_url: str | None = None,
) -> Iterator[tuple[str, NeonState]]:
    """Serve the double on 127.0.0.1; yields its API base URL and its state.

    ``cluster_url``: a superuser URL of a local cluster whose databases back the branches;
    every database the double made is dropped at the end.
    """
    backing = PostgresBacking(cluster_url) if cluster_url else None
    state = NeonState(project_id, api_key, backing)
    try:
        with serve(lambda request: _answer(state, request), ("GET", "POST", "DELETE")) as url:
            yield f"{url}/api/v2", state
    finally:
        if backing is not None:
            production = {state.database_name}
            for database in backing.made:
                if database not in production:
                    backing.drop(database)
