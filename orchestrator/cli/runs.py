"""The run commands: ``deploy`` (or its ``--dry-run`` rehearsal), ``resume``, ``rollback``,
``runs`` and ``show``."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.options import retries_option, state_options
from orchestrator.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from orchestrator.engine.run import Interaction
    from orchestrator.runs import RunRecord, RunStore


def cli_interaction(
    yes: bool, backup_confirmed: bool, as_json: bool, what: str, retries: int | None = None
) -> Interaction:
    """Confirmations: --yes answers them; a terminal asks; otherwise refuse up front.

    ``retries``: --retries, attempts instead of the playbook's; each retry of the first
    connection is shown on stderr (later ones as run events, and in the audit trail).
    """
    from orchestrator.cli.console import LiveLine, err, interactive
    from orchestrator.cli.options import on_retry
    from orchestrator.engine.run import Interaction

    at_terminal = interactive()
    # A line rewritten in place only where stderr is a terminal that can (not a log, not dumb).
    live = at_terminal and not as_json and err.is_terminal and not err.is_dumb_terminal
    if not yes and not at_terminal:
        raise UsageError(f"{what} changes production: pass --yes (no terminal to confirm on)")

    def ask(question: str) -> bool:
        try:
            return click.confirm(f"{question}?", default=False)
        except click.Abort as exc:  # click's word for Ctrl-C and for end of input alike
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise exc.__context__ from None  # the run stops as on a stop signal
            return False  # end of input (Ctrl-D) answers the question's default, no

    made = Interaction(
        confirm=(lambda _question: True) if yes else ask,
        backup_confirmed=backup_confirmed,
        ask=ask if at_terminal else None,
        console=None if as_json else _print_event,
        on_progress=LiveLine.show if live else lambda _line: None,
        warn=_warner(as_json),
        retries=retries,
        on_retry=on_retry,
    )
    # No live line: a step that waits says so on stderr every few seconds.
    if live:
        return made
    return dataclasses.replace(made, heartbeat=_to_stderr, heartbeat_s=_heartbeat_period())


def _heartbeat_period() -> float:
    """``$ORCHESTRATOR_HEARTBEAT`` (a duration: ``30s``), else every 10 s."""
    from orchestrator.cli.options import duration
    from orchestrator.engine.heartbeat import HEARTBEAT_S

    if (value := os.environ.get("ORCHESTRATOR_HEARTBEAT")) is None:
        return HEARTBEAT_S
    return duration(value, "$ORCHESTRATOR_HEARTBEAT", unit_required=False)


def _to_stderr(line: str) -> None:
    """A plain line on stderr: a heartbeat, or the rehearsal's kind and bounds."""
    from orchestrator.cli.console import err

    err.print(line, markup=False, highlight=False)


def _warner(as_json: bool) -> Callable[[str], None]:
    """Print a warning on stderr; in GitHub Actions also as a ``::warning`` annotation
    (on stdout, or on stderr when stdout carries the JSON document)."""

    def warn(message: str) -> None:
        from orchestrator.ci import GitHubActions, annotation
        from orchestrator.cli.console import err

        err.print(f"warning: {message}", markup=False, highlight=False)
        actions = GitHubActions.from_environ(os.environ)
        actions.emit([annotation("warning", message)], _annotation_writer(as_json))

    return warn


def _annotation_writer(as_json: bool) -> Callable[[str], None]:
    """Workflow commands as whole lines, never wrapped (not through rich)."""
    return functools.partial(click.echo, err=as_json)


def _print_event(event: dict[str, Any]) -> None:
    from orchestrator import render_runs
    from orchestrator.cli.console import LiveLine, err

    if (line := render_runs.event_line(event)) is not None:
        LiveLine.close()
        err.print(line, markup=False, highlight=False)


def _finish_run(record: RunRecord, as_json: bool, command: str) -> int:
    from orchestrator import ci, render_runs
    from orchestrator.cli.console import out, print_json
    from orchestrator.redaction import shown

    record = record.from_json(shown().value(record.to_json()))  # masked as in state.json
    actions = ci.GitHubActions.from_environ(os.environ)
    actions.write_summary(ci.run_markdown(record, command))
    actions.emit(ci.run_annotations(record, command), _annotation_writer(as_json))
    if as_json:
        print_json(record.to_json())
    else:
        render_runs.run_summary(out, record)
    return int(record.exit_code if record.exit_code is not None else ExitCode.ERROR)


@click.command()
@click.option(
    "--playbook",
    default="orchestrator.yaml",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The release playbook (`orchestrator init` writes orchestrator.yaml).",
)
@click.option("--yes", "-y", is_flag=True, help="Answer yes to every confirmation.")
@click.option(
    "--backup-confirmed", is_flag=True, help="backup kind manual: vouch that a backup exists."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Rehearse: predict how the deploy would end, committing nothing. By default the "
    "migrations run on production in a transaction that is rolled back (bounded lock waits).",
)
@click.option(
    "--rehearse-on",
    metavar="local|neon-branch|URL",
    help="With --dry-run: migrate a copy for real instead of touching production: 'local' "
    "copies production's schema into a throwaway local PostgreSQL; 'neon-branch' uses a "
    "temporary branch of production's Neon branch (needs the playbook's neon: block), deleted "
    "after; a URL names a staging copy.",
)
@click.option(
    "--rehearsal-lock-timeout",
    default="1s",
    show_default=True,
    help="With --dry-run on production: the longest a rehearsed statement waits for a lock.",
)
@click.option(
    "--rehearsal-statement-timeout",
    default="60s",
    show_default=True,
    help="With --dry-run on production: the longest a rehearsed statement runs.",
)
@retries_option
@state_options
def deploy(
    playbook: Path,
    yes: bool,
    backup_confirmed: bool,
    dry_run: bool,
    rehearse_on: str | None,
    rehearsal_lock_timeout: str,
    rehearsal_statement_timeout: str,
    retries: int | None,
    state_dir: Path,
    as_json: bool,
) -> int:
    """Walk Strategy A: backup, validate, migrate, revalidate, merge/push, monitor."""
    from orchestrator.cli.console import err, interactive, print_json, print_lines
    from orchestrator.runs import RunStore

    if rehearse_on is not None and not dry_run:
        raise UsageError("--rehearse-on only goes with --dry-run")
    if dry_run:
        from orchestrator import ci
        from orchestrator.cli.options import duration, on_retry
        from orchestrator.engine.dry_run import RehearsalBounds
        from orchestrator.engine.rehearsal import rehearse

        bounds = RehearsalBounds(
            lock_timeout=duration(rehearsal_lock_timeout, "--rehearsal-lock-timeout"),
            statement_timeout=duration(
                rehearsal_statement_timeout, "--rehearsal-statement-timeout"
            ),
        )
        rehearsal = rehearse(
            playbook,
            os.environ,
            RunStore(state_dir),
            attested=backup_confirmed or interactive(),  # as the deploy's cli_interaction
            rehearse_on=rehearse_on,
            bounds=bounds,
            announce=_to_stderr,
            retries=retries,
            on_retry=on_retry,
        )
        for warning in rehearsal.warnings:
            _warner(as_json)(warning)
        actions = ci.GitHubActions.from_environ(os.environ)
        actions.write_summary(ci.rehearsal_markdown(rehearsal))
        if rehearsal.halt_line:
            halt = ci.annotation(
                "error", rehearsal.halt_line, title="orchestrator deploy --dry-run"
            )
            actions.emit([halt], _annotation_writer(as_json))
        if as_json:
            print_json(rehearsal.to_json())
        else:
            print_lines(rehearsal.lines)
        if rehearsal.halt_line:
            err.print(f"error: {rehearsal.halt_line}", markup=False, highlight=False)
        return int(rehearsal.exit_code)
    from orchestrator.engine.run import start

    interaction = cli_interaction(yes, backup_confirmed, as_json, "deploy", retries)
    if not yes and not as_json:
        from orchestrator.checklist import checklist
        from orchestrator.playbook import load_playbook

        print_lines(checklist(load_playbook(playbook)))
        if not click.confirm("Start the deploy?", default=False):
            raise UsageError("deploy not started: nothing was changed")
    record = start(playbook, RunStore(state_dir), interaction)
    return _finish_run(record, as_json, "deploy")


@click.command()
@click.argument("run_id", required=False)
@click.option("--yes", "-y", is_flag=True, help="Answer yes to every confirmation.")
@click.option(
    "--backup-confirmed", is_flag=True, help="backup kind manual: vouch that a backup exists."
)
@click.option(
    "--new-run",
    is_flag=True,
    help="When the playbook changed since the run started: abandon the run and start a new "
    "one with the playbook as it is now (without it, resume refuses).",
)
@retries_option
@state_options
def resume(
    run_id: str | None,
    yes: bool,
    backup_confirmed: bool,
    new_run: bool,
    retries: int | None,
    state_dir: Path,
    as_json: bool,
) -> int:
    """Continue an interrupted or halted run (default: the newest unfinished one), with the
    playbook it started with.

    Refuses (exit 2) if the world moved under the run, the playbook file changed (unless
    --new-run) or the database is another one; steps already done are not repeated.
    """
    from orchestrator.engine.run import resume as walk
    from orchestrator.runs import RunStore

    interaction = cli_interaction(yes, backup_confirmed, as_json, "resume", retries)
    record = walk(run_id, RunStore(state_dir), dataclasses.replace(interaction, new_run=new_run))
    return _finish_run(record, as_json, "resume")


@click.command()
@click.argument("run_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="Print the run's rollback plan (any run, a succeeded one too) and do nothing.",
)
@click.option(
    "--restore-database",
    is_flag=True,
    help="Also restore the database from the run's backup, after you type its name: a "
    "neon_branch backup by Neon's branch restore; a pg_dump backup exactly, in one "
    "transaction, checked against the dump. Then validate again.",
)
@click.option(
    "--confirm-branch",
    metavar="NAME",
    help="With --restore-database (neon_branch): production's branch name, instead of typing it.",
)
@click.option(
    "--confirm-database",
    metavar="NAME",
    help="With --restore-database (pg_dump): production's database name, instead of typing it.",
)
@retries_option
@state_options
def rollback(
    run_id: str,
    yes: bool,
    plan_only: bool,
    restore_database: bool,
    confirm_branch: str | None,
    confirm_database: str | None,
    retries: int | None,
    state_dir: Path,
    as_json: bool,
) -> int:
    """Revert a run's pushed merge (git revert + push) and print the database steps.

    With --restore-database, also restore the database from the run's backup (a Neon
    branch, or a pg_dump restored exactly) and exit with the verdict of validating it again
    (21 when a restored dump does not match).
    """
    from orchestrator.cli.console import interactive, out, print_json, print_lines
    from orchestrator.cli.options import on_retry
    from orchestrator.engine.rollback import rollback_plan
    from orchestrator.engine.run import rollback as revert
    from orchestrator.runs import RunStore

    store = RunStore(state_dir)
    typed = typed_database = None
    for given, name in (
        (confirm_branch, "--confirm-branch"),
        (confirm_database, "--confirm-database"),
        (retries, "--retries"),
    ):
        if given is not None and not restore_database:
            raise UsageError(f"{name} only goes with --restore-database")
    if plan_only and (yes or restore_database):
        raise UsageError("--plan only prints the plan: not with --yes or --restore-database")
    backup = store.load(run_id).steps.backup if restore_database else None
    if backup is not None and backup.kind == "pg_dump":
        if confirm_branch is not None:
            raise UsageError("--confirm-branch is for Neon branch backups: use --confirm-database")
        typed_database = _confirm_dump_restore(store, run_id, confirm_database)
    elif restore_database:
        if confirm_database is not None:
            raise UsageError("--confirm-database is for pg_dump backups: use --confirm-branch")
        typed = _confirm_restore(store, run_id, confirm_branch)
    shown = False
    if plan_only or not yes:
        # The plan first, before any question and before a refusal for want of a terminal:
        # what a rollback would do can always be read without doing it.
        record = store.load(run_id)
        plan = rollback_plan(record)
        refusing = not plan_only and not interactive()
        if as_json and (plan_only or refusing):
            print_json({"run_id": record.run_id, "state": record.state, "plan": plan})
        elif not as_json:
            out.print("[bold]rollback plan:[/bold]")
            print_lines(plan)
            shown = True
        if plan_only:
            return int(ExitCode.OK)
        if refusing:
            raise UsageError(
                "rollback changes production: pass --yes (no terminal to confirm on); "
                "the plan above is what it would do"
            )
    interaction = cli_interaction(yes, False, as_json, "rollback")
    result = revert(run_id, store, interaction)
    restored: Any = None
    if typed is not None:
        from orchestrator.neon.restore import restore_production

        restored = restore_production(
            run_id, store, os.environ, typed, retries=retries, on_retry=on_retry
        )
    elif typed_database is not None:
        from orchestrator.engine.dump_rollback import restore_from_dump

        restored = restore_from_dump(run_id, store, os.environ, typed_database, retries=retries)
    if as_json:
        document: dict[str, Any] = {
            "reverted_commit": result.reverted_commit,
            "pull_request_url": result.pull_request_url,
            "plan": result.plan,
        }
        if restored is not None:
            document["database_restore"] = restored.to_json()
        print_json(document)
    else:
        if result.reverted_commit:
            out.print(f"[green]reverted and pushed:[/green] {result.reverted_commit}")
        if result.pull_request_url:
            out.print(f"revert pull request: {result.pull_request_url}", markup=False)
        if restored is not None:
            print_lines(restored.lines)
        elif not shown:
            print_lines(result.plan)
    return int(ExitCode.OK if restored is None else restored.exit_code)


def _confirm_dump_restore(store: RunStore, run_id: str, confirm_database: str | None) -> str:
    """The database name the operator typed (or passed), checked with the dump and the
    client programs before anything is done."""
    from orchestrator.engine.dump_rollback import plan_for_run

    plan = plan_for_run(run_id, store, os.environ, None)
    typed = _typed_name(
        confirm_database,
        plan.lines,
        f"Type the production database's name ({plan.database}) to restore it",
        "--restore-database replaces production's schema and rows: type the database's name "
        "at a terminal, or pass --confirm-database NAME",
    )
    plan_for_run(run_id, store, os.environ, typed)
    return typed


def _confirm_restore(store: RunStore, run_id: str, confirm_branch: str | None) -> str:
    """The production branch name the operator typed (or passed) for the Neon restore
    ``--restore-database`` would perform; checked before anything is done."""
    from orchestrator.engine.run import pinned_playbook
    from orchestrator.neon.restore import check_confirmation, restore_plan

    record = store.load(run_id)
    pinned_playbook(record)  # the restore reads it: one it cannot read stops here
    plan = restore_plan(record)
    typed = _typed_name(
        confirm_branch,
        plan.lines,
        f"Type the production branch's name ({plan.production}) to restore it",
        "--restore-database replaces production's data: type the branch name at a terminal, "
        "or pass --confirm-branch NAME",
    )
    check_confirmation(plan, typed)
    return typed


def _typed_name(given: str | None, plan: list[str], prompt: str, refusal: str) -> str:
    """``given``, else the name typed at a terminal after the plan; without a terminal,
    UsageError ``refusal``."""
    from orchestrator.cli.console import err, interactive

    if given is not None:
        return given
    if not interactive():
        raise UsageError(refusal)
    for line in plan:
        err.print(line, markup=False, highlight=False)
    return str(click.prompt(prompt))


@click.group(name="runs", invoke_without_command=True)
@state_options
@click.pass_context
def list_runs(ctx: click.Context, state_dir: Path, as_json: bool) -> int:
    """List recorded runs, newest first (a run whose record cannot be read too, as such);
    `runs abandon RUN` closes a run for good."""
    from orchestrator import render_runs
    from orchestrator.cli.console import out, print_json
    from orchestrator.runs import RunStore

    if ctx.invoked_subcommand is not None:
        return int(ExitCode.OK)
    listing = RunStore(state_dir).listing()
    if as_json:
        print_json(
            {
                "runs": [
                    {**r.to_json(), "abandoned": listing.abandoned.get(r.run_id)}
                    for r in listing.records
                ],
                "unreadable": [
                    {"run_id": run_id, "reason": why, "abandoned": listing.abandoned.get(run_id)}
                    for run_id, why in listing.unreadable
                ],
            }
        )
    else:
        render_runs.runs_table(out, listing.records, listing.unreadable, listing.abandoned)
    return int(ExitCode.OK)


@list_runs.command(name="abandon")
@click.argument("run_id")
@click.option(
    "--reason", default="abandoned by the operator", show_default=True, help="Why, for the record."
)
@state_options
def abandon(run_id: str, reason: str, state_dir: Path, as_json: bool) -> int:
    """Close run RUN_ID for good: resume refuses it and no longer picks it by default.

    Nothing in production changes; `rollback RUN_ID --plan` says what the run left behind.
    """
    from orchestrator.cli.console import out, print_json
    from orchestrator.runs import RunStore

    full_id = RunStore(state_dir).abandon(run_id, reason)
    if as_json:
        print_json({"run_id": full_id, "abandoned": True, "reason": reason})
    else:
        out.print(f"run {full_id} abandoned: resume will not continue it", markup=False)
    return int(ExitCode.OK)


@click.command()
@click.argument("run_id")
@state_options
def show(run_id: str, state_dir: Path, as_json: bool) -> int:
    """Print a run's timeline (transitions, steps, checks, halt and rollback plan)."""
    from orchestrator import render_runs
    from orchestrator.audit import read_events
    from orchestrator.cli.console import out, print_json
    from orchestrator.engine.rollback import rollback_plan
    from orchestrator.runs import RunStore

    store = RunStore(state_dir)
    record = store.load(run_id)
    events = read_events(store.audit_path(record.run_id))
    plan = rollback_plan(record)
    if as_json:
        document = {"record": record.to_json(), "events": events, "rollback_plan": plan}
        print_json({**document, "abandoned": store.abandoned(record.run_id)})
    else:
        render_runs.timeline(out, record, events, plan)
    return int(ExitCode.OK)
