"""Throwaway worlds built on this machine, and removed after use.

- :mod:`~orchestrator.sandbox.pg`: a PostgreSQL cluster of its own (``initdb`` + ``pg_ctl``);
- :mod:`~orchestrator.sandbox.release`: a release to rehearse (git origin and clone, a health
  endpoint, a playbook).

``deploy --dry-run --rehearse-on local`` migrates a copy of production in the first, ``make
demo`` rehearses a deploy in both, and the benchmarks and the tests build on them.
"""
