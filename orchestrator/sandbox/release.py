"""A rehearsal world for a release: a git origin and clone, a health endpoint, a playbook.

Used by ``make demo`` and by the end-to-end tests, so both exercise the same setup:

- a bare ``origin`` and a working clone; ``main`` holds the app with the migrations before
  the release, ``staging`` adds the release's migrations and a code change;
- a local HTTP server whose ``/api/health`` answers with a status the caller can flip;
- a playbook that points at all of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

EXAMPLE_MIGRATIONS = Path(__file__).resolve().parents[2] / "playbooks" / "examples" / "migrations"


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` with a fixed identity; return its stdout."""
    result = subprocess.run(
        [
            "git",
            "-c",
            "user.name=Release Engineer",
            "-c",
            "user.email=release@example.com",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def copy_migrations(source: Path, target: Path, count: int | None = None) -> None:
    """Copy a drizzle folder, keeping only the first ``count`` journal entries."""
    document = json.loads((source / "meta" / "_journal.json").read_text())
    entries = document["entries"] if count is None else document["entries"][:count]
    (target / "meta").mkdir(parents=True, exist_ok=True)
    for entry in entries:
        shutil.copyfile(source / f"{entry['tag']}.sql", target / f"{entry['tag']}.sql")
    document["entries"] = entries
    (target / "meta" / "_journal.json").write_text(json.dumps(document, indent=2) + "\n")


@dataclass
class ReleaseRepo:
    """The origin and the operator's clone of the rehearsal app."""

    origin: Path
    clone: Path
    migrations_dir: str = "drizzle"

    @property
    def migrations(self) -> Path:
        """The migrations folder in the clone's working tree."""
        return self.clone / self.migrations_dir


def build_release_repo(
    root: Path, *, migrations: Path = EXAMPLE_MIGRATIONS, baseline: int = 9
) -> ReleaseRepo:
    """``main``: app + first ``baseline`` migrations; ``staging``: the rest and a code change."""
    origin = root / "origin.git"
    clone = root / "app"
    origin.mkdir(parents=True)
    git(origin, "init", "--bare", "--initial-branch=main")
    clone.mkdir()
    git(clone, "init", "--initial-branch=main")
    git(clone, "remote", "add", "origin", str(origin))
    (clone / "app.ts").write_text("export const classify = (c: Case) => legacyClassifier(c);\n")
    copy_migrations(migrations, clone / "drizzle", baseline)
    git(clone, "add", "-A")
    git(clone, "commit", "-m", "Service desk app with migrations 0000-0008")
    git(clone, "push", "origin", "main")
    git(clone, "switch", "-c", "staging")
    copy_migrations(migrations, clone / "drizzle")
    (clone / "app.ts").write_text(
        "export const classify = (c: Case) => portfolioClassifier(c); // service_offering\n"
    )
    git(clone, "add", "-A")
    git(clone, "commit", "-m", "Service portfolio classification (migrations 0009-0011)")
    git(clone, "push", "origin", "staging")
    git(clone, "switch", "main")
    return ReleaseRepo(origin=origin, clone=clone)


DRIZZLE_CONFIG = """\
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  schema: "./src/db/schema.ts",
  out: "./drizzle",
  dialect: "postgresql",
  dbCredentials: { url: process.env.DATABASE_URL! },
  migrations: { table: "__drizzle_migrations", schema: "drizzle" },
});
"""


def add_drizzle_config(repo: ReleaseRepo) -> None:
    """The app's ``drizzle.config.ts`` (what ``orchestrator init`` reads), committed on
    ``main`` and merged into ``staging``, both pushed; the clone is left on ``main``."""
    clone = repo.clone
    (clone / "drizzle.config.ts").write_text(DRIZZLE_CONFIG)
    git(clone, "add", "drizzle.config.ts")
    git(clone, "commit", "-m", "drizzle-kit config")
    git(clone, "push", "origin", "main")
    git(clone, "switch", "staging")
    git(clone, "merge", "--no-edit", "main")
    git(clone, "push", "origin", "staging")
    git(clone, "switch", "main")


@dataclass
class HealthServer:
    """``GET /api/health`` answers ``status`` (flip it to make production unhealthy), except
    that the first ``healthy_first`` requests answer 200: production breaking after the
    deploy's pre-flight looked at it."""

    status: int = 200
    requests: int = 0
    healthy_first: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The health endpoint's URL."""
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/api/health"

    def start(self) -> HealthServer:
        """Serve on a free port of 127.0.0.1 in a background thread."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                code = owner.status if owner.requests > owner.healthy_first else 200
                code = code if self.path.split("?")[0] == "/api/health" else 404
                body = json.dumps({"ok": code == 200}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # keep test and demo output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Polled often: stop() waits for the loop to see the request (0.5 s by default).
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
