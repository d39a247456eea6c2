"""``orchestrator init``: a playbook for the app in a folder, from what the app's own files
say (the drizzle config, ``.vercel/project.json``, the ``origin`` remote, the database URL's
host) and, with a key or token, what Neon and GitHub say.

One concern a module: ``drizzle_config`` (a drizzle config's literals, without node),
``sources`` (a remote URL, a Neon host, the Vercel project file), ``draft`` (the playbook as
data, the questions, the YAML), ``discover`` (the reads and API calls). This module writes
the file: never over an existing one, and only after the text has loaded as a playbook.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.errors import UsageError
from orchestrator.init.discover import Discovery, InitOptions, discover
from orchestrator.init.draft import Draft, Question, answer, compose, questions

__all__ = ["InitOptions", "InitResult", "check_options", "check_target", "init_playbook"]

Ask = Callable[[Question], str]  # a person's answer ("" keeps the default)


@dataclass(frozen=True)
class InitResult:
    """The file written, what init read, and the keys still to fill (empty: ready)."""

    path: Path
    report: tuple[str, ...]
    missing: tuple[str, ...]
    draft: Draft


def check_target(path: Path) -> None:
    """Refuse (exit 2, nothing changed) when ``path`` exists or its folder does not."""
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path} already exists: init never overwrites a file (nothing changed)")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent} is not a folder (nothing changed)")


def check_options(options: InitOptions) -> None:
    """The options' durations and URLs are well formed (UsageError, exit 2, otherwise)."""
    from orchestrator.playbook import parse_duration

    seconds = {}
    for value, name in (
        (options.monitor_duration, "--monitor-duration"),
        (options.monitor_interval, "--monitor-interval"),
    ):
        try:
            seconds[name] = parse_duration(value)
        except ValueError as exc:
            raise UsageError(f"{name}: {exc}") from None
        if seconds[name] <= 0:
            raise UsageError(f"{name}: must be greater than zero")
    if seconds["--monitor-interval"] > seconds["--monitor-duration"]:
        raise UsageError("--monitor-interval must not exceed --monitor-duration")
    for url, name in (
        (options.health_url, "--health-url"),
        (options.neon_api_url, "--neon-api-url"),
        (options.github_api_url, "--github-api-url"),
        (options.vercel_api_url, "--vercel-api-url"),
    ):
        if url is not None and not re.match(r"https?://[^/\s]+", url):
            raise UsageError(f"{name} must be an http:// or https:// URL")


def init_playbook(
    root: Path,
    output: Path,
    environ: Mapping[str, str],
    options: InitOptions,
    ask: Ask | None = None,
) -> InitResult:
    """Discover, ask (when ``ask`` is given: a person is at the terminal), and write
    ``output``. The text is loaded as a playbook first when nothing required is missing."""
    check_target(output)
    try:
        found: Discovery = discover(root, environ, options)
    except PermissionError as exc:  # a file or folder of the app we may not read: bad input
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    draft = found.draft
    if ask is not None:
        for question in questions(draft):
            draft = _ask_until_valid(draft, question, ask)
    folder = Path(os.path.relpath(root.resolve(), output.parent.resolve())).as_posix()
    text = compose(replace(draft, repo=folder))
    _write_new(output, text, check=not draft.missing)
    return InitResult(output, found.report, tuple(draft.missing), draft)


def _ask_until_valid(draft: Draft, question: Question, ask: Ask) -> Draft:
    asked = question
    for _attempt in range(3):
        try:
            return answer(draft, question.key, ask(asked))
        except ValueError as exc:
            asked = Question(question.key, f"{question.prompt} ({exc})", question.default)
    return draft  # three wrong answers: the value stays as found (or missing)


def _write_new(path: Path, text: str, *, check: bool) -> None:
    """Write ``text`` to a new file at ``path``: through a temporary file beside it (loaded
    as a playbook when ``check``), then a hard link, which fails rather than replace a file
    created meanwhile."""
    from orchestrator.playbook import load_playbook

    descriptor, temporary = tempfile.mkstemp(
        prefix=".orchestrator-init-", suffix=".yaml", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        if check:
            try:
                load_playbook(Path(temporary))
            except UsageError as exc:  # a bug of ours: say so rather than write a bad file
                raise UsageError(f"init composed a playbook that does not load: {exc}") from None
        os.chmod(temporary, 0o644)
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise UsageError(
                f"{path} already exists: init never overwrites a file (nothing changed)"
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
