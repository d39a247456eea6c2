"""The real ``drizzle-kit migrate``, installed with npm into an ignored folder, as a baseline.

The versions are pinned so that every ``make bench`` compares against the same migrator:
drizzle-orm 0.45.4 is the one ``tests/drizzle_node`` checks compatibility against, and
drizzle-kit 0.31 is the CLI of that generation. Without node and npm the baseline is skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

INSTALL_DIR = Path(__file__).resolve().parent / ".drizzle-kit"  # ignored by git
PACKAGES = {"drizzle-kit": "0.31.11", "drizzle-orm": "0.45.4", "pg": "8.23.1"}
INSTALL_TIMEOUT_S = 600


@dataclass(frozen=True)
class DrizzleKit:
    """An installed drizzle-kit: the executable and where it lives."""

    executable: Path
    directory: Path


def package_json() -> str:
    """The package.json that pins the baseline's versions (pure)."""
    document = {"name": "orchestrator-bench-drizzle-kit", "private": True, "dependencies": PACKAGES}
    return json.dumps(document, indent=2) + "\n"


def config_json(url: str, migrations: Path, *, schema: str, table: str) -> str:
    """A drizzle.config.json for ``drizzle-kit migrate`` on ``migrations`` against ``url``."""
    document = {
        "dialect": "postgresql",
        "out": str(migrations),
        "dbCredentials": {"url": url},
        "migrations": {"schema": schema, "table": table},
    }
    return json.dumps(document, indent=2) + "\n"


def install(directory: Path = INSTALL_DIR) -> DrizzleKit | str:
    """drizzle-kit installed under ``directory`` (npm install when missing or outdated).

    Returns the reason instead when it cannot be had (no node or npm, npm failed).
    """
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found"
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "package.json"
    executable = directory / "node_modules" / ".bin" / "drizzle-kit"
    wanted = package_json()
    if executable.is_file() and manifest.is_file() and manifest.read_text() == wanted:
        return DrizzleKit(executable, directory)
    manifest.write_text(wanted)
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"npm install timed out after {INSTALL_TIMEOUT_S} s"
    if done.returncode != 0 or not executable.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"npm install failed: {last}"
    return DrizzleKit(executable, directory)


def migrate(kit: DrizzleKit, config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``drizzle-kit migrate --config <config>``; the caller checks the exit code."""
    return subprocess.run(
        [str(kit.executable), "migrate", "--config", str(config)],
        cwd=kit.directory,
        capture_output=True,
        text=True,
        check=False,
    )
