"""A contract double of the Neon API v2 subset orchestrator uses, on a local HTTP server.

It answers the request and response shapes of Neon's published reference for branches
(list, create, get, delete, restore) and operations (get): bearer-key authentication,
``{"code", "message"}`` errors, operations that run for a few polls then finish. Tests can
queue failures (429 with ``Retry-After``, 503, 423) and make the next operation fail.

It is a double of the *contract*, in memory: a branch here holds no data. (Backing branches
with real PostgreSQL databases, for backup and restore tests, is the next step.)
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class NeonState:
    """What the double holds and what tests inspect."""

    project_id: str
    api_key: str
    branches: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # method, path, body
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # queued answers
    fail_next_operation: bool = False
    polls_to_finish: int = 2
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def add_branch(self, name: str, parent_id: str | None = None) -> dict[str, Any]:
        branch = {
            "id": f"br-{name}-{next(self._ids)}",
            "project_id": self.project_id,
            "name": name,
            "parent_id": parent_id,
            "parent_lsn": None,
            "current_state": "ready",
        }
        self.branches[branch["id"]] = branch
        return branch

    def operation(self, action: str, branch_id: str) -> dict[str, Any]:
        op = {
            "id": str(uuid.uuid4()),
            "project_id": self.project_id,
            "branch_id": branch_id,
            "action": action,
            "status": "running",
            "failures_count": 0,
            "_polls": 0,
            "_fail": self.fail_next_operation,
        }
        self.fail_next_operation = False
        self.operations[op["id"]] = op
        return _public(op)


def _public(op: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in op.items() if not k.startswith("_")}


@contextmanager
def neon_double(
    project_id: str = "round-river-123456", api_key: str = "napi_test"
) -> Iterator[tuple[str, NeonState]]:
    """Serve the double on 127.0.0.1; yields its API base URL and its state."""
    state = NeonState(project_id, api_key)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            with lock:
                state.requests.append((method, self.path, body))
                if self.headers.get("Authorization") != f"Bearer {state.api_key}":
                    self._send(401, {"code": "", "message": "authentication required"})
                    return
                if state.failures:
                    status, headers = state.failures.pop(0)
                    self._send(status, {"code": "", "message": "try again"}, headers)
                    return
                self._route(method, body)

        def _route(self, method: str, body: Any) -> None:
            parts = self.path.strip("/").split("/")
            base = ["api", "v2", "projects", state.project_id]
            if parts[:4] != base:
                self._send(404, {"code": "", "message": "project not found"})
                return
            rest = parts[4:]
            if rest == ["branches"] and method == "GET":
                self._send(200, {"branches": list(state.branches.values())})
            elif rest == ["branches"] and method == "POST":
                spec = (body or {}).get("branch", {})
                if spec.get("parent_id") not in state.branches:
                    self._send(400, {"code": "", "message": "parent branch not found"})
                    return
                branch = state.add_branch(spec.get("name") or "branch", spec["parent_id"])
                branch["parent_lsn"] = spec.get("parent_lsn")
                self._send(
                    201,
                    {
                        "branch": branch,
                        "operations": [state.operation("create_branch", branch["id"])],
                    },
                )
            elif len(rest) == 2 and rest[0] == "branches":
                branch = state.branches.get(rest[1])
                if branch is None:
                    self._send(404, {"code": "", "message": "branch not found"})
                elif method == "GET":
                    self._send(200, {"branch": branch})
                elif method == "DELETE":
                    del state.branches[rest[1]]
                    op = state.operation("delete_timeline", rest[1])
                    self._send(200, {"branch": branch, "operations": [op]})
            elif len(rest) == 3 and rest[0] == "branches" and rest[2] == "restore":
                if (
                    rest[1] not in state.branches
                    or (body or {}).get("source_branch_id") not in state.branches
                ):
                    self._send(404, {"code": "", "message": "branch not found"})
                    return
                preserved = state.add_branch(body["preserve_under_name"], rest[1])
                op = state.operation("restore", rest[1])
                self._send(200, {"branch": state.branches[rest[1]], "operations": [op]})
                del preserved["parent_lsn"]
            elif len(rest) == 2 and rest[0] == "operations" and method == "GET":
                op = state.operations.get(rest[1])
                if op is None:
                    self._send(404, {"code": "", "message": "operation not found"})
                    return
                op["_polls"] += 1
                if op["_polls"] >= state.polls_to_finish:
                    op["status"] = "failed" if op["_fail"] else "finished"
                    if op["_fail"]:
                        op["error"] = "timeline creation failed"
                self._send(200, {"operation": _public(op)})
            else:
                self._send(404, {"code": "", "message": "no such endpoint"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v2", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
