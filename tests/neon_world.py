"""The set-up the Neon tests share: a release world (tests/release_world.py) whose playbook
takes ``neon_branch`` backups through the Neon contract double (tests/neon_double.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.neon_double import NeonState, neon_double
from tests.playbooks import write_playbook
from tests.release_world import World

__all__ = ["neon_world"]


@contextmanager
def neon_world(
    world: World,
    api_key: str,
    *,
    cluster_url: str | None = None,
    production: str | None = None,
) -> Iterator[NeonState]:
    """The double, holding production's branch ``main``, with the world's playbook pointing
    at it (``backup: {kind: neon_branch}``, a ``neon:`` block, a 200 ms monitor).

    ``cluster_url``: a superuser URL of the cluster whose databases back the branches (see
    :func:`tests.neon_double.neon_double`); ``production``: then the database that is
    ``main``. The key is not set in the environment: each test says where it goes.
    """
    with neon_double(api_key=api_key, cluster_url=cluster_url) as (url, state):
        state.add_branch("main", database=production)
        write_playbook(
            world.playbook,
            repo=world.repo,
            health_url=world.health.url,
            backup="{kind: neon_branch}",
            duration="200ms",
            interval="100ms",
        )
        with world.playbook.open("a") as playbook:
            playbook.write(f"neon: {{project_id: {state.project_id}, api_url: '{url}'}}\n")
        yield state
