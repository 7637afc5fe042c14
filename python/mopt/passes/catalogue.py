"""Every rewrite rule, cleanup first, then fusions (read the whole catalogue here)."""

from mopt.passes import cleanup, fusion

ALL_RULES = [*cleanup.RULES, *fusion.RULES]
