"""``orchestrator init --yes`` then ``orchestrator deploy --yes`` in a fresh clone of a
drizzle app on Neon + Vercel + GitHub, with no hand-written YAML.

The platforms are the contract doubles (tests/neon_double.py, github_double.py,
vercel_double.py). The clone's ``origin`` is written as GitHub's URL, which git itself
rewrites to the local bare repository (``url.<path>.insteadOf``); production's URL names a
Neon endpoint host, which libpq reaches at 127.0.0.1 (``hostaddr``): init reads what a user's
files and environment would hold, and deploy talks to real git and a real PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from orchestrator.cli import run
from orchestrator.playbook import load_playbook
from orchestrator.runs import RunStore
from orchestrator.sandbox.release import (
    EXAMPLE_MIGRATIONS,
    ReleaseRepo,
    add_drizzle_config,
    copy_migrations,
    git,
)
from tests.github_double import GitHubState, github_double, protect_branch
from tests.neon_double import NeonState, neon_double
from tests.release_world import (
    TRANSITIONS_OF_A_FULL_DEPLOY,
    World,
    build_world,
    migrate_baseline,
    transitions,
)
from tests.vercel_double import VercelState, vercel_double

GITHUB_URL = "https://github.com/acme/service-desk.git"
ENDPOINT = "ep-quiet-river-a1b2c3d4"
NEON_HOST = f"{ENDPOINT}.us-east-2.aws.neon.tech"
NEON_KEY = "napi_init_test_key"


@dataclass
class App:
    """A fresh clone of the app, and the doubles of the platforms it runs on."""

    world: World
    clone: Path
    neon: NeonState
    github: GitHubState
    vercel: VercelState
    apis: dict[str, str]  # --neon-api-url, ... -> the doubles' URLs
    environ: dict[str, str]


def neon_url(database_url: str) -> str:
    """``database_url`` as production's Neon URL: the endpoint's host, reached at the local
    server's address (libpq's ``hostaddr``)."""
    parts = urlsplit(database_url)
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    auth = f"{userinfo}@" if userinfo else ""
    return f"postgresql://{auth}{NEON_HOST}:{parts.port}{parts.path}?hostaddr={parts.hostname}"


@contextmanager
def app_on_platforms(
    root: Path, baseline_url: str, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[App]:
    with ExitStack() as stack:
        world = stack.enter_context(build_world(root, baseline_url, at_baseline=True))
        add_drizzle_config(world.repo)
        protect_branch(world.repo.origin)  # main takes no direct push: only merged PRs
        neon_api, neon = stack.enter_context(neon_double(api_key=NEON_KEY, cluster_url=server_url))
        main = neon.add_branch("main", database=urlsplit(baseline_url).path.lstrip("/"))
        neon.add_endpoint(main["id"], endpoint_id=ENDPOINT, host=NEON_HOST)
        github_api, github = stack.enter_context(github_double(world.repo.origin))
        github.protected = ("main",)
        vercel_api, vercel = stack.enter_context(vercel_double(world.repo.origin))
        vercel.build_seconds = 0.0

        fresh = root / "fresh"
        git(
            root,
            "clone",
            "--config",
            f"url.{world.repo.origin}.insteadOf={GITHUB_URL}",
            GITHUB_URL,
            str(fresh),
        )
        # What `vercel link` writes (the folder is git-ignored, so a clone never has it).
        (fresh / ".vercel").mkdir()
        (fresh / ".vercel" / "project.json").write_text(
            json.dumps({"projectId": vercel.project_id, "orgId": vercel.team_id})
        )
        environ = {
            "DATABASE_URL": neon_url(baseline_url),
            "NEON_API_KEY": NEON_KEY,
            "GITHUB_TOKEN": github.token,
            "VERCEL_TOKEN": vercel.token,
        }
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
        monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
        monkeypatch.chdir(fresh)
        apis = {
            "--neon-api-url": neon_api,
            "--github-api-url": github_api,
            "--vercel-api-url": vercel_api,
        }
        yield App(world, fresh, neon, github, vercel, apis, environ)


def init_argv(app: App) -> list[str]:
    """init's command line: the doubles' API URLs, the health check and a short window."""
    argv = ["init", "--yes", "--health-url", app.world.health.url]
    argv += ["--monitor-duration", "300ms", "--monitor-interval", "100ms"]
    for option, url in app.apis.items():
        argv += [option, url]
    return argv


def test_init_then_deploy_releases_a_fresh_clone_with_no_hand_written_yaml(
    tmp_path: Path,
    baseline_url: str,
    server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with app_on_platforms(tmp_path, baseline_url, server_url, monkeypatch) as app:
        assert run(init_argv(app)) == 0
        said = capsys.readouterr()
        playbook = load_playbook(app.clone / "orchestrator.yaml")
        # Every value came from the app's files, its remote, its URL and the APIs.
        assert playbook.migrations.dir == (app.clone / "drizzle").resolve()
        assert playbook.backup.kind == "neon_branch"
        assert playbook.neon is not None and playbook.neon.project_id == app.neon.project_id
        assert playbook.neon.branch == "main"
        assert playbook.git.via == "github_pr"  # GitHub says main is protected
        assert playbook.git.github is not None and playbook.git.github.repo == app.github.repo
        assert playbook.release is not None and playbook.release.vercel is not None
        assert playbook.release.vercel.project_id == app.vercel.project_id
        assert playbook.release.vercel.team_id == app.vercel.team_id
        assert "TODO" not in (app.clone / "orchestrator.yaml").read_text()
        assert "next: orchestrator deploy" in said.out

        code = run(["deploy", "--yes"])
        said = capsys.readouterr()
        assert code == 0, said.err
        (record,) = RunStore(app.clone / ".orchestrator").list()
        assert record.state == "succeeded", record.halt_reason
        assert transitions(record) == TRANSITIONS_OF_A_FULL_DEPLOY
        assert record.steps.backup.kind == "neon_branch"
        assert record.steps.migrate.tags == [
            "0009_fat_kulan_gath",
            "0010_new_colleen_wing",
            "0011_cute_skin",
        ]
        merged = [pr for pr in app.github.pulls.values() if pr["merged"]]
        assert len(merged) == 1 and merged[0]["head"] == "staging"
        assert app.world.origin_main() == merged[0]["merge_commit_sha"]
        assert app.vercel.deployments[0]["meta"]["githubCommitSha"] == app.world.origin_main()
        assert app.world.health.requests > 0


def test_init_never_overwrites_a_playbook(
    tmp_path: Path,
    baseline_url: str,
    server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with app_on_platforms(tmp_path, baseline_url, server_url, monkeypatch) as app:
        mine = app.clone / "orchestrator.yaml"
        mine.write_text("# my own playbook\n")
        before = sorted(p.name for p in app.clone.iterdir())
        assert run(init_argv(app)) == 2
        assert "already exists" in capsys.readouterr().err
        assert mine.read_text() == "# my own playbook\n"
        assert sorted(p.name for p in app.clone.iterdir()) == before
        # ... and asked no API anything.
        assert app.neon.requests == [] and app.github.requests == []


def test_init_in_a_monorepo_package_writes_a_playbook_deploy_can_rehearse(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The git work tree is the monorepo; the app, its config and migrations are a package.
    origin, mono = tmp_path / "origin.git", tmp_path / "mono"
    package = mono / "packages" / "db"
    origin.mkdir()
    git(origin, "init", "--bare", "--initial-branch=main")
    package.mkdir(parents=True)
    git(mono, "init", "--initial-branch=main")
    git(mono, "remote", "add", "origin", str(origin))
    (package / "drizzle.config.ts").write_text(
        'import type { Config } from "drizzle-kit";\n'
        'export default { out: "./migrations", dialect: "postgresql",'
        " dbCredentials: { url: process.env.POSTGRES_URL! } } satisfies Config;\n"
    )
    copy_migrations(EXAMPLE_MIGRATIONS, package / "migrations", 9)
    git(mono, "add", "-A")
    git(mono, "commit", "-m", "db package with migrations 0000-0008")
    git(mono, "push", "origin", "main")
    git(mono, "switch", "-c", "staging")
    copy_migrations(EXAMPLE_MIGRATIONS, package / "migrations")
    git(mono, "add", "-A")
    git(mono, "commit", "-m", "migrations 0009-0011")
    git(mono, "push", "origin", "staging")
    git(mono, "switch", "main")
    migrate_baseline(database_url, ReleaseRepo(origin, mono, "packages/db/migrations"))
    monkeypatch.setenv("POSTGRES_URL", database_url)
    monkeypatch.chdir(package)

    argv = ["init", "--yes", "--monitor-duration", "300ms", "--monitor-interval", "100ms"]
    assert run(argv) == 0
    playbook = load_playbook(package / "orchestrator.yaml")
    assert playbook.git.repo == mono.resolve()  # the work tree's top, not the package
    assert playbook.migrations.dir == (package / "migrations").resolve()
    capsys.readouterr()
    code = run(["deploy", "--dry-run", "--yes"])
    said = capsys.readouterr()
    assert code == 0, said.err
    assert "not a git work tree" not in said.err
