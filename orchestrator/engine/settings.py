"""What the playbook says, in the runtime's terms: the migrations at a commit, the tracking
table and timeouts, the retry policy. Shared by the run, its steps, resume and rehearsal.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import git

from orchestrator.database import validate_database
from orchestrator.db.migrator import MigrateOptions
from orchestrator.db.retry import OnRetry, RetryPolicy
from orchestrator.drizzle.journal import Journal, parse_journal
from orchestrator.errors import UsageError
from orchestrator.gitrepo import open_repo, read_files_at
from orchestrator.platforms.http import read_secret
from orchestrator.playbook import Playbook
from orchestrator.shadow import SHADOW_URL_ENV, ShadowSpec
from orchestrator.validation import ValidationReport


def migrations_path(repo: git.Repo, folder: Path) -> str:
    """``folder`` relative to the repository root (posix); UsageError if outside it."""
    root = Path(repo.working_tree_dir or ".").resolve()
    try:
        return folder.relative_to(root).as_posix()
    except ValueError:
        raise UsageError(
            f"migrations.dir {folder} is not inside the git repository {root}"
        ) from None


def migrate_options(playbook: Playbook) -> MigrateOptions:
    """The playbook's tracking table and migration timeouts."""
    spec = playbook.migrations
    return MigrateOptions(
        schema=spec.schema_,
        table=spec.table,
        lock_timeout=spec.lock_timeout,
        statement_timeout=spec.statement_timeout,
        lock_retries=spec.lock_retries,
        allow_concurrent=spec.concurrent,
    )


def retry_policy(playbook: Playbook) -> RetryPolicy:
    """The playbook's retry policy for transient database failures."""
    spec = playbook.retry
    return RetryPolicy(attempts=spec.attempts, initial=spec.initial, max_wait=spec.max)


def with_retries(playbook: Playbook, attempts: int | None) -> Playbook:
    """The playbook with ``retry.attempts`` replaced by ``--retries`` (None: as written)."""
    if attempts is None:
        return playbook
    retry = playbook.retry.model_copy(update={"attempts": attempts})
    return playbook.model_copy(update={"retry": retry})


def journal_at(repo: git.Repo, commit: str, folder: Path, branch: str) -> Journal:
    """The migrations folder as it is in ``commit`` (not in the working tree)."""
    path = migrations_path(repo, folder)
    files = read_files_at(repo, commit, path)
    return parse_journal(files, origin=f"{branch}@{commit[:12]}:{path}")


def shipped_hashes(repo: git.Repo, commit: str, path: str) -> list[str]:
    """The migration hashes of the folder at ``path`` in ``commit`` of the target branch (what
    was released before; none without a readable folder): the release is the others."""
    try:
        journal = parse_journal(read_files_at(repo, commit, path), origin=path)
    except UsageError:
        return []
    return [m.hash for m in journal.migrations]


def source_journal(playbook: Playbook, commit: str, repo: git.Repo | None = None) -> Journal:
    """The playbook's migrations folder as it is in ``commit`` of its source branch."""
    repo = open_repo(playbook.git.repo) if repo is None else repo
    return journal_at(repo, commit, playbook.migrations.dir, playbook.git.source)


def shadow_spec(playbook: Playbook, environ: Mapping[str, str]) -> ShadowSpec:
    """The playbook's shadow server (``shadow: {url_env: NAME}``), else
    ``$ORCHESTRATOR_SHADOW_URL``, else a throwaway local cluster; UsageError when the
    variable the playbook names is not set."""
    if playbook.shadow is not None:
        what = "URL of the shadow, a PostgreSQL server that is not production"
        return ShadowSpec(read_secret(environ, playbook.shadow.url_env, what))
    return ShadowSpec(environ.get(SHADOW_URL_ENV) or None)


def validate_per_playbook(
    playbook: Playbook,
    environ: Mapping[str, str],
    url: str,
    journal: Journal,
    on_retry: OnRetry | None = None,
) -> ValidationReport:
    """Validate ``url`` against ``journal`` with the playbook's tracking table, shadow server
    (a history the cache lacks is replayed there) and retry policy."""
    shadow = shadow_spec(playbook, environ)
    options, retry = migrate_options(playbook), retry_policy(playbook)
    return validate_database(url, journal, options, shadow=shadow, retry=retry, on_retry=on_retry)
