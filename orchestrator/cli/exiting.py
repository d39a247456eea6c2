"""Leaving the process: at once, without the interpreter's teardown, when nothing needs it.

Python's ordinary exit tears every module down and frees every object still alive. Once
psycopg is loaded (and OpenSSL and Kerberos below it) that costs 50 - 80 ms on every
command, for nothing anyone can see: ``validate`` on a large folder spends a tenth of its
time there. :func:`exit_process` keeps what an exit must do (the ``atexit`` handlers:
logging, temporary directories, multiprocessing children; flushing the standard streams)
and skips the teardown, unless another thread is still working: then the ordinary exit
waits for it, as it always did.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``: ``atexit`` handlers run and the standard streams are
    flushed, then ``os._exit``; the ordinary ``sys.exit`` while a non-daemon thread runs."""
    if _threads_still_working():
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken pipe: nothing more can be said.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _threads_still_working() -> bool:
    main = threading.main_thread()
    return any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate())
