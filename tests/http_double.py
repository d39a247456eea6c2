"""The scaffolding the tests' HTTP doubles share: a threaded HTTP server on 127.0.0.1 that
hands each request, its JSON body decoded, to one function and sends back the JSON answer.

A double (tests/neon_double.py, github_double.py, vercel_double.py, production_double.py)
writes only its contract: ``answer(request) -> (status, body[, headers])``. Answers are
given one at a time (under one lock), so a double's state needs no locking of its own;
methods the double does not serve get the standard library's 501. Nothing listens beyond
the loopback interface.

A double can also lose an answer after doing the work (:func:`lose_answer`): the server
closes the connection without a response, as a proxy timing out or a connection reset does
in production, or answers a 5xx in its place (a gateway that gave up waiting: 504; or 503),
so the client cannot tell whether its request was carried out. Neon's reference says of
exactly this case that a POST, PUT, PATCH or DELETE "may have reached the server and been
successfully processed, but the response failed to reach the client".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["LOST", "Reply", "Request", "lose_answer", "queued_failure", "serve"]

Reply = tuple[int, Any] | tuple[int, Any, Mapping[str, str]]  # status, JSON body, headers
LOST = 0  # the status of a reply never sent: the connection is closed instead


@dataclass(frozen=True)
class Request:
    """One request as a double's ``answer`` sees it."""

    method: str
    target: str  # the path as sent, with its query string
    body: Any  # the decoded JSON body, None when there is none
    headers: Message = field(repr=False)  # names case-insensitive

    @property
    def path(self) -> str:
        """The path without its query string."""
        return urlsplit(self.target).path

    @property
    def segments(self) -> list[str]:
        """The path's segments: ``/repos/a/b`` -> ``["repos", "a", "b"]``."""
        return self.path.strip("/").split("/")

    @property
    def query(self) -> dict[str, str]:
        """The query's parameters (the first value of each)."""
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query).items()}


def queued_failure(failures: list[tuple[int, dict[str, str]]], body: Any) -> Reply | None:
    """The next failure a test queued (status, headers such as ``Retry-After``), answered
    with ``body``; None when none is queued."""
    if not failures:
        return None
    status, headers = failures.pop(0)
    return status, body, headers


def lose_answer(lost: list[str], request: Request, reply: Reply) -> Reply:
    """``reply``, or :data:`LOST` when the first of ``lost`` names this request: ``"PUT"``
    (its method) or ``"POST /branches"`` (method and the end of its path); an entry led by a
    status (``"504 POST /branches"``) answers that status instead, with its reason phrase as
    the message. The work behind ``reply`` is already done; each entry loses one answer."""
    for i, entry in enumerate(lost):
        first, _, rest = entry.partition(" ")
        status, entry = (int(first), rest) if first.isdigit() else (LOST, entry)
        method, _, tail = entry.partition(" ")
        if method == request.method and request.path.endswith(tail):
            del lost[i]
            return status, {"message": HTTPStatus(status).phrase} if status else None
    return reply


@contextmanager
def serve(answer: Callable[[Request], Reply], methods: Iterable[str] = ("GET",)) -> Iterator[str]:
    """Serve ``answer`` for ``methods`` on 127.0.0.1 (a free port) for the ``with`` block;
    yields the server's base URL, ``http://127.0.0.1:<port>``."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:  # quiet
            pass

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            request = Request(method, self.path, body, self.headers)
            with lock:
                status, payload, *more = answer(request)
            if status == LOST:
                self.close_connection = True  # closed without a word: the answer is lost
                return
            encoded = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            for key, value in (more[0] if more else {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(encoded)

    for method in methods:
        setattr(Handler, f"do_{method}", lambda self, m=method: self._answer(m))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll: shutdown() waits for the serve loop to notice it.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
