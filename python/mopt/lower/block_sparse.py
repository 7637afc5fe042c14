"""Which constant MatMul/Gemm weights run on the block-sparse kernel, and why the others do not.

The kernel (csrc/kernels/cpu/common/bsr_gemm.inc) stores B [K x N] as block-CSR over 1 x 8 blocks
(one input row, 8 consecutive output columns): its work follows the number of nonzero blocks, the
dense kernel's does not. Lowering measures each constant weight's block density (nonzero blocks /
all blocks) and packs it block-sparse only at or below MAX_DENSITY; above it the dense kernel is
faster, so it stays, and the choice is recorded either way (shown by `mopt compile`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mopt.ir.graph import Node

BLOCK_COLS = 8  # cpu::kBsrCols

# Measured with benchmarks/prune/bench_block_sparse.py --sweep (Gemm K = N = 1024, 1 thread, this
# project's 2-core AVX-512 machine), dense time / block-sparse time by block density:
#   density   0.9   0.8   0.7   0.6   0.5   0.4   0.3   0.1
#   M = 1     0.92  0.88  1.06  1.19  1.49  1.81  2.20  4.61
#   M = 4     0.63  0.71  0.78  0.92  1.07  1.32  1.71  3.95
#   M = 64    1.12  1.22  1.54  1.54  1.94  2.42  2.72  5.10
# The batch is not known when the weights are packed, so the bar is where every batch measured
# wins: 0.5. Above it the few-row batches lose, and the dense kernel stays.
MAX_DENSITY = 0.5

OPS = {("", "MatMul"), ("", "Gemm"), ("com.mopt", "FusedGemm"), ("com.mopt", "FusedMatMul")}


@dataclass
class SparseChoice:
    """The block-sparse decision for one node whose constant weight has zero blocks."""

    node: str
    op: str
    shape: tuple[int, int]  # the weight's logical [K, N]
    density: float  # nonzero 1 x 8 blocks / all blocks
    sparse: bool
    limit: float

    def describe(self) -> str:
        k, n = self.shape
        if self.sparse:
            return f"'{self.node}' ({self.op} {k}x{n}): block density {self.density:.2f} <= {self.limit:.2f}, block-sparse kernel"
        return f"'{self.node}' ({self.op} {k}x{n}): block density {self.density:.2f} > {self.limit:.2f}, dense kernel kept (faster here)"


def block_density(b: np.ndarray, cols: int = BLOCK_COLS) -> float:
    """Fraction of the 1 x `cols` blocks of a [K, N] matrix (N padded with zeros) that hold a nonzero."""
    k, n = b.shape
    if k == 0 or n == 0:
        return 1.0
    pad = -n % cols
    nz = np.pad(b != 0, ((0, 0), (0, pad))).reshape(k, -1, cols).any(axis=2)
    return float(nz.mean())


def logical_weight(node: Node) -> np.ndarray | None:
    """The node's constant float32 B as [K, N], or None when it has none the kernel could take."""
    if (node.domain, node.op_type) not in OPS or len(node.inputs) < 2:
        return None
    b = node.inputs[1]
    if b is None or not b.is_const or b.const is None or b.const.dtype != np.float32 or b.const.ndim != 2:
        return None
    if node.op_type.endswith("Gemm"):
        if _int_attr(node, "transA") != 0:
            return None
        return b.const.T if _int_attr(node, "transB") != 0 else b.const
    return b.const


def choose(node: Node, limit: float) -> tuple[dict[str, Any], SparseChoice | None]:
    """Hint attributes for the kernel's packer, and the decision (None: nothing sparse to decide)."""
    b = logical_weight(node)
    if b is None:
        return {}, None
    d = block_density(b)
    if d >= 1.0:
        return {}, None
    sparse = d <= limit
    choice = SparseChoice(node.name, node.op_type, (int(b.shape[0]), int(b.shape[1])), d, sparse, limit)
    return ({"_block_sparse": 1} if sparse else {}), choice


def _int_attr(node: Node, name: str) -> int:
    a = node.attrs.get(name)
    if a is None:
        return 0
    v = getattr(a, "value", a)
    return int(v)
