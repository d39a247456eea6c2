"""``deploy --dry-run --rehearse-on neon-branch``: a throwaway branch of production, with a
read-write compute, for the rehearsal to migrate for real.

The branch (``rehearsal-<id>``) is created at production's head and deleted when the
rehearsal ends, however it ends: an error, Ctrl-C, or SIGTERM (a handler turns SIGTERM into
KeyboardInterrupt for the time the branch exists, so the deletion runs). Only SIGKILL can
leave it behind; its name says what it was.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg.conninfo import conninfo_to_dict

from orchestrator.errors import UsageError
from orchestrator.interrupts import signals_interrupt
from orchestrator.neon.api import Branch, NeonApi, NeonError
from orchestrator.neon.backup import production_branch
from orchestrator.playbook import Playbook

REHEARSE_ON_NEON_BRANCH = "neon-branch"


def rehearsal_branch_name(rehearsal_id: str) -> str:
    """The temporary branch of one rehearsal."""
    return f"rehearsal-{rehearsal_id}"


@contextmanager
def rehearsal_branch(
    api: NeonApi, playbook: Playbook, production_url: str, *, name: str
) -> Iterator[tuple[Branch, str]]:
    """Branch production with a read-write compute; yield the branch and the connection URI
    of production's database (same database and role names) on it; delete the branch at the
    end, also on KeyboardInterrupt and SIGTERM."""
    params = conninfo_to_dict(production_url)
    database, role = params.get("dbname"), params.get("user")
    if not database or not role:
        raise UsageError(
            "--rehearse-on neon-branch needs the database and user names in the production "
            "connection string"
        )
    production = production_branch(api, playbook)
    with signals_interrupt(signal.SIGTERM):
        branch: Branch | None = None
        try:
            branch = api.create_branch(
                parent_id=production.id, parent_lsn=None, name=name, compute=True
            )
            url = api.connection_uri(branch.id, database_name=str(database), role_name=str(role))
            yield branch, url
        finally:
            with _signals_deferred():
                _delete(api, branch, name)


def _delete(api: NeonApi, branch: Branch | None, name: str) -> None:
    """Delete the rehearsal's branch; also when interrupted before its id came back."""
    try:
        if branch is None:  # the create call may have gone through before the interruption
            branch = api.find_branch(name)
        if branch is not None:
            api.delete_branch(branch.id)
    except NeonError as exc:
        raise NeonError(
            f"the rehearsal branch {name} could not be deleted ({exc}): delete it in the "
            "Neon console"
        ) from None


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the branch is deleted (a second Ctrl-C must not
    leave it behind); they are delivered afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
