"""The deploy engine: the Strategy A state machine and everything that walks it.

- :mod:`.machine`: the declaration (states, steps, guards, dead ends), executed by
  ``transitions``;
- :mod:`.run`: starting, driving and resuming a run (the audit trail, the locks);
- :mod:`.steps`: each step's ``run()`` and postcondition ``done()``;
- :mod:`.observations`: the facts of the world the guards check;
- :mod:`.rehearsal`: the same declaration walked in rehearsal form (``deploy --dry-run``);
- :mod:`.world`: what resume re-reads before it goes on;
- :mod:`.rollback`: the concrete rollback plan of a stopped run.

It knows nothing of the command line, which calls it (:mod:`orchestrator.cli.runs`).
"""
