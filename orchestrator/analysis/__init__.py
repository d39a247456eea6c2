"""Migration intelligence: what each migration changes, how risky it is, which deploy order
is safe, and lint rules, derived from the SQL with pglast and from what PostgreSQL built
when the folder was replayed on the shadow (pure functions, no I/O).

Modules, one concern each:

- :mod:`~orchestrator.analysis.shadowfacts`: the shadow's facts about each migration;
- :mod:`~orchestrator.analysis.effects`: statement -> the changes it makes, read in order
  (:mod:`~orchestrator.analysis.statements`, over pglast's parse tree; their shapes in
  :mod:`~orchestrator.analysis.changes`; :mod:`~orchestrator.analysis.idempotence`: can a
  data change run twice);
- :mod:`~orchestrator.analysis.nontransactional`: what cannot run in the migration's
  transaction;
- :mod:`~orchestrator.analysis.typechange`: whether a column type change rewrites the table;
- :mod:`~orchestrator.analysis.compatibility`: old code on the new schema, new code on the old;
- :mod:`~orchestrator.analysis.lint`: the lint rules;
- :mod:`~orchestrator.analysis.locks`: which lock each change takes, and their conflicts;
- :mod:`~orchestrator.analysis.risk`: LOW / MEDIUM / HIGH with reasons;
- :mod:`~orchestrator.analysis.strategy`: migrations first, code first or expand/contract;
- :mod:`~orchestrator.analysis.plan`: all of the above for a set of migrations, and its JSON;
- :mod:`~orchestrator.analysis.markdown`: the plan as a matrix for a pull request.
"""
