"""Attention fusion: scaled dot-product attention as exporters write it, into com.mopt.Attention.

    [Where(IsNaN(P), 0, P) <-] P = Softmax(axis=-1)( [Add(mask)] [Mul|Div c] MatMul([Mul c1] Q, [Mul c2] Kt) )
    MatMul(P, V)                                                  ==>  com.mopt.Attention(Q, K, V, mask)

with scale = c * c1 * c2 (Div: 1/c). Transposes feeding Q, K (Kt = K transposed in its last two
axes) and V become the kernel's q_perm / k_perm / v_perm, so the head-splitting transposes are
never materialised; a Transpose of the result becomes out_perm. The [batch, heads, S, S] score
tensor is never written: the kernel keeps one row block per thread in cache.

torch.onnx (dynamo) writes K's transpose as Reshape(Transpose(Reshape(K, [-1, S, D]), [0, 2, 1]),
[*batch, D, S]) with both shapes computed from Shape(K); `SwapLastTwoByReshape` first turns that
into the Transpose it is.
"""

from __future__ import annotations

import math

import numpy as np

from mopt.ir.dtypes import DType
from mopt.ir.graph import Node, Value
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict

_BIG = 2**62


def _scalar(v: Value | None) -> float | None:
    if v is None or not v.is_const:
        return None
    a = v.const
    if a is None or a.size != 1 or a.dtype.kind != "f":
        return None
    return float(a.reshape(-1)[0])


def _rank(v: Value) -> int | None:
    if v.shape is not None:
        return len(v.shape)
    p = v.producer
    if p is not None and p.op_type == "Transpose" and p.domain == "" and p.attr("perm") is not None:
        return len(p.attr("perm"))
    return None


def _ints(v: Value | None) -> list[int] | None:
    if v is None or not v.is_const or v.const is None or v.const.dtype.kind not in "iu" or v.const.ndim > 1:
        return None
    return [int(x) for x in v.const.reshape(-1)]


def _shape_tokens(v: Value | None, x: Value, rank: int) -> list[tuple[str, int]] | None:
    """The entries of a 1-D shape tensor as ("dim", i) for dimension i of x, ("int", n) for a constant;
    None unless v is a constant, a Slice of Shape(x), or a Concat(axis=0) of those."""
    if v is None:
        return None
    ints = _ints(v)
    if ints is not None:
        return [("int", n) for n in ints]
    p = v.producer
    if p is None or p.domain != "":
        return None
    if p.op_type == "Concat" and p.attr("axis") == 0:
        out: list[tuple[str, int]] = []
        for part in p.inputs:
            t = _shape_tokens(part, x, rank)
            if t is None:
                return None
            out += t
        return out
    if p.op_type == "Shape" and p.inputs[0] is x:
        start, end = p.attr("start", 0), p.attr("end", _BIG)
        return [("dim", i) for i in range(rank)[slice(start, end)]]
    if p.op_type == "Slice" and p.inputs[0] is not None and p.inputs[0].producer is not None:
        inner = _shape_tokens(p.inputs[0], x, rank)
        starts, ends = _ints(p.inputs[1]), _ints(p.inputs[2] if len(p.inputs) > 2 else None)
        axes = _ints(p.inputs[3]) if len(p.inputs) > 3 and p.inputs[3] is not None else [0]
        steps = _ints(p.inputs[4]) if len(p.inputs) > 4 and p.inputs[4] is not None else [1]
        if inner is None or starts is None or ends is None or len(starts) != 1 or len(ends) != 1:
            return None
        if axes not in ([0], [-1]) or steps != [1]:
            return None
        return inner[slice(starts[0], ends[0])]
    return None


def _same_dim(tok: tuple[str, int], want: int, x: Value) -> bool:
    """Whether a shape token stands for dimension `want` of x."""
    kind, n = tok
    if kind == "dim":
        return n == want
    return x.shape is not None and isinstance(x.shape[want], int) and x.shape[want] == n


class SwapLastTwoByReshape(Rule):
    """Reshape(Transpose(Reshape(x, [-1, d[-2], d[-1]]), [0, 2, 1]), [*d[:-2], d[-1], d[-2]])
    ==> Transpose(x, [0, ..., r-1, r-2])   (the shapes read off x: computed by Shape/Slice/Concat or constant)"""

    level = 2

    def pattern(self, p: Pat):
        inner = p.op("Reshape", p.any("x"), p.any("s1"), capture="r1")
        return p.op("Reshape", p.op("Transpose", inner, capture="t"), p.any("s2"), capture="r2")

    def check(self, m: Match) -> Verdict:
        x = m.x
        r = _rank(x)
        if r is None or r < 3:
            return Verdict.no("the rank of the reshaped tensor is not known (or < 3)")
        if list(m.node("t").attr("perm") or []) != [0, 2, 1]:
            return Verdict.no("the Transpose is not [0, 2, 1]")
        for cap in ("r1", "t"):
            n = m.node(cap)
            if n.outputs[0].is_graph_output or len(n.outputs[0].uses) != 1:
                return Verdict.no("an intermediate result is read elsewhere")
        s1, s2 = _shape_tokens(m.s1, x, r), _shape_tokens(m.s2, x, r)
        if s1 is None or s2 is None:
            return Verdict.no("the shapes are not read off the tensor")
        ok1 = len(s1) == 3 and s1[0] == ("int", -1) and _same_dim(s1[1], r - 2, x) and _same_dim(s1[2], r - 1, x)
        want2 = [*range(r - 2), r - 1, r - 2]
        ok2 = len(s2) == r and all(_same_dim(t, d, x) for t, d in zip(s2, want2, strict=True))
        if not (ok1 and ok2):
            return Verdict.no("the reshapes do not merge the leading axes and split them back")
        if m.node("r1").attr("allowzero", 0) or m.node("r2").attr("allowzero", 0):
            return Verdict.no("allowzero reshapes")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        r = _rank(m.x)
        assert r is not None
        return emit.Transpose(m.x, perm=[*range(r - 2), r - 1, r - 2])


def _peel_transposes(v: Value, perm: list[int], taken: list[Node]) -> tuple[Value, list[int]]:
    """v seen through perm (logical = Transpose(v, perm)); moves through Transposes producing v."""
    while True:
        p = v.producer
        if p is None or p.op_type != "Transpose" or p.domain != "" or p.attr("perm") is None:
            return v, perm
        inner = [int(i) for i in p.attr("perm")]
        if len(inner) != len(perm):
            return v, perm
        perm = [inner[a] for a in perm]
        taken.append(p)
        v = p.inputs[0]
        if v is None:
            raise AssertionError("Transpose without input")


def _reaches_matmul(v: Value) -> bool:
    """v is a MatMul's result, possibly scaled by constants (each step read once)."""
    while v.producer is not None and not v.is_graph_output and len(v.uses) == 1 and v.producer.domain == "":
        n = v.producer
        if n.op_type == "MatMul":
            return True
        if n.op_type not in ("Mul", "Div"):
            return False
        if _scalar(n.inputs[1]) is not None and n.inputs[0] is not None:
            v = n.inputs[0]
        elif n.op_type == "Mul" and _scalar(n.inputs[0]) is not None and n.inputs[1] is not None:
            v = n.inputs[1]
        else:
            return False
    return False


def _identity(perm: list[int]) -> bool:
    return perm == list(range(len(perm)))


class FuseAttention(Rule):
    level = 2

    def pattern(self, p: Pat):
        return p.op("MatMul", p.any("probs"), p.any("v"))

    def _walk(self, m: Match) -> dict | str:
        """The attention's parts, or why the MatMul is not the end of one."""
        graph = m.root.graph
        if graph.opset.get("", 0) < 13:
            return "Softmax before opset 13 normalises a flattened 2-D view"
        chain: list[Node] = []

        def single(v: Value) -> bool:
            return not v.is_graph_output and len(v.uses) == 1

        probs = m.probs
        nan_to_zero = 0
        p = probs.producer
        if p is not None and p.op_type == "Where" and p.domain == "" and len(p.inputs) == 3:
            cond, zero, s = p.inputs
            if cond is not None and cond.producer is not None and cond.producer.op_type == "IsNaN" and cond.producer.inputs[0] is s:
                if _scalar(zero) != 0.0 or not single(probs):
                    return "the guard after the softmax is not Where(IsNaN(p), 0, p)"
                chain += [p, cond.producer]
                nan_to_zero = 1
                if s is None or s.is_graph_output or len(s.uses) != 2:
                    return "the softmax output is read outside the guard"
                probs = s
                p = s.producer
        elif not single(probs):
            return "the attention weights are read elsewhere"
        if p is None or p.op_type != "Softmax" or p.domain != "":
            return "the left operand is not a Softmax"
        z = p.inputs[0]
        r = _rank(z) if z is not None else None
        if r is None or r not in (3, 4) or p.attr("axis", -1) not in (-1, r - 1):
            return "not a softmax over the last axis of rank-3/4 scores"
        chain.append(p)
        mask = None
        scale = 1.0
        while z is not None and z.producer is not None and single(z):
            n = z.producer
            if n.domain != "":
                break
            if n.op_type in ("Mul", "Div"):
                c = _scalar(n.inputs[1])
                other = n.inputs[0]
                if c is None and n.op_type == "Mul":
                    c, other = _scalar(n.inputs[0]), n.inputs[1]
                if c is None or c == 0.0:
                    break
                scale *= c if n.op_type == "Mul" else 1.0 / c
                chain.append(n)
                z = other
                continue
            if n.op_type == "Add" and mask is None:
                a, b = n.inputs
                pick = None
                for cand, msk in ((a, b), (b, a)):
                    if cand is not None and _reaches_matmul(cand):
                        pick = (cand, msk)
                        break
                if pick is None or pick[1] is None:
                    break
                z, mask = pick
                chain.append(n)
                continue
            break
        if z is None or z.producer is None or z.producer.op_type != "MatMul" or z.producer.domain != "" or not single(z):
            return "the softmax does not read (a scaled, masked) MatMul"
        qk = z.producer
        chain.append(qk)
        ops: list[Value] = []
        for x in qk.inputs:
            assert x is not None
            n = x.producer
            if n is not None and n.op_type == "Mul" and n.domain == "" and single(x):
                c, other = _scalar(n.inputs[1]), n.inputs[0]
                if c is None:
                    c, other = _scalar(n.inputs[0]), n.inputs[1]
                if c is not None and other is not None:
                    scale *= c
                    chain.append(n)
                    x = other
            ops.append(x)
        q, kt = ops
        v = m.v
        ranks = {_rank(q), _rank(kt), _rank(v)}
        if ranks != {r}:
            return f"Q, K^T and V are not all of rank {r} (or their ranks are unknown)"
        if mask is not None and (mask.dtype not in (None, DType.FLOAT) or (_rank(mask) or 0) > r or mask.shape is None):
            return "the mask is not a float32 tensor that broadcasts to the scores"
        for val in (q, kt, v, z):
            if val.dtype not in (None, DType.FLOAT):
                return "not float32"
        if not math.isfinite(scale):
            return "the scale is not finite"
        return dict(q=q, kt=kt, v=v, mask=mask, scale=scale, nan_to_zero=nan_to_zero, chain=chain, rank=r)

    def check(self, m: Match) -> Verdict:
        parts = self._walk(m)
        if isinstance(parts, str):
            return Verdict.no(parts)
        m.__dict__["_parts"] = parts
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        parts = m.__dict__["_parts"]
        r = parts["rank"]
        taken: list[Node] = []
        q, q_perm = _peel_transposes(parts["q"], list(range(r)), taken)
        k, k_perm = _peel_transposes(parts["kt"], [*range(r - 2), r - 1, r - 2], taken)
        v, v_perm = _peel_transposes(parts["v"], list(range(r)), taken)
        for n in [*parts["chain"], *taken]:
            m.matched.insert(0, n)
        attrs: dict = {"scale": float(parts["scale"]), "nan_to_zero": int(parts["nan_to_zero"])}
        for name, perm in (("q_perm", q_perm), ("k_perm", k_perm), ("v_perm", v_perm)):
            if not _identity(perm):
                attrs[name] = perm
        ins = [q, k, v] + ([parts["mask"]] if parts["mask"] is not None else [])
        return emit.op("Attention", ins, attrs, domain="com.mopt")[0]


class FuseAttentionOutputTranspose(Rule):
    """Transpose(Attention(...), p) ==> Attention(..., out_perm = p): the result is stored transposed."""

    level = 2

    def pattern(self, p: Pat):
        return p.op("Transpose", p.op("Attention", domain="com.mopt", capture="att", any_inputs=True))

    def check(self, m: Match) -> Verdict:
        att = m.node("att")
        if not m.has_single_use("att"):
            return Verdict.no("the attention result is read elsewhere")
        perm = m.root.attr("perm")
        r = len(att.attr("q_perm") or []) or _rank(att.outputs[0]) or _rank(m.root.outputs[0])
        if perm is None or r is None or len(perm) != r:
            return Verdict.no("the Transpose's rank is not known")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        att = m.node("att")
        p1 = [int(i) for i in m.root.attr("perm")]
        p0 = [int(i) for i in (att.attr("out_perm") or range(len(p1)))]
        attrs = {k: a for k, a in att.attrs.items()}
        attrs["out_perm"] = [p0[i] for i in p1]
        if _identity(attrs["out_perm"]):
            del attrs["out_perm"]
        return emit.op("Attention", list(att.inputs), attrs, domain="com.mopt")[0]


def _live_uses(v: Value, live: set[int]) -> list:
    """Uses by nodes whose results reach an output (dead code is removed only after the rules run)."""
    return [(n, i) for n, i in v.uses if id(n) in live]


def _head_split(v: Value) -> tuple[Node, Node, int, int] | None:
    """v = Reshape(MatMul(x, W[, b]), [.., .., H, D]) splitting only the last axis: (reshape, matmul, H, D)."""
    r = v.producer
    if r is None or r.op_type != "Reshape" or r.domain != "" or r.inputs[0] is None or v.shape is None:
        return None
    mm = r.inputs[0].producer
    if mm is None or mm.op_type not in ("MatMul", "FusedMatMul") or mm.domain not in ("", "com.mopt"):
        return None
    out = mm.outputs[0]
    if out.shape is None or len(out.shape) != 3 or len(v.shape) != 4:
        return None
    h, d = v.shape[2], v.shape[3]
    if not (isinstance(h, int) and isinstance(d, int)) or h * d != out.shape[2]:
        return None
    b, s = out.shape[0], out.shape[1]
    if v.shape[0] != b or v.shape[1] != s or b is None or s is None:
        return None  # the leading axes are not known to pass through unchanged
    return r, mm, h, d


class _PackQKV(Rule):
    """An unpacked Attention whose Q, K and V are each read as [B, S, H, D] -> [B, H, S, D]."""

    level = 2

    def pattern(self, p: Pat):
        return p.op("Attention", domain="com.mopt", any_inputs=True)

    @staticmethod
    def head_split_operands(att: Node) -> Verdict:
        if att.attr("packed_qkv") is not None or len(att.inputs) < 3 or any(x is None for x in att.inputs[:3]):
            return Verdict.no("already packed, or an operand is missing")
        for name in ("q_perm", "k_perm", "v_perm"):
            if list(att.attr(name) or []) != [0, 2, 1, 3]:
                return Verdict.no("the operands are not read as [B, S, H, D] -> [B, H, S, D]")
        return Verdict.yes()


class MergeQKVProjections(_PackQKV):
    """Attention over three head-split projections of the same x, each Reshape(MatMul(x, W) + b)
    read as [B, H, S, D]: one GEMM against [Wq | Wk | Wv] and the attention reads Q, K and V as
    column ranges of its result (packed_qkv) -- one pass over x, one larger GEMM, no reshapes."""

    def check(self, m: Match) -> Verdict:
        att = m.root
        verdict = self.head_split_operands(att)
        if not verdict:
            return verdict
        q, k, v = att.inputs[:3]
        if len({id(q), id(k), id(v)}) != 3:
            return Verdict.no("Q, K and V are not three distinct projections")
        parts = [_head_split(x) for x in (q, k, v)]
        if any(pt is None for pt in parts):
            return Verdict.no("an operand is not Reshape(MatMul) splitting only the last axis into heads")
        x = parts[0][1].inputs[0]
        heads = parts[0][2]
        live = att.graph.nodes_reaching_outputs()
        for r, mm, h, _ in parts:  # type: ignore[misc]
            if mm.inputs[0] is not x:
                return Verdict.no("the projections read different inputs")
            w = mm.inputs[1]
            if w is None or not w.is_const or w.const is None or w.const.ndim != 2 or w.const.dtype != np.float32:
                return Verdict.no("a projection weight is not a constant float32 matrix")
            if mm.attr("activation") is not None or len(mm.inputs) > 3 or float(mm.attr("alpha", 1.0)) != 1.0:
                return Verdict.no("a projection applies more than a bias")
            if len(mm.inputs) > 2 and mm.inputs[2] is not None and (not mm.inputs[2].is_const or mm.inputs[2].const is None):
                return Verdict.no("a projection bias is not constant")
            if h != heads:
                return Verdict.no("Q, K and V have different head counts")
            for val in (mm.outputs[0], r.outputs[0]):
                if val.is_graph_output or len(_live_uses(val, live)) != 1:
                    return Verdict.no("a projection is read elsewhere")
        if parts[0][3] != parts[1][3]:
            return Verdict.no("Q and K have different head sizes")
        m.__dict__["_qkv"] = (x, parts, heads)
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        x, parts, heads = m.__dict__["_qkv"]
        ws, bs, widths = [], [], []
        for _, mm, _, _ in parts:
            w = mm.inputs[1].const
            n = w.shape[1]
            b = mm.inputs[2].const.reshape(-1) if len(mm.inputs) > 2 and mm.inputs[2] is not None else np.zeros(n, np.float32)
            ws.append(w)
            bs.append(np.broadcast_to(b.astype(np.float32), (n,)))
            widths.append(n)
        w_all = np.ascontiguousarray(np.concatenate(ws, axis=1))
        b_all = np.ascontiguousarray(np.concatenate(bs))
        qkv = emit.op("FusedMatMul", [x, w_all, b_all], {}, domain="com.mopt")[0]
        out0 = parts[0][1].outputs[0]
        qkv.dtype = DType.FLOAT
        qkv.shape = (out0.shape[0], out0.shape[1], sum(widths))
        att = m.root
        attrs = {k: a for k, a in att.attrs.items() if k not in ("q_perm", "k_perm", "v_perm")}
        attrs["packed_qkv"] = widths
        attrs["num_heads"] = int(heads)
        for r, mm, _, _ in parts:
            m.matched.insert(0, mm)
            m.matched.insert(0, r)
        mask = att.inputs[3] if len(att.inputs) > 3 else None
        return emit.op("Attention", [qkv, None, None, mask], attrs, domain="com.mopt")[0]


def _split_head(v: Value) -> tuple[Node, Node, int, int, int] | None:
    """v = Reshape(Split(y, last axis)[i], [.., .., H, D]): (reshape, split, i, H, D)."""
    r = v.producer
    if r is None or r.op_type != "Reshape" or r.domain != "" or r.inputs[0] is None or v.shape is None or len(v.shape) != 4:
        return None
    part = r.inputs[0]
    sp = part.producer
    if sp is None or sp.op_type != "Split" or sp.domain != "" or part.shape is None or len(part.shape) != 3:
        return None
    src = sp.inputs[0]
    if src is None or src.shape is None or len(src.shape) != 3 or sp.attr("axis", 0) not in (2, -1):
        return None
    h, d = v.shape[2], v.shape[3]
    if not (isinstance(h, int) and isinstance(d, int)) or h * d != part.shape[2]:
        return None
    if v.shape[0] != src.shape[0] or v.shape[1] != src.shape[1] or part.shape[:2] != src.shape[:2] or src.shape[0] is None:
        return None
    return r, sp, part.index, h, d


class PackSplitQKV(_PackQKV):
    """Attention over the three parts of Split(y, last axis) of one [B, S, Nq+Nk+Nv] projection
    (GPT-2's c_attn), each head-split by a Reshape: the attention reads y itself (packed_qkv)."""

    def check(self, m: Match) -> Verdict:
        att = m.root
        verdict = self.head_split_operands(att)
        if not verdict:
            return verdict
        parts = [_split_head(x) for x in att.inputs[:3]]
        if any(pt is None for pt in parts):
            return Verdict.no("an operand is not Reshape(Split(y)[i]) splitting the last axis into heads")
        sp = parts[0][1]
        if any(pt[1] is not sp for pt in parts) or [pt[2] for pt in parts] != [0, 1, 2] or len(sp.outputs) != 3:
            return Verdict.no("Q, K, V are not the three parts of one Split, in order")
        if len({pt[3] for pt in parts}) != 1 or parts[0][4] != parts[1][4]:
            return Verdict.no("the head counts (or Q and K head sizes) differ")
        total = sp.inputs[0].shape[2]
        if not isinstance(total, int) or sum(pt[3] * pt[4] for pt in parts) != total:
            return Verdict.no("the three parts do not cover the projection")
        m.__dict__["_split"] = (sp, parts)
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        sp, parts = m.__dict__["_split"]
        att = m.root
        attrs = {k: a for k, a in att.attrs.items() if k not in ("q_perm", "k_perm", "v_perm")}
        attrs["packed_qkv"] = [int(pt[3] * pt[4]) for pt in parts]
        attrs["num_heads"] = int(parts[0][3])
        for r, *_ in parts:
            m.matched.insert(0, r)
        m.matched.insert(0, sp)
        mask = att.inputs[3] if len(att.inputs) > 3 else None
        return emit.op("Attention", [sp.inputs[0], None, None, mask], attrs, domain="com.mopt")[0]


RULES = [SwapLastTwoByReshape(), FuseAttention(), FuseAttentionOutputTranspose(), MergeQKVProjections(), PackSplitQKV()]

__all__ = ["RULES", "FuseAttention", "FuseAttentionOutputTranspose", "MergeQKVProjections", "PackSplitQKV", "SwapLastTwoByReshape"]

