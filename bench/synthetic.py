"""A synthetic Drizzle migrations folder for a wide schema, written the way drizzle-kit writes.

Deterministic: the same arguments always give the same files (and so the same hashes).
The first migrations create the tables (a primary key, typed columns, a unique constraint, an
index, a foreign key to the previous table, now and then an enum); the last ``altering`` ones
evolve them the way a real project does: added columns, composite indexes, renamed and dropped
columns, enum values.

``SCALE`` is the folder of ``make bench``: 1,000 migrations creating 5,000 tables of 4 columns
(20,000 columns), each table with a primary key, a unique constraint, a foreign key and an index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BREAKPOINT = "--> statement-breakpoint\n"
FIRST_WHEN = 1_700_000_000_000  # journal millis of the first migration
COLUMN_TYPES = (
    "text",
    "integer",
    "boolean DEFAULT false NOT NULL",
    "timestamp with time zone",
    "jsonb",
    "numeric(12, 2)",
    "varchar(255)",
    "bigint",
)


@dataclass(frozen=True)
class Shape:
    """How big the synthetic schema is."""

    tables: int = 300
    columns_per_table: int = 20  # including id, parent_id and created_at; at least 4
    migrations: int = 200
    altering: int = 50  # the last migrations alter tables instead of creating them
    enum_every: int = 10  # one enum type per this many creating migrations

    def __post_init__(self) -> None:
        if self.columns_per_table < 4:
            raise ValueError("a table needs id, parent_id, one data column and created_at")
        if not 0 <= self.altering < self.migrations:
            raise ValueError("at least one migration must create tables")

    @property
    def creating(self) -> int:
        """Migrations that create tables (the rest alter them)."""
        return self.migrations - self.altering

    @property
    def data_columns(self) -> int:
        """Columns besides id, parent_id and created_at."""
        return self.columns_per_table - 3


SCALE = Shape(tables=5_000, columns_per_table=4, migrations=1_000, altering=0)


def table_name(number: int) -> str:
    """The name of table ``number`` (0-based)."""
    return f"t_{number:04d}"


def create_table(number: int, shape: Shape, enum: str | None) -> list[str]:
    """CREATE TABLE with its constraints and index, split as drizzle-kit splits them."""
    name = table_name(number)
    columns = ['\t"id" serial PRIMARY KEY NOT NULL', '\t"parent_id" integer']
    for c in range(shape.data_columns):
        kind = f'"{enum}"' if enum and c == 0 else COLUMN_TYPES[(number + c) % len(COLUMN_TYPES)]
        columns.append(f'\t"c_{c:02d}" {kind}')
    columns.append('\t"created_at" timestamp with time zone DEFAULT now() NOT NULL')
    columns.append(f'\tCONSTRAINT "{name}_c_00_unique" UNIQUE("c_00")')
    statements = [f'CREATE TABLE "{name}" (\n' + ",\n".join(columns) + "\n);\n"]
    if number > 0:
        parent = table_name(number - 1)
        statements.append(
            f'ALTER TABLE "{name}" ADD CONSTRAINT "{name}_parent_id_{parent}_id_fk" '
            f'FOREIGN KEY ("parent_id") REFERENCES "public"."{parent}"("id") '
            "ON DELETE no action ON UPDATE no action;\n"
        )
    statements.append(
        f'CREATE INDEX IF NOT EXISTS "{name}_created_at_idx" ON "{name}" '
        'USING btree ("created_at");\n'
    )
    return statements


def evolve(number: int, shape: Shape) -> list[str]:
    """ALTER statements a later migration makes on the tables created before it."""
    target = table_name((number * 7) % shape.tables)
    other = table_name((number * 13 + 5) % shape.tables)
    tag = f"m{number:04d}"
    return [
        f'ALTER TABLE "{target}" ADD COLUMN "extra_{tag}" text;\n',
        f'ALTER TABLE "{other}" ADD COLUMN IF NOT EXISTS "flag_{tag}" boolean DEFAULT false;\n',
        f'CREATE INDEX IF NOT EXISTS "{target}_{tag}_idx" ON "{target}" '
        f'USING btree ("c_00","extra_{tag}");\n',
        f'ALTER TABLE "{other}" RENAME COLUMN "flag_{tag}" TO "flag_{tag}_on";\n',
        f'ALTER TABLE "{target}" DROP COLUMN "c_{shape.data_columns - 1:02d}";\n'
        if number % 5 == 0 and shape.data_columns > 1
        else f"COMMENT ON TABLE \"{target}\" IS 'touched by {tag}';\n",
    ]


def migration_sql(shape: Shape) -> list[tuple[str, str]]:
    """(tag, file text) for every migration, in journal order."""
    files: list[tuple[str, str]] = []
    per_migration = -(-shape.tables // shape.creating)  # ceiling division
    next_table = 0
    enums: list[str] = []
    for number in range(shape.migrations):
        statements: list[str] = []
        if number < shape.creating:
            enum = None
            if number % shape.enum_every == 0:
                enum = f"status_{number:04d}"
                enums.append(enum)
                statements.append(
                    f"CREATE TYPE \"public\".\"{enum}\" AS ENUM('new', 'open', 'closed');\n"
                )
            for _ in range(per_migration):
                if next_table < shape.tables:
                    statements += create_table(next_table, shape, enum)
                    enum = None
                    next_table += 1
        else:
            statements += evolve(number, shape)
            if enums and number % 4 == 0:
                enum = enums[number % len(enums)]
                statements.append(f'ALTER TYPE "public"."{enum}" ADD VALUE \'v_{number:04d}\';\n')
        files.append((f"{number:04d}_bench_{number:04d}", BREAKPOINT.join(statements)))
    return files


def write_folder(target: Path, shape: Shape) -> Path:
    """Write ``meta/_journal.json`` and the ``.sql`` files under ``target``; return it."""
    (target / "meta").mkdir(parents=True, exist_ok=True)
    entries = []
    for idx, (tag, text) in enumerate(migration_sql(shape)):
        (target / f"{tag}.sql").write_text(text, encoding="utf-8")
        entries.append(
            {
                "idx": idx,
                "version": "7",
                "when": FIRST_WHEN + idx * 60_000,
                "tag": tag,
                "breakpoints": True,
            }
        )
    journal = {"version": "7", "dialect": "postgresql", "entries": entries}
    (target / "meta" / "_journal.json").write_text(json.dumps(journal, indent=2) + "\n")
    return target
