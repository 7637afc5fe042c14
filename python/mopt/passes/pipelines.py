"""The optimization levels, as plain lists. Each level extends the one before it.

-O0  nothing: the graph runs as imported (Constant nodes are constants already)
-O1  constant folding, dead code, identities, BatchNorm and per-channel affine folding
-O2  + fused epilogues: activations and residual additions in Conv/Gemm/MatMul stores
-O3  + a 2x2 max pool fused into a one-input-channel convolution before it; a channel shuffle
     folded into the grouped convolution before it; a transformer's feed-forward block (two
     products around an activation) as one kernel; Winograd F(4x4, 3x3) for the 3x3 convolutions
     that gain from it
"""

from __future__ import annotations

from mopt.passes.cleanup.dead_code import EliminateDeadCode
from mopt.passes.fold.constants import FoldConstants
from mopt.passes.manager import Pass
from mopt.passes.pattern import ApplyRules
from mopt.passes.winograd import ChooseWinograd
from mopt.quant.qdq import LowerQDQToInt8


def pipeline(level: int, *, winograd: bool = True) -> list[Pass]:
    """The passes of -O<level>. winograd=False leaves -O3's Winograd out (it stores each chosen 3x3
    filter as 36 values instead of 9: VGG-19's -O3 program is 820 MB instead of 576)."""
    if level not in (0, 1, 2, 3):
        raise ValueError(f"optimization level must be 0, 1, 2 or 3, got {level}")
    passes: list[Pass] = []
    if level >= 1:
        passes += [LowerQDQToInt8(), FoldConstants(), EliminateDeadCode(), ApplyRules(level=1), EliminateDeadCode()]
    if level >= 2:
        passes += [ApplyRules(level=2), EliminateDeadCode()]
    if level >= 3:
        passes += [ApplyRules(level=3), EliminateDeadCode()] + ([ChooseWinograd()] if winograd else [])
    return passes
