"""Graph passes: the manager, the pattern DSL, the levels."""

from mopt.passes.manager import Pass, PassManager, PassRecord, register_pass
from mopt.passes.pipelines import pipeline

__all__ = ["Pass", "PassManager", "PassRecord", "pipeline", "register_pass"]
