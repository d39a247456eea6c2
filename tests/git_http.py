"""A private git remote over smart HTTP, as GitHub serves one to a CI job: on 127.0.0.1, the
real ``git http-backend`` (run as the CGI program its manual describes,
https://git-scm.com/docs/git-http-backend) behind a check of the ``Authorization`` header.

A request without the header gets 401 with a ``Basic`` challenge, so git asks for a username
and, with terminal prompts disabled, gives up. ``actions/checkout`` (``persist-credentials``,
its default) stores the header in the clone's own git config, as
``http.<server>/.extraheader = AUTHORIZATION: basic base64(x-access-token:TOKEN)``
(src/git-auth-helper.ts): :func:`private_remote` answers only a request carrying it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["extraheader", "private_remote"]


def extraheader(token: str) -> str:
    """The header actions/checkout stores for ``token``."""
    return "AUTHORIZATION: basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()


@contextmanager
def private_remote(bare: Path, token: str) -> Iterator[tuple[str, list[str]]]:
    """Serve the bare repository ``bare``: its URL, and the paths asked for without the
    header (each refused with 401)."""
    expected = extraheader(token).partition(": ")[2].lower()
    refused: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve(b"")

        def do_POST(self) -> None:
            self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def _serve(self, body: bytes) -> None:
            url = urlsplit(self.path)
            if (self.headers.get("Authorization") or "").lower() != expected:
                refused.append(url.path)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            cgi = {
                "PATH": os.environ["PATH"],
                "GIT_PROJECT_ROOT": str(bare.parent),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": url.path,
                "QUERY_STRING": url.query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type") or "",
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": "x-access-token",  # lets receive-pack take the push
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding") or "",
                "REMOTE_ADDR": "127.0.0.1",
            }
            out = subprocess.run(
                ["git", "http-backend"], input=body, env=cgi, capture_output=True, check=True
            ).stdout
            head, _, content = out.partition(b"\r\n\r\n")
            headers = [line.partition(":")[::2] for line in head.decode().split("\r\n")]
            status = next((v for k, v in headers if k.lower() == "status"), "200")
            self.send_response(int(status.split()[0]))
            for name, value in headers:
                if name.lower() != "status":
                    self.send_header(name, value.strip())
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{bare.name}", refused
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
