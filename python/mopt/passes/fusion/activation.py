"""Activations fused into the store of the op that produces their input:

Conv  -> Relu|LeakyRelu|Clip|Sigmoid|Tanh|HardSigmoid|HardSwish|Gelu  ==>  com.mopt.FusedConv{activation}
Gemm  -> (same)                                                       ==>  com.mopt.FusedGemm{activation}
MatMul-> (same)                                                       ==>  com.mopt.FusedMatMul{activation}

and at -O3, where a normalization has no layer to fold into (DenseNet and other pre-activation
networks normalize a concatenation or a sum, then activate it):

BatchNormalization -> (same)  ==>  com.mopt.FusedBatchNormalization{activation}

SiLU, which ONNX spells x * Sigmoid(x) (Llama's and Qwen's gate projection, YOLOv5/v8's and
EfficientNet's convolutions), the same way at -O2:

Conv|Gemm|MatMul -> Mul(x, Sigmoid(x))  ==>  com.mopt.Fused*{activation=Silu}
"""

from __future__ import annotations

from mopt.ir.dtypes import DType
from mopt.ir.graph import Value
from mopt.passes.fusion.conv_bn import bn_fusable
from mopt.passes.fusion.conv_rank import conv_is_native
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict

FUSED = {"Conv": "FusedConv", "Gemm": "FusedGemm", "MatMul": "FusedMatMul"}
ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu")


def activation_attrs(m: Match) -> dict | None:
    """activation / activation_alpha / activation_beta for the matched activation node, or None."""
    act = m.root
    name = act.op_type
    if name == "Relu":
        return {"activation": "Relu"}
    if name == "LeakyRelu":
        return {"activation": "LeakyRelu", "activation_alpha": float(act.attr("alpha", 0.01))}
    if name == "HardSigmoid":
        return {
            "activation": "HardSigmoid",
            "activation_alpha": float(act.attr("alpha", 0.2)),
            "activation_beta": float(act.attr("beta", 0.5)),
        }
    if name in ("Sigmoid", "Tanh", "HardSwish"):
        return {"activation": name}
    if name == "Gelu":
        approx = act.attr("approximate", "none")
        return {"activation": "Gelu" if approx == "none" else "GeluTanh"}
    if name == "Clip":
        lo, hi = float("-inf"), float("inf")
        for i, side in ((1, "lo"), (2, "hi")):
            v = act.inputs[i] if len(act.inputs) > i else None
            if v is None:
                continue
            if not v.is_const or v.const.size != 1:
                return None
            if side == "lo":
                lo = float(v.const.reshape(-1)[0])
            else:
                hi = float(v.const.reshape(-1)[0])
        return {"activation": "Clip", "activation_alpha": lo, "activation_beta": hi}
    return None


def _activation_fusable(m: Match) -> Verdict:
    """Whether the matched activation has a fused form (its attributes are known at compile time)."""
    if m.root.op_type == "Clip" and ("min" in m.root.attrs or "max" in m.root.attrs):  # Clip-6, below opset 11
        return Verdict.no("Clip bounds are attributes (opset < 11)")
    if activation_attrs(m) is None:
        return Verdict.no("Clip bounds are not constant scalars")
    return Verdict.yes()


class FuseActivation(Rule):
    level = 2

    def pattern(self, p: Pat):
        producer = p.op(
            ("Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul"),
            domain=("", "com.mopt"),
            capture="producer",
            any_inputs=True,
        )
        return p.op(ACTIVATIONS, producer, capture="act", extra_inputs=True)

    def check(self, m: Match) -> Verdict:
        prod = m.node("producer")
        if prod.domain == "" and prod.op_type not in FUSED:
            return Verdict.no("not a fusable producer")
        if not m.has_single_use("producer"):
            return Verdict.no(f"{prod.op_type} output feeds other nodes")
        if prod.attr("activation") is not None:
            return Verdict.no(f"{prod.op_type} already has an activation")
        if prod.outputs[0].dtype not in (None, DType.FLOAT):
            return Verdict.no("not float32")
        if prod.op_type in ("Conv", "FusedConv") and not conv_is_native(prod):
            return Verdict.no("a 3-D (or higher) convolution: it runs on the fallback, which has no fused form")
        return _activation_fusable(m)

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        prod = m.node("producer")
        attrs = dict(prod.attrs)
        fused = prod.op_type if prod.domain == "com.mopt" else FUSED[prod.op_type]
        new = emit.op(fused, list(prod.inputs), {**attrs, **activation_attrs(m)}, domain="com.mopt")[0]  # type: ignore[dict-item]
        return new


class FuseBatchNormActivation(Rule):
    level = 3

    def pattern(self, p: Pat):
        bn = p.op("BatchNormalization", capture="bn", any_inputs=True)
        return p.op(ACTIVATIONS, bn, capture="act", extra_inputs=True)

    def check(self, m: Match) -> Verdict:
        bn = m.node("bn")
        if not (fusable := bn_fusable(m)):
            return fusable
        if bn.outputs[0].dtype not in (None, DType.FLOAT) or any(
            v is None or v.dtype not in (None, DType.FLOAT) for v in bn.inputs[1:5]
        ):
            return Verdict.no("not float32")
        if len(bn.inputs) != 5:
            return Verdict.no("not the five inputs of BatchNormalization")
        return _activation_fusable(m)

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        bn = m.node("bn")
        attrs = {**dict(bn.attrs), **activation_attrs(m)}  # type: ignore[dict-item]
        return emit.op("FusedBatchNormalization", list(bn.inputs), attrs, domain="com.mopt")[0]


class FuseSilu(Rule):
    """x * Sigmoid(x), x the output of a Conv, Gemm or MatMul (or its fused form without an activation)."""

    level = 2

    def pattern(self, p: Pat):
        return p.op("Mul", p.any("x"), p.op("Sigmoid", p.any("x"), capture="sig"), commutative=True)

    def check(self, m: Match) -> Verdict:
        x = m.x
        prod = x.producer
        fusable = prod is not None and (
            (prod.domain == "" and prod.op_type in FUSED) or (prod.domain == "com.mopt" and prod.op_type in FUSED.values())
        )
        if not fusable:
            return Verdict.no("x does not come from a Conv, Gemm or MatMul")
        if prod.attr("activation") is not None:
            return Verdict.no(f"{prod.op_type} already has an activation")
        inside = {id(m.root), id(m.node("sig"))}
        read_outside = any(id(u) not in inside for u, _ in x.uses) or any(v.uses or v.is_graph_output for v in prod.outputs[1:])
        if x.is_graph_output or read_outside:
            return Verdict.no(f"the {prod.op_type} output is read outside the SiLU")
        if m.node("sig").outputs[0].is_graph_output:
            return Verdict.no("the sigmoid is a graph output")
        if x.dtype not in (None, DType.FLOAT):
            return Verdict.no("not float32")
        if prod.op_type in ("Conv", "FusedConv") and not conv_is_native(prod):
            return Verdict.no("a 3-D (or higher) convolution: it runs on the fallback, which has no fused form")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        prod = m.x.producer
        assert prod is not None
        m.matched.insert(0, prod)  # replaced: dropped once the SiLU's nodes are gone
        fused = prod.op_type if prod.domain == "com.mopt" else FUSED[prod.op_type]
        return emit.op(fused, list(prod.inputs), {**dict(prod.attrs), "activation": "Silu"}, domain="com.mopt")[0]


RULES = [FuseActivation(), FuseBatchNormActivation(), FuseSilu()]
