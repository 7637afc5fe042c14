"""Attention masks that add nothing, found and dropped.

    Where(Expand(c, s), x, y)      (c, x, y constants)  ==>  Expand(where(c, x, y), s)
    com.mopt.Attention(.., Expand(m, s))                ==>  com.mopt.Attention(.., m)
    com.mopt.Attention(.., zeros)                       ==>  com.mopt.Attention(..)

    Where(c, S, v)   (S scores: a scaled MatMul, v <= -1e30)  ==>  Add(S, Where(c, 0, v))
    Add(Add(S, m1), m2)                                       ==>  Add(S, Add(m1, m2))

so that FuseAttention, which takes one additive mask, sees one: GPT-Neo's export hides future keys
with Where(causal, scores, finfo.min) and then adds the padding mask. S + v is v itself for any
score below 1e22 in magnitude (v's rounding step is larger), so the scores come out the same
(a NaN score at a hidden key would become NaN instead of v; the kernel never reads hidden keys
past the last visible one).

An exporter writes the mask of a model without padding all the same: Hugging Face's ViT, exported
by torch.onnx (dynamo), builds Where(Expand(all-true [1, 1, 197, 1], [batch, 1, 197, 197]), 0, -inf)
and the attention adds that [batch, 1, 197, 197] tensor of zeros to every score row. The
attention broadcasts its mask itself, so an Expand in front of it only writes copies; a constant
mask of zeros is no mask at all.
"""

from __future__ import annotations

import numpy as np

from mopt.ir.dtypes import DType
from mopt.ir.graph import Node, Value
from mopt.passes.fusion.attention import _reaches_matmul, _scalar
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict

_HIDDEN = -1e30  # a mask value at or below this hides a key (as the attention kernel reads it)


def _scores_reader(v: Value) -> bool:
    """v is read once, by a Softmax or by an Add whose result a Softmax reads (scores on their way)."""
    if v.is_graph_output or len(v.uses) != 1:
        return False
    (n, _), = v.uses
    if n.domain != "":
        return False
    if n.op_type == "Softmax":
        return True
    return n.op_type == "Add" and _scores_reader(n.outputs[0])


def _broadcast(a: tuple | None, b: tuple | None) -> tuple | None:
    """The broadcast of two shapes; a dimension that cannot be told (two different symbols) is None."""
    if a is None or b is None:
        return None
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b, strict=True):
        if x == 1 or x == y:
            out.append(y)
        elif y == 1:
            out.append(x)
        else:
            out.append(None)
    return tuple(out)


class ScoresWhereAsMask(Rule):
    """Where(c, S, v) over attention scores, v a hiding constant: the same scores as S plus an
    additive mask Where(c, 0, v)."""

    level = 2

    def pattern(self, p: Pat):
        return p.Where(p.any("c"), p.any("s"), p.const("v"))

    def check(self, m: Match) -> Verdict:
        v = _scalar(m.value("v"))
        if v is None or not v <= _HIDDEN:
            return Verdict.no("the value for hidden keys is not a constant at or below -1e30")
        if m.c.dtype not in (None, DType.BOOL) or m.s.dtype not in (None, DType.FLOAT):
            return Verdict.no("not a boolean choice over float32 scores")
        if not _reaches_matmul(m.s):
            return Verdict.no("the kept values are not (scaled) MatMul scores")
        if not _scores_reader(m.root.outputs[0]):
            return Verdict.no("the result does not go (through additions) to a Softmax")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        hide = np.float32(_scalar(m.value("v")))
        mask = emit.Where(m.c, np.zeros((), np.float32), np.array(hide, np.float32))
        mask.dtype = DType.FLOAT
        mask.shape = m.c.shape
        return emit.Add(m.s, mask)


class CombineScoreMasks(Rule):
    """(S + m1) + m2 over attention scores S: S + (m1 + m2), one mask for FuseAttention."""

    level = 2

    def pattern(self, p: Pat):
        return p.Add(p.Add(p.any("s"), p.any("m1"), capture="inner", commutative=True), p.any("m2"), commutative=True)

    def check(self, m: Match) -> Verdict:
        if not _reaches_matmul(m.s):
            return Verdict.no("not (scaled) MatMul scores")
        if _reaches_matmul(m.m1) or _reaches_matmul(m.m2):
            return Verdict.no("a term is itself a product")
        if not m.has_single_use("inner") or not _scores_reader(m.root.outputs[0]):
            return Verdict.no("the sums are read elsewhere, or not by a Softmax")
        if any(x.dtype not in (None, DType.FLOAT) for x in (m.m1, m.m2)):
            return Verdict.no("a mask is not float32")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        mask = emit.Add(m.m1, m.m2)
        mask.dtype = DType.FLOAT
        mask.shape = _broadcast(m.m1.shape, m.m2.shape)
        return emit.Add(m.s, mask)


class FoldWhereOfExpand(Rule):
    """Where over an expanded constant condition with constant branches: the choice is made on the
    constant (broadcasting commutes with an elementwise op), then expanded."""

    level = 1

    def pattern(self, p: Pat):
        return p.Where(p.Expand(p.const("c"), p.any("s"), capture="expand"), p.const("x"), p.const("y"))

    def check(self, m: Match) -> Verdict:
        if m.c is None or m.x is None or m.y is None or m.c.dtype != np.bool_:
            return Verdict.no("the condition or a branch is not a constant")
        if m.x.dtype != m.y.dtype:
            return Verdict.no("the branches have different types")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        chosen = np.where(m.c, m.x, m.y).astype(m.x.dtype)
        return emit.Expand(emit.const(chosen, "where"), m.s)


def _scores_dims(att: Node) -> list[list[object]] | None:
    """For each axis of the attention's scores [batch..., Sq, Skv], the dimensions it may be
    given by (those of Q, K and V on that axis); None when the operands' shapes are unknown."""
    ins = att.inputs
    if not ins or ins[0] is None or ins[0].shape is None:
        return None
    packed = att.attr("packed_qkv")
    if packed is not None:
        b, s = ins[0].shape[0], ins[0].shape[1]
        return [[b], [att.attr("num_heads")], [s], [s]]
    if len(ins) < 3 or any(x is None or x.shape is None for x in ins[:3]):
        return None
    q, k, v = ins[:3]
    r = len(q.shape)
    logical = []
    for x, name in ((q, "q_perm"), (k, "k_perm"), (v, "v_perm")):
        perm = list(att.attr(name) or range(r))
        if len(x.shape) != r or len(perm) != r:
            return None
        logical.append([x.shape[a] for a in perm])
    lq, lk, lv = logical
    return [[lq[d], lk[d], lv[d]] for d in range(r - 2)] + [[lq[r - 2]], [lk[r - 2]]]


def _within(shape: tuple | None, dims: list[list[object]]) -> bool:
    """Whether every axis of a mask shape is 1 or one of the scores' dimensions there (right-aligned),
    so that the mask broadcasts to the scores without enlarging them."""
    if shape is None or len(shape) > len(dims):
        return False
    for d, n in zip(dims[len(dims) - len(shape) :], shape, strict=True):
        if n == 1:
            continue
        if n is None or not any(n == x and x is not None for x in d):
            return False
    return True


class SimplifyAttentionMask(Rule):
    """A mask read through Expands (each within the scores' shape) is read before them; a constant
    mask of zeros is dropped."""

    level = 2

    def pattern(self, p: Pat):
        return p.op("Attention", domain="com.mopt", any_inputs=True)

    def check(self, m: Match) -> Verdict:
        att = m.root
        if len(att.inputs) < 4 or att.inputs[3] is None:
            return Verdict.no("no mask")
        dims = _scores_dims(att)
        if dims is None:
            return Verdict.no("the operands' shapes are unknown")
        mask = att.inputs[3]
        if not _within(mask.shape, dims):
            return Verdict.no("the mask's shape is not provably within the scores'")
        src = mask
        while src.producer is not None and src.producer.op_type == "Expand" and src.producer.domain == "":
            inner = src.producer.inputs[0]
            if inner is None or not _within(inner.shape, dims):
                break
            src = inner
        zero = src.is_const and src.const is not None and src.const.dtype == np.float32 and not np.any(src.const)
        if src is mask and not zero:
            return Verdict.no("the mask is neither expanded nor all zeros")
        m.values["mask"] = src
        m.__dict__["_drop"] = zero
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        att = m.root
        ins = list(att.inputs[:3]) + ([] if m.__dict__["_drop"] else [m.mask])
        return emit.op("Attention", ins, dict(att.attrs), domain="com.mopt")[0]


RULES = [FoldWhereOfExpand(), ScoresWhereAsMask(), CombineScoreMasks(), SimplifyAttentionMask()]

__all__ = ["RULES", "CombineScoreMasks", "FoldWhereOfExpand", "ScoresWhereAsMask", "SimplifyAttentionMask"]
