"""The command line reaches the runtime through the verb layer (orchestrator/commands.py) only.

Read from the source (the imports a module executes, not those under ``TYPE_CHECKING``), so
a new shortcut past the verbs fails here, whichever command would take it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import orchestrator

PACKAGE = Path(orchestrator.__file__).parent

# The verb layer, and leaves every layer may use: typed errors, secret masking, the retry
# numbers --help shows, the renderers (they format results, they do nothing), and the
# allocation policy (a process that ends after its command frees nothing first).
ALLOWED_FOR_THE_CLI = {
    "orchestrator.commands",
    "orchestrator.allocation",
    "orchestrator.errors",
    "orchestrator.redaction",
    "orchestrator.db.backoff",
    "orchestrator.render",
    "orchestrator.analysis.markdown",
    # init's own verb layer (it reads the app's files, not the database) and the CI
    # reporter (a renderer whose output goes to GitHub Actions' summary and annotations).
    "orchestrator.init",
    "orchestrator.ci",
}


def executed_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each ``orchestrator`` import outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            typing_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "orchestrator":  # from orchestrator import commands, render
                found += [(node.lineno, f"orchestrator.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] == "orchestrator"]


def test_the_cli_imports_only_the_verb_layer() -> None:
    shortcuts = [
        f"{path.name}:{line} imports {module}"
        for path in sorted((PACKAGE / "cli").glob("*.py"))
        for line, module in executed_imports(path)
        if module not in ALLOWED_FOR_THE_CLI and not module.startswith("orchestrator.cli")
    ]
    assert shortcuts == []


def test_the_verb_layer_imports_the_engine_git_and_analysers_lazily() -> None:
    tree = ast.parse((PACKAGE / "commands.py").read_text())
    top = [
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module is not None
    ]
    heavy = (
        "orchestrator.engine",
        "orchestrator.neon",
        "orchestrator.gitrepo",
        "orchestrator.analysis",
    )
    assert [m for m in top if m.startswith(heavy)] == []
