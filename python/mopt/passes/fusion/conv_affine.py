"""Per-channel scale and shift after a convolution, folded into its weights and bias:

Mul(Conv(x, w, b), s)  ==>  Conv(x, w * s, b * s)     s: scalar or one value per output channel
Add(Conv(x, w, b), t)  ==>  Conv(x, w, b + t)         t: scalar or one value per output channel
"""

from __future__ import annotations

import numpy as np

from mopt.ir.graph import Value
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict


def per_channel(arr: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """The per-output-channel vector an array broadcast against [N, C, *spatial] stands for."""
    a = np.asarray(arr)
    if a.ndim > rank:
        return None
    padded = a.reshape((1,) * (rank - a.ndim) + a.shape)
    if any(d != 1 for i, d in enumerate(padded.shape) if i != 1):
        return None
    if padded.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(padded.reshape(-1), (channels,)).astype(np.float64)


def _conv_pattern(p: Pat, op: str):
    conv = p.Conv(p.any("x"), p.const("w"), p.optional_const("b"), capture="conv")
    return p.op(op, conv, p.const("k"), commutative=True)


def _check(m: Match) -> Verdict:
    if not m.has_single_use("conv"):
        return Verdict.no("Conv output feeds other nodes")
    if m.w.dtype != np.float32 or m.k.dtype != np.float32:
        return Verdict.no("not float32")
    if per_channel(m.k, m.w.shape[0], m.w.ndim) is None:
        return Verdict.no(f"constant of shape {m.k.shape} is not per-channel")
    return Verdict.yes()


class FoldMulIntoConv(Rule):
    level = 1

    def pattern(self, p: Pat):
        return _conv_pattern(p, "Mul")

    def check(self, m: Match) -> Verdict:
        return _check(m)

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        s = per_channel(m.k, m.w.shape[0], m.w.ndim)
        w = m.w.astype(np.float64) * s.reshape((-1,) + (1,) * (m.w.ndim - 1))
        b = None if m.b is None else (m.b.astype(np.float64) * s).astype(np.float32)
        return emit.Conv(m.x, w.astype(np.float32), b, **m.attrs("conv"))


class FoldAddIntoConv(Rule):
    level = 1

    def pattern(self, p: Pat):
        return _conv_pattern(p, "Add")

    def check(self, m: Match) -> Verdict:
        return _check(m)

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        t = per_channel(m.k, m.w.shape[0], m.w.ndim)
        b = t if m.b is None else m.b.astype(np.float64) + t
        return emit.Conv(m.x, m.w, b.astype(np.float32), **m.attrs("conv"))


RULES = [FoldMulIntoConv(), FoldAddIntoConv()]
