"""A small client of the Neon API v2: the branch and operation calls a release needs.

Endpoints (Neon's published reference, ``https://console.neon.tech/api/v2``):

- ``GET    /projects/{project_id}/branches``                 list branches (find by name)
- ``POST   /projects/{project_id}/branches``                 create a branch
- ``GET    /projects/{project_id}/branches/{branch_id}``     get a branch
- ``DELETE /projects/{project_id}/branches/{branch_id}``     delete a branch
- ``POST   /projects/{project_id}/branches/{branch_id}/restore``   restore a branch
- ``GET    /projects/{project_id}/operations/{operation_id}``      poll an operation
- ``GET    /projects/{project_id}/operations``                   the project's operations
- ``GET    /projects/{project_id}/connection_uri``               a branch's connection URI

Every call goes through the platforms' shared transport
(:class:`orchestrator.platforms.http.ApiClient`), which also asks again after Neon's 423
(5 times, 3 s apart, as Neon's own CLI does). A call that changes something is never sent
twice blindly: when its answer is lost, the client looks for what it would have made (the
branch by its name, the preserved branch, the branch gone), a few times, and adopts it; not
seen, what happened is unknown. Calls that start work return operations, which
:meth:`NeonApi.wait` polls until they finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.db.retry import RetryPolicy
from orchestrator.platforms.http import LATE_PAUSES, ApiClient, ApiError, look_late

DEFAULT_API_URL = "https://console.neon.tech/api/v2"
# 423: another operation of the project runs. Neon's CLI asks again 5 times, 3 s apart.
LOCKED_RETRIES = (5, 3.0)
# OperationStatus in Neon's OpenAPI v2: scheduling, running, finished, failed, error,
# cancelling, cancelled, skipped.
_DONE = frozenset({"finished", "skipped"})
_STOPPED = frozenset({"failed", "error", "cancelled", "cancelling"})
_FIRST_POLL = 0.2  # seconds before the first poll of an operation
_MAKING = frozenset({"init", "resetting"})  # BranchState: not yet available for querying


class NeonError(ApiError):
    """The Neon API refused a call or an operation failed (a failed check: exit 21).
    ``status`` is the HTTP status of a refusal (``None`` for an operation that failed, or
    when the API could not be reached)."""


class OperationFailed(NeonError):
    """Neon ran the operation and it ended failed, error or cancelled."""


def _unseen(exc: NeonError, name: str) -> NeonError:
    """``exc``, still ambiguous: the branch its call would have made is not listed yet."""
    return NeonError(
        f"{exc}; no branch {name} after {sum(LATE_PAUSES):g}s of looking: what happened is "
        "unknown, look in the Neon console before anything else",
        status=exc.status,
        ambiguous=True,
    )


@dataclass(frozen=True)
class Branch:
    """A Neon branch as the API describes it (the fields a release uses)."""

    id: str
    name: str
    parent_id: str | None
    parent_lsn: str | None
    state: str | None = None  # current_state (pending_state says what it is changing to)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Branch:
        return cls(
            id=str(data["id"]),
            name=str(data.get("name", "")),
            parent_id=data.get("parent_id"),
            parent_lsn=data.get("parent_lsn"),
            state=data.get("current_state"),
        )


@dataclass
class NeonApi:
    """Calls for one project. ``api_key`` is kept out of ``repr`` and every message."""

    project_id: str
    api_key: str = field(repr=False)
    api_url: str = DEFAULT_API_URL
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll_interval: float = 1.0
    operation_timeout: float = 600.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)  # for the deadline
    on_retry: Callable[[int, str, float], None] | None = field(default=None, repr=False)

    # -- branches --------------------------------------------------------------------------

    def find_branch(self, name_or_id: str) -> Branch | None:
        """The branch whose id or name is ``name_or_id`` (None when there is none)."""
        listing = self._api.call("GET", f"/projects/{self.project_id}/branches")
        for data in listing.get("branches", ()):
            if name_or_id in (data.get("id"), data.get("name")):
                return Branch.from_json(data)
        return None

    def get_branch(self, branch_id: str) -> Branch | None:
        """The branch ``branch_id``, or None if it does not exist (any more)."""
        data = self._api.call("GET", self._branch(branch_id), missing_ok=True)
        return None if data is None else Branch.from_json(data["branch"])

    def create_branch(
        self, *, parent_id: str, parent_lsn: str | None, name: str, compute: bool = False
    ) -> Branch:
        """Create a branch of ``parent_id`` at ``parent_lsn`` and wait until it is ready.

        ``compute``: also give it a read-write compute (a rehearsal connects to it); a
        backup branch needs none.
        """
        branch: dict[str, Any] = {"parent_id": parent_id, "name": name}
        if parent_lsn is not None:
            branch["parent_lsn"] = parent_lsn
        body: dict[str, Any] = {"branch": branch}
        if compute:
            body["endpoints"] = [{"type": "read_write"}]
        try:
            data = self._api.call("POST", f"/projects/{self.project_id}/branches", json=body)
        except NeonError as exc:
            if not exc.ambiguous:
                raise
            made = look_late(self.sleep, lambda: self.find_branch(name))  # was it made?
            if made is None:
                raise _unseen(exc, name) from None
            self.wait(self.operations_of(made.id))
            return made
        self.wait(data.get("operations", ()))
        return Branch.from_json(data["branch"])

    def delete_branch(self, branch_id: str) -> None:
        """Delete a branch (nothing to do if it is already gone) and wait for it."""
        try:
            data = self._api.call("DELETE", self._branch(branch_id), missing_ok=True)
        except NeonError as exc:
            if not exc.ambiguous or self.get_branch(branch_id) is not None:
                raise
            return  # the answer was lost, the branch is gone: it was deleted
        if data is not None:
            self.wait(data.get("operations", ()))

    def restore_branch(
        self, branch_id: str, *, source_branch_id: str, source_lsn: str | None, preserve_as: str
    ) -> None:
        """Restore ``branch_id`` to ``source_branch_id`` at ``source_lsn``, keeping the
        branch's present state under the name ``preserve_as``; wait until done."""
        body: dict[str, Any] = {
            "source_branch_id": source_branch_id,
            "preserve_under_name": preserve_as,
        }
        if source_lsn is not None:
            body["source_lsn"] = source_lsn
        earlier = {op.get("id") for op in self.operations_of(branch_id)}  # not this restore's
        try:
            data = self._api.call("POST", f"{self._branch(branch_id)}/restore", json=body)
        except NeonError as exc:
            if not exc.ambiguous:
                raise
            # The answer was lost: a restore keeps the old state under preserve_as, so that
            # branch existing says Neon carried it out.
            if look_late(self.sleep, lambda: self.find_branch(preserve_as)) is None:
                raise _unseen(exc, preserve_as) from None
            self.wait(op for op in self.operations_of(branch_id) if op.get("id") not in earlier)
            return
        self.wait(data.get("operations", ()))

    def connection_uri(self, branch_id: str, *, database_name: str, role_name: str) -> str:
        """The direct connection URI of ``database_name`` as ``role_name`` on the read-write
        endpoint of ``branch_id``. It holds the role's password: never print it unredacted."""
        data = self._api.call(
            "GET",
            f"/projects/{self.project_id}/connection_uri",
            params={"branch_id": branch_id, "database_name": database_name, "role_name": role_name},
        )
        return str(data["uri"])

    def made(self, branch: Branch | None) -> Branch | None:
        """``branch`` once Neon has made it (its state no longer ``init``), read again until
        then; None if it is gone; NeonError after ``operation_timeout``."""
        deadline, pause = self.clock() + self.operation_timeout, _FIRST_POLL
        while branch is not None and branch.state in _MAKING:
            if self.clock() >= deadline:
                late = f"still {branch.state} after {self.operation_timeout:g}s"
                raise NeonError(f"Neon branch {branch.name} {late}")
            self.sleep(min(pause, self.poll_interval))
            pause *= 2
            branch = self.get_branch(branch.id)
        return branch

    # -- operations ------------------------------------------------------------------------

    def operations_of(self, branch_id: str) -> list[dict[str, Any]]:
        """The project's latest operations on ``branch_id`` (to wait for after adopting
        work whose answer was lost)."""
        data = self._api.call(
            "GET", f"/projects/{self.project_id}/operations", params={"limit": "100"}
        )
        return [op for op in data.get("operations") or () if op.get("branch_id") == branch_id]

    def wait(self, operations: Iterable[dict[str, Any]]) -> None:
        """Poll each operation until it finishes: OperationFailed if one fails, NeonError if
        they take longer than ``operation_timeout``, rate limits waited out included."""
        deadline = self.clock() + self.operation_timeout
        for operation in operations:
            op_id, status = str(operation.get("id")), str(operation.get("status"))
            pause = _FIRST_POLL  # most operations end within a second: poll soon, then less
            while status not in _DONE:
                if status in _STOPPED:
                    detail = operation.get("error") or status
                    action = operation.get("action")
                    raise OperationFailed(f"Neon operation {op_id} ({action}): {detail}")
                late = f"Neon operation {op_id} still {status} after {self.operation_timeout:g}s"
                left = deadline - self.clock()
                if left <= 0:
                    raise NeonError(late)
                self.sleep(min(pause, self.poll_interval, left))
                pause *= 2
                # A rate limit is waited out only within what is left before the deadline.
                api = replace(self._api, wait_limit=max(0.0, deadline - self.clock()))
                try:
                    data = api.call("GET", f"/projects/{self.project_id}/operations/{op_id}")
                except NeonError as exc:  # a 429: its Retry-After would pass the deadline
                    raise (NeonError(late) if exc.status == 429 else exc) from None
                operation = data["operation"]
                status = str(operation.get("status"))

    # -- transport -------------------------------------------------------------------------

    def _branch(self, branch_id: str) -> str:
        return f"/projects/{self.project_id}/branches/{branch_id}"

    @property
    def _api(self) -> ApiClient:
        """The shared transport (:class:`ApiClient`) for this project's calls: Neon's 423
        asked again on its own schedule, refusals raised as :class:`NeonError`."""
        return ApiClient(
            "Neon API",
            self.api_url,
            self.api_key,
            retry=self.retry,
            sleep=self.sleep,
            on_retry=self.on_retry,
            fixed={423: LOCKED_RETRIES},
            wait_limit=self.operation_timeout,
            error=NeonError,
            # Neon's reference, each endpoint's errors (api-docs.neon.tech): "Any request that
            # returns a 503 Service Unavailable response is always safe to retry".
            safe=frozenset({503}),
        )
