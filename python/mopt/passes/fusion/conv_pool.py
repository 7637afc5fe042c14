"""A 2x2 / stride-2 max pool fused into the convolution before it (-O3):

    MaxPool{2x2, stride 2}(Conv{act}(x, w, b))  ==>  com.mopt.FusedConv{act, maxpool_2x2}(x, w, b)

Only for convolutions with one input channel per group (a grayscale stem, depthwise or with a
channel multiplier): their kernel computes one output plane at a time, pools it while it is in
cache and writes only the pooled plane. The full-size output never reaches memory (64 images of
32 channels at 32x32: 8 MB written by the convolution and read back by the pool).
"""

from __future__ import annotations

from mopt.ir.dtypes import DType
from mopt.ir.graph import Value
from mopt.passes.fusion.conv_rank import conv_is_native
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict


def _ints(node, name: str, default: list[int]) -> list[int]:
    v = node.attr(name, None)
    return [int(i) for i in v] if v is not None else default


class FuseConvMaxPool(Rule):
    level = 3

    def pattern(self, p: Pat):
        conv = p.op(("Conv", "FusedConv"), domain=("", "com.mopt"), capture="conv", any_inputs=True)
        return p.op("MaxPool", conv)

    def check(self, m: Match) -> Verdict:
        conv, pool = m.node("conv"), m.root
        if conv.domain == "" and conv.op_type != "Conv":
            return Verdict.no("not a convolution")
        if not m.has_single_use("conv"):
            return Verdict.no("Conv output feeds other nodes")
        if not conv_is_native(conv):
            return Verdict.no("a 3-D (or higher) convolution: it runs on the fallback")
        if conv.attr("maxpool_2x2") is not None:
            return Verdict.no("already pools")
        if len(conv.inputs) > 3 and conv.inputs[3] is not None:
            return Verdict.no("the convolution adds a residual")
        w = conv.inputs[1] if len(conv.inputs) > 1 else None
        if w is None or not w.is_const or w.const.ndim != 4 or w.const.shape[1] != 1:
            return Verdict.no("not a constant 2-D convolution with one input channel per group")
        group, m_out = int(conv.attr("group", 1)), int(w.const.shape[0])
        if not (m_out // group > 1 or (group > 1 and m_out == group)):
            return Verdict.no("a single output channel per single input channel: the GEMM path, which does not pool")
        if conv.outputs[0].dtype not in (None, DType.FLOAT):
            return Verdict.no("not float32")
        if len(pool.outputs) > 1 and pool.outputs[1] is not None and pool.outputs[1].uses:
            return Verdict.no("MaxPool's Indices output is used")
        if _ints(pool, "kernel_shape", []) != [2, 2] or _ints(pool, "strides", [1, 1]) != [2, 2]:
            return Verdict.no("not a 2x2 pool of stride 2")
        if any(_ints(pool, "pads", [0, 0, 0, 0])) or _ints(pool, "dilations", [1, 1]) != [1, 1]:
            return Verdict.no("padded or dilated pool")
        if int(pool.attr("ceil_mode", 0)) != 0 or pool.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return Verdict.no("ceil_mode or auto_pad")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        conv = m.node("conv")
        return emit.op("FusedConv", list(conv.inputs), {**dict(conv.attrs), "maxpool_2x2": 1}, domain="com.mopt")[0]


RULES = [FuseConvMaxPool()]
