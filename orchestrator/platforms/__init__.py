"""Clients of the platforms a release goes through: GitHub (pull requests, checks) and
Vercel (deployments), over one small shared HTTP transport (:mod:`.http`), which Neon's
client (:mod:`orchestrator.neon.api`, branches and operations) uses too.

One concern a module: ``http`` (bearer token, retries honouring ``Retry-After``, the API's
own message on refusals, the token never shown), ``github`` and ``vercel`` (the published
REST shapes a release uses), ``liveness`` (is the pushed commit live? pure judgements and
the probes that feed them).
"""
