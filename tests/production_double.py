"""A stand-in for production's hosting, for the release gate's tests: what is live follows
the real bare origin's target branch after a build delay, as on Vercel.

:class:`LiveCommit` reads ``git rev-parse <branch>`` in the origin: a new tip "builds" for
``build_seconds``, then is live. :class:`VersionEndpoint` is a local HTTP server whose
``GET /api/version`` answers ``{"commit": <live sha>}``: the old sha for a few seconds
after a merge, then the new one. It records when it first served each commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.sandbox.release import git
from tests.http_double import Reply, Request, serve


@dataclass
class LiveCommit:
    """The commit production runs: the origin branch's tip, once it has built."""

    origin: Path
    branch: str = "main"
    build_seconds: float = 2.0
    live: str = ""
    building: str = ""
    since: float = 0.0
    switched_at: dict[str, float] = field(default_factory=dict)  # commit -> time.time()
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.live = self.tip()
        self.switched_at[self.live] = time.time()

    def tip(self) -> str:
        """The origin branch's tip now."""
        return git(self.origin, "rev-parse", f"refs/heads/{self.branch}")

    def now(self) -> str:
        """The live commit now (a new tip goes live ``build_seconds`` after first seen)."""
        with self._lock:
            tip = self.tip()
            if tip != self.live:
                if tip != self.building:
                    self.building, self.since = tip, time.monotonic()
                elif time.monotonic() - self.since >= self.build_seconds:
                    self.live = tip
                    self.switched_at[tip] = time.time()
            return self.live


@dataclass
class VersionEndpoint:
    """``GET /api/version`` -> ``{"commit": "<sha>"}`` of :class:`LiveCommit`."""

    production: LiveCommit
    status: int = 200
    requests: int = 0
    url: str = ""


@contextmanager
def version_endpoint(production: LiveCommit) -> Iterator[VersionEndpoint]:
    """Serve the version endpoint on 127.0.0.1 for the ``with`` block."""
    endpoint = VersionEndpoint(production)

    def answer(request: Request) -> Reply:
        endpoint.requests += 1
        status = endpoint.status if request.path == "/api/version" else 404
        return status, {"commit": production.now(), "app": "service-desk"}

    with serve(answer) as url:
        endpoint.url = f"{url}/api/version"
        yield endpoint
