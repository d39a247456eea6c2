"""The playbook of the rehearsal release (:func:`orchestrator.sandbox.release.build_release_repo`)
that the deploy tests run."""

from __future__ import annotations

from pathlib import Path

from orchestrator.sandbox.release import ReleaseRepo


def write_playbook(
    path: Path,
    *,
    repo: ReleaseRepo,
    health_url: str,
    name: str = "release-2025-10-21",
    backup: str = "{kind: restore_point}",
    duration: str = "1s",
    interval: str = "250ms",
    failures_allowed: int = 0,
    retry: str = "{attempts: 5, initial: 0.2s, max: 2s}",
    extra_sql_checks: str = "",
) -> Path:
    """A playbook for the rehearsal release, next to (not inside) the clone."""
    path.write_text(
        f"""name: {name}
database: {{url_env: DATABASE_URL}}
migrations: {{dir: {repo.clone.name}/{repo.migrations_dir}, schema: drizzle,
             table: __drizzle_migrations, lock_timeout: 5s, statement_timeout: 5min}}
backup: {backup}
git: {{repo: {repo.clone.name}, remote: origin, source: staging, target: main}}
monitor:
  duration: {duration}
  interval: {interval}
  failures_allowed: {failures_allowed}
  http: [{{url: "{health_url}", expect_status: 200, timeout: 10s}}]
  sql:
    - name: null_service_offerings
      max: 0
      query: >-
        SELECT count(*) FROM case_classification_results
        WHERE service_offering IS NULL AND created_at > now() - interval '1 hour'
{extra_sql_checks}retry: {retry}
"""
    )
    return path
