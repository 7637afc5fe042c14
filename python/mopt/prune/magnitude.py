"""Block magnitude pruning: zero whole blocks of constant MatMul/Gemm weights, smallest norm first.

A weight is seen as the operator sees it, B [K x N] (Gemm's transB undone): a block `RxC` is R
consecutive inputs (rows of K) by C consecutive outputs (columns of N), edge blocks cut short.
In each weight, the fraction `sparsity` of its blocks with the smallest L2 norm is set to zero;
nothing else changes, so the result is the original model with those entries zeroed (valid ONNX,
same outputs as zeroing them by hand). A 1x8 block is what the runtime's block-sparse kernel
stores (mopt.lower.block_sparse): Rx8 blocks are whole kernel blocks too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from mopt.errors import InvalidArgumentError


@dataclass
class BlockLayer:
    """One pruned weight."""

    name: str  # the node's name (or its output's)
    op: str
    weight: str  # the initializer
    shape: tuple[int, int]  # logical [K, N]
    blocks: int
    zeroed: int  # blocks set to zero (already-zero ones included)


@dataclass
class BlockPruneResult:
    model: onnx.ModelProto
    layers: list[BlockLayer]
    masks: dict[str, np.ndarray]  # initializer -> keep mask of its stored shape

    @property
    def zeroed_fraction(self) -> float:
        total = sum(layer.shape[0] * layer.shape[1] for layer in self.layers)
        zeros = sum(int((~m).sum()) for m in self.masks.values())
        return zeros / total if total else 0.0


def parse_block(text: str) -> tuple[int, int]:
    """'1x8' -> (1, 8)."""
    parts = text.lower().split("x")
    try:
        r, c = (int(p) for p in parts)
    except ValueError:
        raise InvalidArgumentError(f"--block takes ROWSxCOLS (inputs x outputs), e.g. 1x8; got '{text}'") from None
    if r < 1 or c < 1:
        raise InvalidArgumentError(f"--block sizes must be positive, got '{text}'")
    return r, c


def _targets(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str, bool]]:
    """(node, initializer, transposed) for each MatMul/Gemm whose B is a 2-D float initializer used once."""
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    outputs = {o.name for o in model.graph.output}
    out = []
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx") or n.op_type not in ("MatMul", "Gemm") or len(n.input) < 2:
            continue
        w = inits.get(n.input[1])
        if w is None or w.data_type != onnx.TensorProto.FLOAT or len(w.dims) != 2 or uses[w.name] != 1 or w.name in outputs:
            continue
        attrs = {a.name: a for a in n.attribute}
        if n.op_type == "Gemm" and "transA" in attrs and attrs["transA"].i:
            continue
        trans = n.op_type == "Gemm" and "transB" in attrs and bool(attrs["transB"].i)
        out.append((n, w.name, trans))
    return out


def block_mask(b: np.ndarray, sparsity: float, block: tuple[int, int]) -> np.ndarray:
    """Keep mask of B [K, N]: the round(sparsity * blocks) blocks of least L2 norm are False."""
    k, n = b.shape
    r, c = block
    kb, nb = -(-k // r), -(-n // c)
    padded = np.zeros((kb * r, nb * c), np.float64)
    padded[:k, :n] = b
    norms = np.sqrt((padded.reshape(kb, r, nb, c) ** 2).sum(axis=(1, 3))).reshape(-1)
    cut = int(round(sparsity * norms.size))
    keep = np.ones(norms.size, bool)
    if cut:
        keep[np.argsort(norms, kind="stable")[:cut]] = False
    full = np.repeat(np.repeat(keep.reshape(kb, nb), r, axis=0), c, axis=1)
    return full[:k, :n]


def prune_blocks(model: onnx.ModelProto, sparsity: float, block: tuple[int, int] = (1, 8)) -> BlockPruneResult:
    """A copy of `model` with the fraction `sparsity` of each MatMul/Gemm weight's blocks zeroed."""
    if not 0.0 <= sparsity < 1.0:
        raise InvalidArgumentError(f"--sparsity is the fraction of blocks to zero, in [0, 1); got {sparsity}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: t for t in m.graph.initializer}
    layers, masks = [], {}
    for node, name, trans in _targets(m):
        w = numpy_helper.to_array(inits[name])
        b = w.T if trans else w
        keep = block_mask(b, sparsity, block)
        stored = keep.T if trans else keep
        pruned = np.where(stored, w, np.float32(0)).astype(np.float32)
        inits[name].CopyFrom(numpy_helper.from_array(pruned, name))
        layers.append(
            BlockLayer(node.name or node.output[0], node.op_type, name, (int(b.shape[0]), int(b.shape[1])), *_block_counts(np.where(keep, b, 0), block))
        )
        masks[name] = stored
    if not layers:
        raise InvalidArgumentError("no MatMul/Gemm with a constant float32 2-D weight to prune")
    return BlockPruneResult(m, layers, masks)


def _block_counts(b: np.ndarray, block: tuple[int, int]) -> tuple[int, int]:
    """(blocks, all-zero blocks) of B [K, N]."""
    k, n = b.shape
    r, c = block
    kb, nb = -(-k // r), -(-n // c)
    padded = np.zeros((kb * r, nb * c), bool)
    padded[:k, :n] = b != 0
    nonzero = padded.reshape(kb, r, nb, c).any(axis=(1, 3))
    return int(nonzero.size), int(nonzero.size - nonzero.sum())
