"""LayerNormalization from the form older exporters (torch.onnx below opset 17, TF, Keras) write:

    d = x - ReduceMean(x, axes)
    y = d / Sqrt(ReduceMean(d ^ 2, axes) + eps)          (d * d for d ^ 2 too)
                                                 ==>  LayerNormalization(x, 1, axis=first of axes)
    LayerNormalization(x, s, b) * g  ==>  LayerNormalization(x, s * g, b * g)
    LayerNormalization(x, s, b) + c  ==>  LayerNormalization(x, s, b + c)

axes must be the trailing axes (keepdims); g and c constants that vary over those axes only. Eight
nodes and five passes over the activations become one kernel with one read and one write.

RMSNorm (Llama, Qwen, Mistral, T5, ...) the same way, in the forms torch.onnx writes for
x * rsqrt(mean(x^2) + eps) and x / sqrt(...):

    x * Reciprocal(Sqrt(ReduceMean(x ^ 2, axes) + eps))      (1 / Sqrt(...) for Reciprocal too)
    x / Sqrt(ReduceMean(x ^ 2, axes) + eps)
                                      ==>  com.mopt.RMSNormalization(x, 1, axis=first of axes)
    com.mopt.RMSNormalization(x, s) * g  ==>  com.mopt.RMSNormalization(x, s * g)

(com.mopt: the graph stays at its own opset, below 23 where ONNX's RMSNormalization appeared; the
kernel is the one that runs ONNX's.)
"""

from __future__ import annotations

import math

import numpy as np

from mopt.ir.dtypes import DType
from mopt.ir.graph import Node, Value
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict


def _mean_axes(node: Node, rank: int) -> list[int] | None:
    """The normalised axes of a ReduceMean (opset 18: axes as input), None when not trailing/keepdims."""
    if node.attr("keepdims", 1) != 1 or node.attr("noop_with_empty_axes", 0):
        return None
    axes_v = node.inputs[1] if len(node.inputs) > 1 else None
    if axes_v is None:
        axes = node.attr("axes")
        if axes is None:
            return None
    elif axes_v.is_const and axes_v.const is not None:
        axes = [int(a) for a in axes_v.const.reshape(-1)]
    else:
        return None
    norm = sorted(a % rank if -rank <= a < rank else -1 for a in axes)
    if not norm or -1 in norm or norm != list(range(rank - len(norm), rank)):
        return None
    return norm


def _squares(p: Pat, d, other: str = "d2"):
    return p.op(("Pow", "Mul"), d, p.any(other), capture="square")


def _square_of(m: Match, base: Value, other: Value, what: str) -> Verdict:
    """The captured "square" node is base ^ 2 (Pow by a constant 2) or base * base."""
    if m.node("square").op_type == "Pow":
        two = other.const if other.is_const else None
        if two is None or two.size != 1 or float(two.reshape(-1)[0]) != 2.0:
            return Verdict.no(f"{what} is raised to a power other than 2")
    elif other is not base:
        return Verdict.no(f"{what} is multiplied by something other than itself")
    return Verdict.yes()


def _usable_epsilon(eps: np.ndarray) -> Verdict:
    if eps.size != 1 or not math.isfinite(float(eps.reshape(-1)[0])) or float(eps.reshape(-1)[0]) < 0:
        return Verdict.no("epsilon is not one finite non-negative value")
    return Verdict.yes()


def _self_contained(m: Match) -> Verdict:
    """No value the match computes before its root is read outside it (or is a graph output)."""
    inner = {id(n) for n in m.matched}
    for n in m.matched:
        if n is m.root:
            continue
        for v in n.outputs:
            if v.is_graph_output or any(id(u) not in inner for u, _ in v.uses):
                return Verdict.no(f"the intermediate '{v.name}' is read outside the normalisation")
    return Verdict.yes()


class FuseLayerNorm(Rule):
    """d / Sqrt(ReduceMean(d^2) + eps), d = x - ReduceMean(x)"""

    level = 2

    def pattern(self, p: Pat):
        d = p.op("Sub", p.any("x"), p.op("ReduceMean", p.any("x"), capture="mean", extra_inputs=True), capture="sub")
        var = p.op("ReduceMean", _squares(p, p.any("d")), capture="var", extra_inputs=True)
        std = p.op("Sqrt", p.op("Add", var, p.const("eps"), commutative=True))
        return p.op("Div", d, std, capture="div")

    def check(self, m: Match) -> Verdict:
        x, d = m.x, m.d
        if d is not m.node("sub").outputs[0]:
            return Verdict.no("the variance is not of x minus its mean")
        if not (v := _square_of(m, d, m.d2, "the deviation")):
            return v
        if x.shape is None or x.dtype not in (None, DType.FLOAT):
            return Verdict.no("x is not float32 of known rank")
        r = len(x.shape)
        axes = _mean_axes(m.node("mean"), r)
        if axes is None or _mean_axes(m.node("var"), r) != axes:
            return Verdict.no("the means are not over the same trailing axes (keepdims)")
        if not (v := _usable_epsilon(m.eps)) or not (v := _self_contained(m)):
            return v
        norm_shape = x.shape[axes[0] :]
        if not all(isinstance(s, int) for s in norm_shape):
            return Verdict.no("the normalised axes have no static size")
        m.__dict__["_ln"] = (axes[0], tuple(int(s) for s in norm_shape))
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        axis, norm_shape = m.__dict__["_ln"]
        eps = float(m.eps.reshape(-1)[0])
        return emit.op("LayerNormalization", [m.x, np.ones(norm_shape, np.float32)], {"axis": int(axis), "epsilon": eps})[0]


def _over_normalised(c: np.ndarray, rank: int, axis: int, norm_shape: tuple[int, ...]) -> np.ndarray | None:
    """c broadcast over the normalised axes, when it varies over nothing else; else None."""
    if c.dtype != np.float32 or c.ndim > rank:
        return None
    lead = c.shape[: max(0, c.ndim - len(norm_shape))]
    if any(s != 1 for s in lead):
        return None
    tail = c.reshape(c.shape[len(lead) :])
    try:
        return np.ascontiguousarray(np.broadcast_to(tail, norm_shape), dtype=np.float32)
    except ValueError:
        return None


class FoldAffineIntoLayerNorm(Rule):
    """LayerNormalization(x, s, b) * g + c  ==>  LayerNormalization(x, s * g, b * g + c), one step at a time."""

    level = 2

    def pattern(self, p: Pat):
        ln = p.op("LayerNormalization", p.any("x"), p.const("s"), p.optional_const("b"), capture="ln")
        return p.op(("Mul", "Add"), ln, p.const("c"), commutative=True)

    def check(self, m: Match) -> Verdict:
        ln = m.node("ln")
        if not m.has_single_use("ln") or any(v.uses for v in ln.outputs[1:]):
            return Verdict.no("the normalisation is read elsewhere (or its statistics are)")
        x = m.x
        if x.shape is None:
            return Verdict.no("x has no known rank")
        r = len(x.shape)
        axis = int(ln.attr("axis", -1)) % r
        norm_shape = x.shape[axis:]
        if not all(isinstance(s, int) for s in norm_shape):
            return Verdict.no("the normalised axes have no static size")
        norm_shape = tuple(int(s) for s in norm_shape)
        out = ln.outputs[0]
        if m.root.outputs[0].shape is not None and out.shape is not None and m.root.outputs[0].shape != out.shape:
            return Verdict.no("the constant broadcasts the result to a larger shape")
        parts = {}
        for name in ("s", "b", "c"):
            arr = m.arrays.get(name)
            if arr is None:
                continue
            v = _over_normalised(arr, r, axis, norm_shape)
            if v is None:
                return Verdict.no(f"{'the constant' if name == 'c' else name} of shape {list(arr.shape)} varies over more than the normalised axes")
            parts[name] = v
        m.__dict__["_fold"] = (axis, parts, norm_shape)
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        ln = m.node("ln")
        _, parts, norm_shape = m.__dict__["_fold"]
        s = parts["s"]
        b = parts.get("b", np.zeros(norm_shape, np.float32))
        c = parts["c"]
        if m.root.op_type == "Mul":
            s, b = s * c, b * c
        else:
            b = b + c
        m.matched.insert(0, ln)
        return emit.op("LayerNormalization", [m.x, s.astype(np.float32), b.astype(np.float32)], dict(ln.attrs))[0]


def _mean_square(p: Pat):
    """Sqrt(ReduceMean(x^2) + eps), x^2 as Pow(x, 2) or Mul(x, x)."""
    ms = p.op("ReduceMean", _squares(p, p.any("x"), "x2"), capture="mean", extra_inputs=True)
    return p.op("Sqrt", p.op("Add", ms, p.const("eps"), commutative=True), capture="sqrt")


class _FuseRMSNorm(Rule):
    level = 2

    def check(self, m: Match) -> Verdict:
        x = m.x
        if not (v := _square_of(m, x, m.x2, "x")):
            return v
        one = m.arrays.get("one")
        if one is not None and (one.size != 1 or float(one.reshape(-1)[0]) != 1.0):
            return Verdict.no("the reciprocal's numerator is not 1")
        if x.shape is None or x.dtype not in (None, DType.FLOAT):
            return Verdict.no("x is not float32 of known rank")
        axes = _mean_axes(m.node("mean"), len(x.shape))
        if axes is None:
            return Verdict.no("the mean is not over trailing axes (keepdims)")
        if not (v := _usable_epsilon(m.eps)) or not (v := _self_contained(m)):
            return v
        norm_shape = x.shape[axes[0] :]
        if not all(isinstance(s, int) for s in norm_shape):
            return Verdict.no("the normalised axes have no static size")
        out = m.root.outputs[0]
        if out.shape is not None and tuple(out.shape) != tuple(x.shape):
            return Verdict.no("the result is broadcast to another shape than x's")
        m.__dict__["_rms"] = (axes[0], tuple(int(s) for s in norm_shape))
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        axis, norm_shape = m.__dict__["_rms"]
        eps = float(m.eps.reshape(-1)[0])
        attrs = {"axis": int(axis), "epsilon": eps}
        return emit.op("RMSNormalization", [m.x, np.ones(norm_shape, np.float32)], attrs, domain="com.mopt")[0]


class FuseRMSNorm(_FuseRMSNorm):
    """x * Reciprocal(Sqrt(ReduceMean(x^2) + eps))"""

    def pattern(self, p: Pat):
        return p.op("Mul", p.any("x"), p.op("Reciprocal", _mean_square(p)), commutative=True)


class FuseRMSNormOneOver(_FuseRMSNorm):
    """x * (1 / Sqrt(ReduceMean(x^2) + eps))"""

    def pattern(self, p: Pat):
        return p.op("Mul", p.any("x"), p.op("Div", p.const("one"), _mean_square(p)), commutative=True)


class FuseRMSNormDiv(_FuseRMSNorm):
    """x / Sqrt(ReduceMean(x^2) + eps)"""

    def pattern(self, p: Pat):
        return p.op("Div", p.any("x"), _mean_square(p))


class FoldScaleIntoRMSNorm(Rule):
    """RMSNormalization(x, s) * g  ==>  RMSNormalization(x, s * g), g constant over the normalised axes."""

    level = 2

    def pattern(self, p: Pat):
        rms = p.op("RMSNormalization", p.any("x"), p.const("s"), domain="com.mopt", capture="rms")
        return p.op("Mul", rms, p.const("c"), commutative=True)

    def check(self, m: Match) -> Verdict:
        rms = m.node("rms")
        if not m.has_single_use("rms"):
            return Verdict.no("the normalisation is read elsewhere")
        x = m.x
        if x.shape is None:
            return Verdict.no("x has no known rank")
        r = len(x.shape)
        axis = int(rms.attr("axis", -1)) % r
        norm_shape = tuple(int(s) for s in x.shape[axis:])  # static: checked when fused
        out = rms.outputs[0]
        if m.root.outputs[0].shape is not None and out.shape is not None and m.root.outputs[0].shape != out.shape:
            return Verdict.no("the constant broadcasts the result to a larger shape")
        s = _over_normalised(m.s, r, axis, norm_shape)
        c = _over_normalised(m.c, r, axis, norm_shape)
        if s is None or c is None:
            return Verdict.no(f"the constant of shape {list(m.c.shape)} varies over more than the normalised axes")
        m.__dict__["_fold"] = (s * c).astype(np.float32)
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        rms = m.node("rms")
        m.matched.insert(0, rms)
        return emit.op("RMSNormalization", [m.x, m.__dict__["_fold"]], dict(rms.attrs), domain="com.mopt")[0]


RULES = [FuseLayerNorm(), FoldAffineIntoLayerNorm(), FuseRMSNorm(), FuseRMSNormOneOver(), FuseRMSNormDiv(), FoldScaleIntoRMSNorm()]
