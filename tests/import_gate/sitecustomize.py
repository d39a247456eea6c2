"""Put on PYTHONPATH by tests/test_signals.py only (Python imports ``sitecustomize`` at
start-up): when the CLI starts importing ``orchestrator.cli.app``, its command modules and
the bulk of its start-up, say so on stderr and wait for a line on stdin. The test sends
Ctrl-C in that wait: an interrupt during the imports, without a clock."""

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

GATED = "orchestrator.cli.app"


class ImportGate:
    """A finder that finds nothing: it only holds up the import of :data:`GATED`."""

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == GATED:
            sys.stderr.write(f"importing {GATED}\n")
            sys.stderr.flush()
            sys.stdin.readline()
        return None


sys.meta_path.insert(0, ImportGate)
