"""A drizzle migrations folder written from SQL texts, for the benchmarks and the tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

BREAKPOINT = "\n--> statement-breakpoint\n"
FIRST_WHEN = 1_700_000_000_000  # ms; each entry one second after the previous


def write_drizzle_folder(folder: Path, migrations: Sequence[tuple[str, Sequence[str]]]) -> Path:
    """Write ``(tag, statements)`` as ``<tag>.sql`` files (statements joined by drizzle's
    breakpoint) and ``meta/_journal.json``, in order; returns ``folder``."""
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    entries = []
    for index, (tag, statements) in enumerate(migrations):
        (folder / f"{tag}.sql").write_text(BREAKPOINT.join(statements))
        entries.append(
            {
                "idx": index,
                "version": "7",
                "when": FIRST_WHEN + 1000 * index,
                "tag": tag,
                "breakpoints": True,
            }
        )
    journal = {"version": "7", "dialect": "postgresql", "entries": entries}
    (folder / "meta" / "_journal.json").write_text(json.dumps(journal, indent=2) + "\n")
    return folder
