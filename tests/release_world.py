"""A release world for end-to-end tests: a baseline production database, a bare origin and
a clone, a health endpoint, a playbook and a run store."""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.drizzle.journal import read_journal
from orchestrator.engine.run import Interaction, start
from orchestrator.runs import RunRecord, RunStore
from orchestrator.sandbox.pg import create_database, drop_database, with_dbname
from orchestrator.sandbox.release import (
    HealthServer,
    ReleaseRepo,
    build_release_repo,
    git,
)
from orchestrator.shadow import SHADOW_URL_ENV
from tests.conftest import suite_shadow
from tests.playbooks import write_playbook

TRANSITIONS_OF_A_FULL_DEPLOY = [
    ("check_backup", "pending", "backup_checked"),
    ("validate", "backup_checked", "validated"),
    ("migrate", "validated", "migrated"),
    ("revalidate", "migrated", "revalidated"),
    ("merge", "revalidated", "merged"),
    ("go_live", "merged", "live"),
    ("monitor", "live", "monitored"),
    ("finish", "monitored", "succeeded"),
]


@dataclass
class World:
    """A production database at the pre-release state, the app's repos, a health endpoint."""

    root: Path
    database_url: str
    repo: ReleaseRepo
    health: HealthServer
    playbook: Path
    store: RunStore

    def interaction(self, **overrides: object) -> Interaction:
        """An operator who says yes, in an environment that names production (unless
        ``environ`` is given) and, as the CLI's does, the suite's shadow server."""
        environ = overrides.pop("environ", {"DATABASE_URL": self.database_url})
        shadow = {k: v for k, v in os.environ.items() if k == SHADOW_URL_ENV}
        overrides["environ"] = {**shadow, **environ}  # type: ignore[dict-item]
        overrides.setdefault("confirm", lambda _question: True)
        return Interaction(**overrides)  # type: ignore[arg-type]

    def deploy(self, **overrides: object) -> RunRecord:
        return start(self.playbook, self.store, self.interaction(**overrides))

    def deploy_argv(self, *extra: str) -> list[str]:
        """The command line of a confirmed ``deploy`` of this playbook, into this store."""
        argv = ["deploy", "--playbook", str(self.playbook), "--yes"]
        return [*argv, "--state-dir", str(self.store.state_dir), *extra]

    def rehearse_argv(self, on: str) -> list[str]:
        """The command line of ``deploy --dry-run --rehearse-on ON`` for this playbook."""
        return ["deploy", "--playbook", str(self.playbook), "--dry-run", "--rehearse-on", on]

    def use_pg_dump(self) -> Path:
        """The playbook backs up with pg_dump into a fresh folder (returned)."""
        dumps = self.root / "dumps"
        dumps.mkdir()
        write_playbook(
            self.playbook,
            repo=self.repo,
            health_url=self.health.url,
            backup=f"{{kind: pg_dump, path: {dumps}}}",
            duration="200ms",
            interval="100ms",
        )
        return dumps

    def origin_main(self) -> str:
        return git(self.repo.origin, "rev-parse", "main")

    def origin_file(self, path: str, ref: str = "main") -> str:
        return git(self.repo.origin, "show", f"{ref}:{path}")


def migrate_baseline(url: str, repo: ReleaseRepo) -> None:
    """Production before the release: main's migrations (0000-0008) applied."""
    from orchestrator.db.migrator import MigrateOptions
    from orchestrator.db.retry import RetryPolicy
    from orchestrator.migrate import migrate_database

    migrate_database(
        url,
        read_journal(repo.migrations),
        MigrateOptions(),
        confirm=lambda _r: True,
        retry=RetryPolicy.none(),
        shadow=suite_shadow(),
    )


@functools.cache
def _release_repo_template() -> ReleaseRepo:
    """The release repos, built once per process (in a directory removed at exit)."""
    where = Path(tempfile.mkdtemp(prefix="orch-test-release-repo-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    return build_release_repo(where)


def release_repo(root: Path) -> ReleaseRepo:
    """The repos of :func:`build_release_repo` under ``root``: a copy of ones built once (a
    git repository copied is the same repository), the clone's origin its own copy's."""
    template = _release_repo_template()
    origin, clone = root / template.origin.name, root / template.clone.name
    shutil.copytree(template.origin, origin, symlinks=True)
    shutil.copytree(template.clone, clone, symlinks=True)
    git(clone, "remote", "set-url", "origin", str(origin))
    return ReleaseRepo(origin=origin, clone=clone, migrations_dir=template.migrations_dir)


_names = (f"orch_baseline_{os.getpid()}_{i}" for i in itertools.count())


@pytest.fixture(scope="session")
def baseline_template(server_url: str) -> Iterator[str]:
    """The name of a database migrated to the baseline once per process: only ever copied."""
    name = next(_names)
    create_database(server_url, name)
    migrate_baseline(with_dbname(server_url, name), _release_repo_template())
    yield name
    drop_database(server_url, name)


@pytest.fixture
def baseline_url(server_url: str, baseline_template: str) -> Iterator[str]:
    """A fresh database at production's state before the release: a copy of
    :func:`baseline_template` (``CREATE DATABASE ... TEMPLATE``, the same catalogs and rows
    a migrate of its own leaves), dropped afterwards."""
    name = next(_names)
    create_database(server_url, name, template=baseline_template)
    try:
        yield with_dbname(server_url, name)
    finally:
        drop_database(server_url, name)


@contextmanager
def build_world(
    root: Path, url: str, *, at_baseline: bool = False, **playbook: str
) -> Iterator[World]:
    """Repos, a baseline production database at ``url``, a health endpoint and a playbook.
    ``at_baseline``: the database is one of :func:`baseline_url`'s, already migrated."""
    repo = release_repo(root)
    if not at_baseline:
        migrate_baseline(url, repo)
    health = HealthServer().start()
    settings = {"duration": "200ms", "interval": "100ms", **playbook}
    path = write_playbook(root / "release.yaml", repo=repo, health_url=health.url, **settings)
    try:
        yield World(root, url, repo, health, path, RunStore(root / ".orchestrator"))
    finally:
        # Its serve loop notices a shutdown only at its next poll, up to half a second
        # later: the test need not wait for that (its port is the kernel's choice, never
        # reused while the server holds it).
        threading.Thread(target=health.stop, daemon=True).start()


@pytest.fixture
def world(tmp_path: Path, baseline_url: str) -> Iterator[World]:
    """A fresh release world on a fresh database."""
    with build_world(tmp_path, baseline_url, at_baseline=True) as built:
        yield built


def transitions(record: RunRecord) -> list[tuple[str, str, str]]:
    return [(t.trigger, t.source, t.dest) for t in record.transitions]


def add_staging_migration(world: World, tag: str, statements: list[str]) -> None:
    """Append migration ``tag`` (its ``statements``) to the release on origin's staging."""
    clone = world.repo.clone
    git(clone, "switch", "staging")
    journal_path = world.repo.migrations / "meta" / "_journal.json"
    journal = json.loads(journal_path.read_text())
    last = journal["entries"][-1]
    journal["entries"].append(
        {**last, "idx": last["idx"] + 1, "when": last["when"] + 1000, "tag": tag}
    )
    journal_path.write_text(json.dumps(journal, indent=2) + "\n")
    (world.repo.migrations / f"{tag}.sql").write_text(
        "--> statement-breakpoint\n".join(statements) + "\n"
    )
    git(clone, "add", "-A")
    git(clone, "commit", "-m", f"Migration {tag}")
    git(clone, "push", "origin", "staging")
    git(clone, "switch", "main")


def make_the_release_code_only(world: World) -> None:
    """origin's staging becomes main plus a code change: a release without migrations."""
    clone = world.repo.clone
    git(clone, "switch", "--quiet", "-C", "staging", "origin/main")
    (clone / "app.ts").write_text("export const classify = (c: Case) => tunedClassifier(c);\n")
    git(clone, "commit", "--quiet", "-am", "Tune the classifier")
    git(clone, "push", "--quiet", "--force", "origin", "staging")
    git(clone, "switch", "--quiet", "main")
    # The monitor's check reads the release's column: without it, it reads the table alone.
    playbook = world.playbook.read_text()
    world.playbook.write_text(playbook.replace("service_offering IS NULL AND ", ""))


def revert_the_release(world: World) -> str:
    """A colleague reverts the only run's release on origin's main (``git revert``, pushed
    from the clone): main still contains the release's commit but no longer ships it. The
    revert's sha."""
    [record] = world.store.list()
    merge = record.steps.merge
    assert merge is not None and merge.pushed_commit is not None
    clone = world.repo.clone
    git(clone, "fetch", "--quiet", "origin")
    git(clone, "switch", "--quiet", "-C", "main", "origin/main")
    if merge.merge_commit:
        git(clone, "revert", "--no-edit", "-m", "1", merge.merge_commit)
    else:
        git(clone, "revert", "--no-edit", f"{merge.previous_target_commit}..{merge.pushed_commit}")
    git(clone, "push", "--quiet", "origin", "main")
    return world.origin_main()
