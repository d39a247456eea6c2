"""A line at least every few seconds while a step waits, for logs without a terminal.

At a terminal the steps' progress rewrites one live line. In a CI log there is no live line:
a monitor window, a stalled push, a release gate or a 30 s statement would print nothing
between "step monitor" and its end, and look like a hang. While a step runs, a
:class:`Heartbeat` says, every ``period`` seconds, which step is working, for how long, and
the step's latest progress line, if it gave one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: How often a step that waits is heard from when nobody watches a terminal.
HEARTBEAT_S = 10.0


def heartbeat_line(step: str, elapsed: float, latest: str | None) -> str:
    """The line said for ``step`` after ``elapsed`` seconds (pure)."""
    return f"step {step}: {latest or 'working'} ({elapsed:.0f}s)"


class Heartbeat:
    """Calls ``say`` every ``period`` seconds while a step runs (:meth:`during`)."""

    def __init__(self, say: Callable[[str], None], period: float = HEARTBEAT_S) -> None:
        self.say = say
        self.period = period
        self._latest: str | None = None

    def note(self, line: str) -> None:
        """The step's latest progress line, repeated by the next beat."""
        self._latest = line

    @contextmanager
    def during(self, step: str) -> Iterator[None]:
        """Beat while the ``with`` block runs; the beats stop when it ends, however it ends."""
        self._latest = None
        stop = threading.Event()
        started = time.monotonic()

        def beat() -> None:
            while not stop.wait(self.period):
                self.say(heartbeat_line(step, time.monotonic() - started, self._latest))

        # A daemon: a beat must never keep a finished or interrupted process alive.
        thread = threading.Thread(target=beat, name=f"heartbeat-{step}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
