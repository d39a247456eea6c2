"""orchestrator: ship a release with Drizzle-tracked Postgres migrations to production safely."""

__version__ = "0.1.0"
