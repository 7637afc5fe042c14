"""BatchNormalization folded into the layer before it:

Conv -> BatchNormalization  ==>  Conv with scaled weights and shifted bias
Gemm -> BatchNormalization  ==>  Gemm with scaled columns of B and shifted C

and a per-channel scale or shift after a BatchNormalization that has no layer to fold into (DenseNet
normalizes each concatenation, then scales and shifts it):

Mul(BatchNormalization(x, g, b, m, v), k)  ==>  BatchNormalization(x, g * k, b * k, m, v)
Add(BatchNormalization(x, g, b, m, v), t)  ==>  BatchNormalization(x, g, b + t, m, v)
"""

from __future__ import annotations

import numpy as np

from mopt.ir.graph import Node, Value
from mopt.passes.fusion.conv_affine import per_channel
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict


def _bn_scale_shift(m: Match, n_channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    eps = float(m.attr("epsilon", 1e-5))
    gamma, beta, mean, var = (np.asarray(a, np.float64).reshape(-1) for a in (m.gamma, m.beta, m.mean, m.var))
    if not all(a.size == n_channels for a in (gamma, beta, mean, var)):
        return None
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def bn_fusable(m: Match) -> Verdict:
    """The matched BatchNormalization (capture "bn") feeds only the matched node, in inference mode."""
    if not m.has_single_use("bn"):
        return Verdict.no("BatchNormalization output feeds other nodes")
    return _bn_is_inference(m.node("bn"))


def _bn_is_inference(bn: Node) -> Verdict:
    if bn.attr("training_mode", 0):
        return Verdict.no("BatchNormalization is in training mode")
    if any(v.uses or v.is_graph_output for v in bn.outputs[1:] if v is not None):
        return Verdict.no("BatchNormalization's running statistics are used")
    return Verdict.yes()


class FoldBatchNormIntoConv(Rule):
    level = 1

    def pattern(self, p: Pat):
        conv = p.Conv(p.any("x"), p.const("w"), p.optional_const("b"), capture="conv")
        return p.BatchNormalization(conv, *p.consts("gamma", "beta", "mean", "var"))

    def check(self, m: Match) -> Verdict:
        if not m.has_single_use("conv"):
            return Verdict.no("Conv output feeds other nodes")
        if m.w.dtype != np.float32:
            return Verdict.no(f"weights are {m.w.dtype}, not float32")
        if _bn_scale_shift(m, m.w.shape[0]) is None:
            return Verdict.no("BatchNormalization parameters do not match the output channels")
        return _bn_is_inference(m.root)

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        scale, shift = _bn_scale_shift(m, m.w.shape[0])  # type: ignore[misc]
        w = m.w.astype(np.float64) * scale.reshape((-1,) + (1,) * (m.w.ndim - 1))
        b = np.zeros(m.w.shape[0]) if m.b is None else m.b.astype(np.float64)
        b = b * scale + shift
        return emit.Conv(m.x, w.astype(np.float32), b.astype(np.float32), **m.attrs("conv"))


class FoldBatchNormIntoGemm(Rule):
    level = 1

    def pattern(self, p: Pat):
        gemm = p.Gemm(p.any("a"), p.const("w"), p.optional_const("c"), capture="gemm")
        return p.BatchNormalization(gemm, *p.consts("gamma", "beta", "mean", "var"))

    def check(self, m: Match) -> Verdict:
        if not m.has_single_use("gemm"):
            return Verdict.no("Gemm output feeds other nodes")
        if m.w.dtype != np.float32 or m.w.ndim != 2:
            return Verdict.no("B is not a 2-D float32 constant")
        n = m.w.shape[0] if m.attr("transB", 0, "gemm") else m.w.shape[1]
        # C of shape (M, 1) adds one value per row, even when M == N
        if m.c is not None and (m.c.size not in (1, n) or (m.c.size > 1 and m.c.shape[-1] != n)):
            return Verdict.no("C is not a bias over the output columns")
        if _bn_scale_shift(m, n) is None:
            return Verdict.no("BatchNormalization parameters do not match the output columns")
        return _bn_is_inference(m.root)

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        trans_b = bool(m.attr("transB", 0, "gemm"))
        n = m.w.shape[0] if trans_b else m.w.shape[1]
        scale, shift = _bn_scale_shift(m, n)  # type: ignore[misc]
        alpha = float(m.attr("alpha", 1.0, "gemm"))
        beta = float(m.attr("beta", 1.0, "gemm"))
        w = m.w.astype(np.float64) * alpha * (scale.reshape(-1, 1) if trans_b else scale.reshape(1, -1))
        c = np.zeros(n) if m.c is None else np.broadcast_to(m.c.astype(np.float64).reshape(-1), (n,)) * beta
        c = c * scale + shift
        attrs = {k: a for k, a in m.attrs("gemm").items() if k not in ("alpha", "beta")}
        return emit.Gemm(m.a, w.astype(np.float32), c.astype(np.float32), **attrs)


class _FoldAffineIntoBatchNorm(Rule):
    level = 1
    op = ""

    def pattern(self, p: Pat):
        bn = p.BatchNormalization(p.any("x"), *p.consts("gamma", "beta", "mean", "var"), capture="bn")
        return p.op(self.op, bn, p.const("k"), commutative=True)

    def _k(self, m: Match) -> np.ndarray | None:
        x = m.values["x"]
        if x.shape is None or len(x.shape) < 2 or not isinstance(x.shape[1], int):
            return None
        return per_channel(m.k, x.shape[1], len(x.shape))

    def check(self, m: Match) -> Verdict:
        if not (fusable := bn_fusable(m)):
            return fusable
        if any(a.dtype != np.float32 for a in (m.gamma, m.beta, m.mean, m.var, m.k)):
            return Verdict.no("not float32")
        k = self._k(m)
        if k is None or not all(np.asarray(a).size == k.size for a in (m.gamma, m.beta)):
            return Verdict.no(f"constant of shape {m.k.shape} is not per-channel")
        return Verdict.yes()


class FoldMulIntoBatchNorm(_FoldAffineIntoBatchNorm):
    op = "Mul"

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        k = self._k(m)
        gamma = np.asarray(m.gamma, np.float64).reshape(-1) * k
        beta = np.asarray(m.beta, np.float64).reshape(-1) * k
        return emit.BatchNormalization(m.x, gamma.astype(np.float32), beta.astype(np.float32), m.mean, m.var, **m.attrs("bn"))


class FoldAddIntoBatchNorm(_FoldAffineIntoBatchNorm):
    op = "Add"

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        beta = np.asarray(m.beta, np.float64).reshape(-1) + self._k(m)
        return emit.BatchNormalization(m.x, m.gamma, beta.astype(np.float32), m.mean, m.var, **m.attrs("bn"))


RULES = [FoldBatchNormIntoConv(), FoldBatchNormIntoGemm(), FoldMulIntoBatchNorm(), FoldAddIntoBatchNorm()]
