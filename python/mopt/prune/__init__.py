"""Pruning: structured (channels out, a smaller dense model) and distillation to win accuracy back."""

from mopt.prune.search import PruneResult, model_cost, prune
from mopt.prune.structured import ChannelAnalysis, analyze, apply_pruning, zero_channels

__all__ = ["ChannelAnalysis", "PruneResult", "analyze", "apply_pruning", "model_cost", "prune", "zero_channels"]
