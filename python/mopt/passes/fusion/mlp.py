"""A transformer's feed-forward block in one kernel (-O3):

Fused{MatMul,Gemm}{activation}(x, W1, b1) -> [Reshape, at most 2] -> {Fused}{MatMul,Gemm}(h, W2, b2[, residual])
    ==>  com.mopt.FusedMLP{activation}(x, W1, b1, W2, b2, residual)

The hidden activation h (four times the model's width) is then never written to memory and read
back: the kernel runs blocks of rows through both products while their h is in cache, and stores h
a padded stride apart so the second product reads it in place. The arithmetic is the two products',
in the same order. Reshapes between them may only regroup the leading axes.

Left alone: weights that are not constant, a pruned weight (one in ten of its 1 x 8 blocks zero or
more: the block-sparse lowering takes it), a second product with an activation, a first one with a
residual, transposed A, alpha or beta other than 1.
"""

from __future__ import annotations

import numpy as np

from mopt.ir.dtypes import DType
from mopt.ir.graph import Node, Value
from mopt.lower.block_sparse import block_density
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict

GEMMS = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm")
ACT_ATTRS = ("activation", "activation_alpha", "activation_beta")
DENSE = 0.9  # block density at or below which a weight is left to the block-sparse lowering


class _Product:
    """One GEMM's operands, read from a MatMul / Gemm node (or why it does not qualify). Only
    shapes and attributes are looked at here; the weight's values (its transpose, its density)
    only once the whole block matched: VGG-19's 400 MB classifier weights took seconds each."""

    def __init__(self, n: Node) -> None:
        self.node = n
        self.a: Value | None = n.inputs[0] if n.inputs else None
        self.w_value: Value | None = n.inputs[1] if len(n.inputs) > 1 else None
        self.trans_b = False
        self._logical: np.ndarray | None = None
        self.n = 0  # output columns
        self.bias: Value | None = None
        self.residual: Value | None = n.inputs[3] if len(n.inputs) > 3 else None
        self.act = n.attr("activation")
        self.reason = self._read(n)

    def _read(self, n: Node) -> str:
        if n.domain not in ("", "com.mopt") or (n.domain == "" and n.op_type not in ("MatMul", "Gemm")):
            return f"{n.qualified_op} is not a MatMul or Gemm"
        if self.a is None or self.a.shape is None or len(self.a.shape) < 2 or self.a.dtype != DType.FLOAT:
            return "A is not a float32 matrix of known rank >= 2"
        w = self.w_value
        if w is None or not w.is_const or w.const is None or w.const.ndim != 2 or w.const.dtype != np.float32:
            return "the weight is not a constant float32 matrix"
        if float(n.attr("alpha", 1.0)) != 1.0:
            return "alpha is not 1"
        gemm = n.op_type in ("Gemm", "FusedGemm")
        if gemm and int(n.attr("transA", 0)) != 0:
            return "A is transposed"
        self.trans_b = gemm and int(n.attr("transB", 0)) != 0
        self.n = int(w.const.shape[0] if self.trans_b else w.const.shape[1])
        b = n.inputs[2] if len(n.inputs) > 2 else None
        if b is not None:
            if (not b.is_const or b.const is None or b.const.ndim != 1 or b.const.size != self.n
                    or b.const.dtype != np.float32 or (gemm and float(n.attr("beta", 1.0)) != 1.0)):
                return "the bias is not a constant row of the output's width"
            self.bias = b
        return ""

    @property
    def k(self) -> int:
        assert self.w_value is not None
        assert self.w_value.const is not None
        return int(self.w_value.const.shape[1] if self.trans_b else self.w_value.const.shape[0])

    def logical_weight(self) -> np.ndarray:
        """The weight as [K, N] (a transposed copy made once)."""
        assert self.w_value is not None
        assert self.w_value.const is not None
        if not self.trans_b:
            return self.w_value.const
        if self._logical is None:
            self._logical = np.ascontiguousarray(self.w_value.const.T)
        return self._logical

    def pruned(self) -> bool:
        assert self.w_value is not None
        assert self.w_value.const is not None
        return block_density(self.logical_weight()) <= DENSE

    def weight(self, emit: Emitter, tag: str) -> Value:
        assert self.w_value is not None
        return emit.const(self.logical_weight(), tag) if self.trans_b else self.w_value


class FuseMLP(Rule):
    level = 3

    def pattern(self, p: Pat):
        return p.op(GEMMS, domain=("", "com.mopt"), any_inputs=True)

    def check(self, m: Match) -> Verdict:
        second = _Product(m.root)
        if second.reason:
            return Verdict.no(f"second product: {second.reason}")
        if second.act is not None:
            return Verdict.no("the second product applies an activation")
        v, reshapes = second.a, []
        assert v is not None
        while v.producer is not None and v.producer.op_type == "Reshape" and v.producer.domain == "" and len(reshapes) < 2:
            reshapes.append(v.producer)
            v = v.producer.inputs[0]
            if v is None:
                return Verdict.no("a Reshape without input")
        if v.producer is None or v.producer.op_type not in GEMMS:
            return Verdict.no("the hidden activation does not come from a MatMul or Gemm")
        first = _Product(v.producer)
        if first.reason:
            return Verdict.no(f"first product: {first.reason}")
        if first.act is None:
            return Verdict.no("the first product applies no activation (not a feed-forward block)")
        if first.residual is not None:
            return Verdict.no("the first product adds a residual")
        assert first.a is not None
        assert second.a is not None
        if first.n != second.k:
            return Verdict.no("the hidden widths differ")
        for val in [first.node.outputs[0], *(r.outputs[0] for r in reshapes)]:
            if val.is_graph_output or len(val.uses) != 1:
                return Verdict.no("the hidden activation is read elsewhere")
        n1 = first.n
        for r in reshapes:
            i, o = r.inputs[0], r.outputs[0]
            if i is None or i.shape is None or o.shape is None or i.shape[-1] != n1 or o.shape[-1] != n1:
                return Verdict.no("a Reshape between the products does more than regroup the leading axes")
        if any(d is None for d in (*first.a.shape, *second.a.shape)) or first.a.shape[:-1] != second.a.shape[:-1]:
            return Verdict.no("the products' rows are not the same (by their known shapes)")
        res = second.residual
        if res is not None and (res.shape is None or any(d is None for d in res.shape) or res.shape != m.root.outputs[0].shape
                                or res.dtype != DType.FLOAT):
            return Verdict.no("the residual is not a float32 tensor of the product's known shape")
        if first.pruned() or second.pruned():
            return Verdict.no("a weight is pruned (left to the block-sparse lowering)")
        m.__dict__["_products"] = (first, second, reshapes)
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        first, second, reshapes = m.__dict__["_products"]
        for n in (first.node, *reshapes):
            m.matched.insert(0, n)
        attrs = {k: a for k, a in first.node.attrs.items() if k in ACT_ATTRS}
        ins = [first.a, first.weight(emit, "w1"), first.bias, second.weight(emit, "w2"), second.bias, second.residual]
        y = emit.op("FusedMLP", ins, attrs, domain="com.mopt")[0]
        y.shape, y.dtype = m.root.outputs[0].shape, DType.FLOAT
        return y


RULES = [FuseMLP()]
