"""Cleanup passes and rules: dead code, identities."""

from mopt.passes.cleanup.identity import RULES

__all__ = ["RULES"]
