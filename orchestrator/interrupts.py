"""Stop signals handled as Ctrl-C: a cancelled CI job sends SIGTERM, a closed terminal SIGHUP."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def signals_interrupt(*signals: signal.Signals) -> Iterator[None]:
    """Each of ``signals`` raises KeyboardInterrupt (named after it) in the ``with`` block, as
    SIGINT does: the running statement is cancelled and ``finally`` blocks run as on Ctrl-C
    (main thread only: Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _interrupt) for number in signals}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
