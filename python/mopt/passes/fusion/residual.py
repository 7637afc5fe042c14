"""A residual addition fused into the convolution whose result it adds to:

    Add(Conv(x, w, b), y)  ==>  com.mopt.FusedConv(x, w, b, y)      y of the conv output's shape
    Sum(Conv(x, w, b), y)  ==>  com.mopt.FusedConv(x, w, b, y)

The activation that often follows (Relu) is fused afterwards by FuseActivation, which then runs
after the addition, as the graph says.
"""

from __future__ import annotations

from mopt.ir.graph import Value
from mopt.passes.fusion.conv_rank import conv_is_native
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict


class FuseResidualAdd(Rule):
    level = 2

    def pattern(self, p: Pat):
        conv = p.op(("Conv", "FusedConv"), domain=("", "com.mopt"), capture="conv", any_inputs=True)
        return p.op(("Add", "Sum"), conv, p.any("y"), commutative=True)

    def check(self, m: Match) -> Verdict:
        conv = m.node("conv")
        if conv.domain == "" and conv.op_type != "Conv":
            return Verdict.no("not a convolution")
        if not m.has_single_use("conv"):
            return Verdict.no("Conv output feeds other nodes")
        if not conv_is_native(conv):
            return Verdict.no("a 3-D (or higher) convolution: it runs on the fallback, which has no fused form")
        if conv.attr("activation") is not None:
            return Verdict.no("the convolution already applies an activation before the addition")
        if len(conv.inputs) > 3 and conv.inputs[3] is not None:
            return Verdict.no("the convolution already adds a residual")
        out, y = conv.outputs[0], m.y
        if y is out:
            return Verdict.no("adds the convolution to itself")
        if out.shape is None or y.shape is None or out.shape != y.shape or any(d is None for d in out.shape):
            return Verdict.no(f"shapes {out.shape} and {y.shape} are not known to be equal (no broadcasting)")
        if out.dtype != y.dtype:
            return Verdict.no("dtypes differ")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        conv = m.node("conv")
        ins = list(conv.inputs) + [None] * (3 - len(conv.inputs))
        return emit.op("FusedConv", [*ins[:3], m.y], dict(conv.attrs), domain="com.mopt")[0]


RULES = [FuseResidualAdd()]
