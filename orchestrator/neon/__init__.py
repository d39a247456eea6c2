"""Neon: the API client a release uses (branches, restores, operations)."""
