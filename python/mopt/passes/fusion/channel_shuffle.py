"""A channel shuffle folded into the grouped convolution before it (-O3):

    Reshape(Transpose(Reshape(Conv{group=G}(x, w, b), [N, G, M/G, H, W]), [0, 2, 1, 3, 4]), [N, M, H, W])
        ==>  com.mopt.FusedConv{group=G, shuffle_groups=G}(x, w, b)

ShuffleNet's shuffle takes output channel i of group g to channel i * G + g. The convolution computes
each group as its own GEMM, so it can store that group's rows G channels apart instead of one: the
shuffle costs nothing, where the Transpose read and wrote the whole tensor once more (ShuffleNet
v1: 16 of them, 5% of its time). Only when the shuffle's groups are the convolution's, with no
residual and no fused pool; exported as the convolution followed by the three ops.
"""

from __future__ import annotations

from mopt.ir.dtypes import DType
from mopt.ir.graph import Value
from mopt.passes.fusion.conv_rank import conv_is_native
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict


class FoldChannelShuffle(Rule):
    level = 3

    def pattern(self, p: Pat):
        conv = p.op(("Conv", "FusedConv"), domain=("", "com.mopt"), capture="conv", any_inputs=True)
        split = p.Reshape(conv, p.any("shape5"), capture="split")
        swap = p.Transpose(split, capture="swap")
        return p.Reshape(swap, p.any("shape4"))

    def check(self, m: Match) -> Verdict:
        conv, split, swap, merge = m.node("conv"), m.node("split"), m.node("swap"), m.root
        if conv.domain == "" and conv.op_type != "Conv":
            return Verdict.no("not a convolution")
        for cap in ("conv", "split", "swap"):
            if not m.has_single_use(cap):
                return Verdict.no(f"the {cap} output feeds other nodes")
        if not conv_is_native(conv) or conv.attr("maxpool_2x2") is not None or conv.attr("shuffle_groups") is not None:
            return Verdict.no("not a plain 2-D convolution")
        if len(conv.inputs) > 3 and conv.inputs[3] is not None:
            return Verdict.no("the convolution adds a residual")
        w = conv.inputs[1] if len(conv.inputs) > 1 else None
        if w is None or not w.is_const or w.const.ndim != 4:
            return Verdict.no("weights are not a constant 4-D tensor")
        group, m_out = int(conv.attr("group", 1)), int(w.const.shape[0])
        if group < 2 or w.const.shape[1] == 1:
            return Verdict.no("not a grouped convolution on the GEMM path (one group, or one input channel per group)")
        if conv.outputs[0].dtype not in (None, DType.FLOAT):
            return Verdict.no("not float32")
        y, s5, s4 = conv.outputs[0].shape, split.outputs[0].shape, merge.outputs[0].shape
        if y is None or s5 is None or s4 is None or len(y) != 4 or len(s5) != 5:
            return Verdict.no("shapes not known")
        n, c, h, wd = y
        if c != m_out or tuple(s5) != (n, group, m_out // group, h, wd) or tuple(s4) != tuple(y):
            return Verdict.no(f"not a shuffle of the convolution's {group} groups: {list(y)} -> {list(s5)} -> {list(s4)}")
        if [int(i) for i in swap.attr("perm", [])] != [0, 2, 1, 3, 4]:
            return Verdict.no("the Transpose does not swap the group axes")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        conv = m.node("conv")
        attrs = {**dict(conv.attrs), "shuffle_groups": int(conv.attr("group", 1))}
        return emit.op("FusedConv", list(conv.inputs), attrs, domain="com.mopt")[0]


RULES = [FoldChannelShuffle()]
