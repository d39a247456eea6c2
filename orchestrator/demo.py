"""A full rehearsal of a release, from nothing, narrated for a newcomer (``make demo``).

Everything is real and local: a throwaway PostgreSQL cluster plays production, a bare git
repository plays ``origin``, a small HTTP server plays the app's health endpoint. The demo
walks the runbook's Strategy A with the real command line, run as subprocesses, so what it
prints is exactly what an operator sees:

1. production holds migrations 0000-0008 (``orchestrator migrate`` on ``main``);
2. ``orchestrator validate`` against the release (``staging``): NEEDS_MIGRATION, exit 10;
3. ``orchestrator init`` writes the playbook from the app's drizzle.config.ts, its remote
   and the database host; ``deploy --dry-run`` rehearses;
4. ``orchestrator deploy``: backup check, validate, migrate, revalidate, merge/push, monitor;
5. ``orchestrator validate`` again: SAFE, exit 0; ``runs`` and ``show`` tell the story.

Every command's exit code is checked: the demo exits non-zero at the first surprise, so it
doubles as an end-to-end smoke test. The cluster, the health server and the temporary folder
are removed on every exit path.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator import children
from orchestrator.errors import ExitCode
from orchestrator.sandbox.pg import (
    EmbeddedPostgres,
    ServerBinariesMissing,
    create_database,
    with_dbname,
)
from orchestrator.sandbox.release import HealthServer, add_drizzle_config, build_release_repo

DATABASE = "production"
INDENT = "    "
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # holds the orchestrator package


class DemoFailed(Exception):
    """A step of the rehearsal did not end as the runbook says it must."""


class Rehearsal:
    """Runs commands in the rehearsal folder, printing each one first, like a tutorial."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.step_number = 0

    def step(self, title: str, explanation: str) -> None:
        """A numbered heading and a short explanation of what comes next."""
        self.step_number += 1
        print(f"\n== {self.step_number}. {title}\n")
        for line in textwrap.wrap(explanation, width=92):
            print(line)
        sys.stdout.flush()

    def orchestrator(
        self, *args: str, expect: ExitCode, quiet: bool = False, cwd: str | None = None
    ) -> str:
        """Run ``orchestrator ARGS`` (as ``python -m orchestrator.cli``), check its exit code;
        its output. ``cwd``: a folder of the rehearsal folder to run it in (shown as ``cd``)."""
        shown = ["orchestrator", *args]
        return self._run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            shown=shown if cwd is None else ["cd", cwd, "&&", *shown],
            expect=int(expect),
            quiet=quiet,
            cwd=cwd,
        )

    def git(self, *args: str) -> str:
        """Run ``git ARGS``; it must succeed."""
        return self._run(["git", *args], shown=["git", *args], expect=0, quiet=False)

    def _run(
        self,
        argv: Sequence[str],
        *,
        shown: Sequence[str],
        expect: int,
        quiet: bool,
        cwd: str | None = None,
    ) -> str:
        print(f"\n$ {_shell_line(shown)}", flush=True)
        process = subprocess.Popen(
            list(argv),
            cwd=self.workdir if cwd is None else self.workdir / cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            process_group=children.group(),  # a killed demo leaves no deploy running
        )
        assert process.stdout is not None
        lines: list[str] = []
        try:
            with process.stdout:
                for line in process.stdout:  # streamed: a long step shows its progress live
                    lines.append(line)
                    if not quiet:
                        print(INDENT + line.rstrip("\n"), flush=True)
            code = process.wait()
        except BaseException:  # Ctrl-C or a broken pipe: leave no command running behind us
            process.kill()
            process.wait()
            raise
        mark = "as expected" if code == expect else f"EXPECTED {expect}"
        print(f"{INDENT}-> exit {code} ({mark})", flush=True)
        if code != expect:
            raise DemoFailed(f"`{_shell_line(shown)}` exited {code}, expected {expect}")
        return "".join(lines)


def _shell_line(words: Sequence[str]) -> str:
    """A command line as typed: quoted words, ``&&`` left bare."""
    return " ".join(word if word == "&&" else shlex.quote(word) for word in words)


def require(condition: bool, message: str) -> None:
    """Stop the demo with ``message`` unless ``condition`` holds."""
    if not condition:
        raise DemoFailed(message)


def mentions(output: str, *words: str) -> bool:
    """Whether one line of ``output`` contains every one of ``words``."""
    return any(all(word in line for word in words) for line in output.splitlines())


def subprocess_env(database_url: str) -> dict[str, str]:
    """The environment of every command: production's URL, an importable package, a width."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url
    # The CLI must import the same package as the demo, even from a plain checkout.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
    )
    # Output goes through a pipe, so rich cannot see the terminal: tell it the width left
    # after our indentation, so its tables fit the reader's screen.
    columns = shutil.get_terminal_size(fallback=(120, 24)).columns
    env["COLUMNS"] = str(max(80, columns - len(INDENT)))
    env.pop("ORCH_DEBUG", None)
    return env


def rehearse(pg: EmbeddedPostgres, workdir: Path, health: HealthServer) -> None:
    """The narrated walk through Strategy A; raises :class:`DemoFailed` at the first surprise."""
    create_database(pg.url(), DATABASE)
    url = with_dbname(pg.url(), DATABASE)
    repo = build_release_repo(workdir)
    add_drizzle_config(repo)
    app = repo.clone.name
    playbook = f"{app}/orchestrator.yaml"  # written by `orchestrator init` below
    demo = Rehearsal(workdir, subprocess_env(url))

    print("orchestrator demo: a rehearsed release, from nothing to production")
    print(f"\nWorking folder: {workdir}  (every command below runs there)")
    world = (
        (f"{DATABASE} database", f"{url}  (a throwaway PostgreSQL cluster)"),
        ("origin.git", "the team's remote: main = 0000-0008, staging = the release"),
        (f"{repo.clone.name}/", "the operator's clone, main checked out"),
        (f"{app}/drizzle.config.ts", "the app's drizzle-kit config (init reads it)"),
        ("health endpoint", health.url),
    )
    for what, description in world:
        print(f"  {what:<20} {description}")
    print("`orchestrator` stands for `python -m orchestrator.cli`; $DATABASE_URL is set to")
    print("the production URL for every command.")

    demo.step(
        "Production before the release",
        "Production runs main, whose schema is migrations 0000-0008. We build that state with "
        "`orchestrator migrate`, which applies pending migrations in one transaction and "
        "writes the same tracking rows drizzle-kit would.",
    )
    demo.orchestrator(
        "migrate",
        "--yes",
        "--migrations",
        f"{repo.clone.name}/{repo.migrations_dir}",
        "--database-url",
        url,
        expect=ExitCode.OK,
    )

    demo.step(
        "Is production ready for the release?",
        "The release is the staging branch: migrations 0009-0011 and a code change that reads "
        "the new columns. We check out staging on its own and ask `validate` (read-only) how "
        "production stands against its migrations. Expect NEEDS_MIGRATION (exit 10), and a "
        "warning: 0010's journal 'when' is older than 0009's, which drizzle-kit would skip.",
    )
    demo.git("clone", "--quiet", "--branch", "staging", "origin.git", "staging")
    before = demo.orchestrator(
        "validate",
        "--migrations",
        f"staging/{repo.migrations_dir}",
        expect=ExitCode.NEEDS_MIGRATION,
    )
    require(
        mentions(before, "warning", "0010_new_colleen_wing", "not newer than"),
        "validate did not warn that 0010_new_colleen_wing's journal 'when' is out of order",
    )

    demo.step(
        "Write the playbook (orchestrator init)",
        "The playbook says where the migrations are, how to back up, which branches to merge "
        "and what to watch. `init` writes it from what the app already says: drizzle.config.ts "
        "(the migrations folder, drizzle's tracking table and schema), the origin remote, and "
        "the database URL's host (a Neon host would give a neon_branch backup; with "
        ".vercel/project.json a release gate). --yes takes every default; what it cannot find "
        "is left as a commented TODO line. It never overwrites a file.",
    )
    written = demo.orchestrator(
        "init",
        "--yes",
        "--health-url",
        health.url,
        "--monitor-duration",
        "3s",
        "--monitor-interval",
        "1s",
        cwd=app,
        expect=ExitCode.OK,
    )
    require("wrote orchestrator.yaml" in written, "init did not write the playbook")
    print()
    for line in (workdir / playbook).read_text().splitlines():
        print(f"{INDENT}{line}")
    demo.orchestrator("init", "--yes", cwd=app, expect=ExitCode.USAGE, quiet=True)
    print(f"{INDENT}(init again: exit 2, the playbook is never overwritten)")

    demo.step(
        "Rehearse the deploy first (--dry-run)",
        "The rehearsal walks the same route against the real database and origin and changes "
        "nothing but a fetch: the trial merge runs in a throwaway worktree, the migrations are "
        "applied and revalidated inside a transaction that is rolled back, and every check runs "
        "once. Expect a plan that ends with a prediction and exit 0.",
    )
    rehearsal = demo.orchestrator("deploy", "--playbook", playbook, "--dry-run", expect=ExitCode.OK)
    require(
        mentions(rehearsal, "applied and rolled back")
        and mentions(rehearsal, "revalidate", "SAFE")
        and "nothing was committed to production" in rehearsal,
        "the rehearsal did not prove the migrations",
    )
    demo.orchestrator(
        "validate",
        "--migrations",
        f"staging/{repo.migrations_dir}",
        expect=ExitCode.NEEDS_MIGRATION,
        quiet=True,
    )
    print(f"{INDENT}(validate again: still NEEDS_MIGRATION, the rehearsal left no trace)")

    demo.step(
        "Deploy the release (Strategy A: migrations first)",
        "One command walks the state machine: pre-flight (branches, clean tree, trial merge, "
        "source commit pinned), backup check (a restore point), validate, migrate, revalidate "
        "(must be SAFE), merge staging into main and push, then watch the health endpoint for "
        "the monitor window. Every step is recorded under .orchestrator/.",
    )
    demo.orchestrator(
        "deploy",
        "--playbook",
        playbook,
        "--yes",
        "--state-dir",
        ".orchestrator",
        expect=ExitCode.OK,
    )
    require(health.requests > 0, "the monitor never called the health endpoint")
    print(f"{INDENT}(the health endpoint answered {health.requests} monitor request(s))")

    demo.step(
        "Production after the release",
        "main now carries the release, and its migrations must all be applied: SAFE (exit 0).",
    )
    demo.git("-C", repo.clone.name, "log", "--oneline", "-1")
    after = demo.orchestrator(
        "validate", "--migrations", f"{repo.clone.name}/{repo.migrations_dir}", expect=ExitCode.OK
    )
    require(mentions(after, "verdict", "SAFE"), "validate did not say SAFE")

    demo.step(
        "The run's record",
        "Each run keeps a record (state.json) and an audit trail (audit.jsonl). `runs` lists "
        "them; `show` prints one run's timeline. The run id comes from `runs --json`.",
    )
    demo.orchestrator("runs", "--state-dir", ".orchestrator", expect=ExitCode.OK)
    listing = demo.orchestrator(
        "runs", "--state-dir", ".orchestrator", "--json", expect=ExitCode.OK, quiet=True
    )
    runs = json.loads(listing)["runs"]
    require(len(runs) == 1, f"expected one recorded run, found {len(runs)}")
    run = runs[0]
    require(run["state"] == "succeeded", f"the run ended {run['state']}, expected succeeded")
    print(f"{INDENT}run id: {run['run_id']}")
    demo.orchestrator("show", run["run_id"], "--state-dir", ".orchestrator", expect=ExitCode.OK)

    demo.step(
        "The code reached origin",
        "The release commit is on origin's main: the code deploy (e.g. Vercel) starts from it.",
    )
    demo.git("-C", "origin.git", "log", "--oneline", "-3", "main")
    contained = children.run(
        ["git", "-C", "origin.git", "merge-base", "--is-ancestor", "staging", "main"], cwd=workdir
    )
    require(contained.returncode == 0, "origin's main does not contain the staging commit")
    print(f"{INDENT}origin's main contains staging's tip: the release is pushed")


def main() -> int:
    """Run the rehearsal; 0 when every step ended as expected."""
    try:
        with EmbeddedPostgres() as pg, tempfile.TemporaryDirectory(prefix="orch-demo-") as tmp:
            health = HealthServer().start()
            try:
                rehearse(pg, Path(tmp).resolve(), health)
            finally:
                health.stop()
    except ServerBinariesMissing as exc:
        print(f"demo cannot start: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except DemoFailed as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ndemo interrupted: the cluster and the temporary folder were removed", file=sys.stderr
        )
        return 130
    except subprocess.CalledProcessError as exc:  # building the rehearsal world failed
        lines = str(exc.stderr or "").strip().splitlines()
        detail = lines[-1] if lines else f"exit {exc.returncode}"
        print(f"\ndemo FAILED: {shlex.join(map(str, exc.cmd))}: {detail}", file=sys.stderr)
        return 1
    print("\ndemo finished: NEEDS_MIGRATION -> rehearsal ok -> deploy succeeded -> SAFE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
