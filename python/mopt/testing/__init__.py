"""Helpers for mopt's tests and benchmarks: reference runs, comparisons, test models."""
