"""Benchmarks of orchestrator against a wide synthetic schema (``make bench``)."""
