"""The git edge of a release: fetch, guard, trial-merge, merge/push, verify and revert.

A release merges ``<remote>/<source>`` (e.g. staging) into ``<target>`` (e.g. main) and pushes
``<target>`` to ``<remote>``. Every function here leaves the operator's clone as it found it
(same branch checked out, same index and working tree) unless it succeeded, in which case the
only local change is that the local ``<target>`` branch points at what was pushed.

Git runs as porcelain commands started through :mod:`orchestrator.children` (so git and what
it starts die with us), whose exit status and stderr we interpret ourselves, so that every
failure becomes a typed, one-line, credential-free error (:class:`GuardError` /
:class:`UsageError`); GitPython's objects read commits and trees.

The package, one concern a module: ``process`` (running git, one-line errors), ``remote``
(fetch, tips, push), ``state`` (the operator's clone: open, refuse dirt, capture and restore),
``trial`` (preflight and trial merges, for the deploy and its rehearsal), ``history``
(ancestry and files at a commit), ``merge`` (merge and push) and ``revert``.
"""

from __future__ import annotations

from orchestrator.gitrepo.history import contains, fetched_contains, how_merged, read_files_at
from orchestrator.gitrepo.merge import MergeResult, is_merged, merge_and_push
from orchestrator.gitrepo.remote import MissingBranch, remote_tips
from orchestrator.gitrepo.revert import revert_commands, revert_release, revert_release_on_branch
from orchestrator.gitrepo.state import open_repo
from orchestrator.gitrepo.trial import TrialMerge, preflight, trial_merge

__all__ = [
    "MergeResult",
    "MissingBranch",
    "TrialMerge",
    "contains",
    "fetched_contains",
    "how_merged",
    "is_merged",
    "merge_and_push",
    "open_repo",
    "preflight",
    "read_files_at",
    "remote_tips",
    "revert_commands",
    "revert_release",
    "revert_release_on_branch",
    "trial_merge",
]
