"""Fusions for the blocks exported transformers are made of:

MatMul(x, W) + b                                ==>  com.mopt.FusedMatMul(x, W, b)       b: one value per output column
x * ((Erf(x / sqrt 2) + 1) * 0.5)   x = MatMul  ==>  com.mopt.FusedMatMul{activation=Gelu}
(x * 0.5) * (Erf(x / sqrt 2) + 1)   (and x * (1/sqrt 2) for the division)
(x * (Erf(x / sqrt 2) + 1)) * 0.5
(x * 0.5) * (1 + Tanh(...x^3...))   x = Gemm    ==>  com.mopt.FusedGemm{activation=GeluTanh}
x may also be Reshape(MatMul/Gemm): the fused op then feeds the Reshape.

The bias and the GELU then cost nothing beyond the GEMM's store instead of two to five passes over
the activations.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from mopt.ir.dtypes import DType
from mopt.ir.graph import Node, Value
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict

MATMULS = ("MatMul", "FusedMatMul")


def _scalar(arr: np.ndarray | None) -> float | None:
    if arr is None or arr.size != 1 or arr.dtype.kind != "f":
        return None
    return float(arr.reshape(-1)[0])


class FuseMatMulBias(Rule):
    level = 2

    def pattern(self, p: Pat):
        mm = p.op(MATMULS, domain=("", "com.mopt"), capture="mm", any_inputs=True)
        return p.op("Add", mm, p.const("bias"), commutative=True)

    def check(self, m: Match) -> Verdict:
        mm = m.node("mm")
        if mm.domain == "" and mm.op_type != "MatMul":
            return Verdict.no("not a MatMul")
        if not m.has_single_use("mm"):
            return Verdict.no("MatMul output feeds other nodes")
        if mm.attr("activation") is not None:
            return Verdict.no("the MatMul already applies an activation before the addition")
        if len(mm.inputs) > 2 and mm.inputs[2] is not None:
            return Verdict.no("the MatMul already adds a bias")
        out, bias = mm.outputs[0], m.bias
        a, b = mm.inputs[0], mm.inputs[1]
        if not ((out.dtype in (None, DType.FLOAT) and bias.dtype == np.float32)
                or (out.dtype == DType.FLOAT16 and bias.dtype == np.float16)):
            return Verdict.no("not float32 (or float16) with a bias of that type")
        if a is None or b is None or a.shape is None or b.shape is None or len(a.shape) < 2 or len(b.shape) < 2:
            return Verdict.no("operands of rank < 2 (or unknown)")
        if out.shape is None or not isinstance(out.shape[-1], int):
            return Verdict.no("the number of output columns is not known")
        n = out.shape[-1]
        if bias.ndim > len(out.shape) or bias.size != n or (bias.ndim and bias.shape[-1] != n):
            return Verdict.no(f"bias of shape {list(bias.shape)} is not one value per output column ({n})")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        mm = m.node("mm")
        bias = np.ascontiguousarray(m.bias.reshape(-1), dtype=m.bias.dtype)  # float16 runs through the float32 kernel
        return emit.op("FusedMatMul", [mm.inputs[0], mm.inputs[1], bias], dict(mm.attrs), domain="com.mopt")[0]


def _residual_shapes_ok(prod: tuple | None, y: tuple | None) -> Verdict:
    """The Add's result must have the product's shape: y equal to it, or broadcast into it. Dims the
    importer could not name (symbolic on either side) are checked by the kernel at run time, which
    adds a residual that turns out to broadcast after the GEMM instead of in its store."""
    if prod is None or y is None or len(prod) != len(y) or not prod:
        return Verdict.no(f"shapes {prod} and {y}: ranks not known to be equal")
    if not isinstance(prod[-1], int) or prod[-1] != y[-1]:
        return Verdict.no(f"shapes {prod} and {y}: the last dimensions are not known to be equal")
    for a, b in zip(prod, y, strict=True):
        if a == b or b == 1:
            continue
        if a == 1 or (isinstance(a, int) and isinstance(b, int)):
            return Verdict.no(f"shapes {prod} and {y}: the addition would broadcast the product")
    return Verdict.yes()


FUSABLE = {"MatMul": "FusedMatMul", "Gemm": "FusedGemm", "FusedMatMul": "FusedMatMul", "FusedGemm": "FusedGemm"}


class FuseMatMulResidual(Rule):
    """Add(MatMul/Gemm(...), y) ==> com.mopt.FusedMatMul/FusedGemm(..., y): the residual connection
    added in the GEMM's store. y must have the product's shape; through a Reshape that only
    regroups the leading axes (Gemm's 2-D result viewed as [batch, seq, N]), y is read flattened."""

    level = 2

    def pattern(self, p: Pat):
        return p.op("Add", p.any("a"), p.any("b"))

    @staticmethod
    def producer(prod: Value) -> tuple[Node | None, Node | None]:
        p = prod.producer
        if p is not None and p.op_type == "Reshape" and p.domain == "" and p.inputs[0] is not None:
            return p.inputs[0].producer, p
        return p, None

    def check_order(self, prod: Value, y: Value) -> Verdict:
        mm, reshape = self.producer(prod)
        if mm is None or mm.op_type not in FUSABLE or mm.domain not in ("", "com.mopt"):
            return Verdict.no("the operand is not a MatMul or Gemm result")
        if mm.attr("activation") is not None:
            return Verdict.no(f"the {mm.op_type} applies an activation before the addition")
        if len(mm.inputs) > 3 and mm.inputs[3] is not None:
            return Verdict.no(f"the {mm.op_type} already adds a residual")
        if mm.op_type in ("Gemm", "FusedGemm") and len(mm.inputs) > 2 and mm.inputs[2] is not None:
            c = mm.inputs[2]
            n_out = mm.outputs[0].shape[-1] if mm.outputs[0].shape else None
            if not c.is_const or c.const is None or c.const.ndim != 1 or c.const.size != n_out or float(mm.attr("beta", 1.0)) != 1.0:
                return Verdict.no("the Gemm's C is not a bias row (its residual slot is taken)")
        out = mm.outputs[0]
        chain = [out] + ([reshape.outputs[0]] if reshape is not None else [])
        for v in chain:
            if v.is_graph_output or len(v.uses) != 1 or any(w.uses for w in v.producer.outputs[1:]):
                return Verdict.no(f"the {mm.op_type} result is read elsewhere")
        if y is prod or y.producer is mm or (reshape is not None and y.producer is reshape):
            return Verdict.no("adds the product to itself")
        final = chain[-1]
        verdict = _residual_shapes_ok(final.shape, y.shape)
        if not verdict:
            return verdict
        if out.dtype not in (None, DType.FLOAT) or y.dtype != DType.FLOAT:
            return Verdict.no("not float32")
        if reshape is not None:
            if out.shape is None or len(out.shape) != 2 or not y.shape or out.shape[-1] != y.shape[-1] or not isinstance(y.shape[-1], int):
                return Verdict.no("the Reshape does more than regroup the leading axes of a 2-D product")
        return Verdict.yes()

    @staticmethod
    def scores_for_softmax(v: Value) -> bool:
        """True when v flows, through scalings only, into a Softmax: an attention's masked scores,
        which FuseAttention takes whole (mask included) when it matches."""
        for _ in range(4):
            if v.is_graph_output or len(v.uses) != 1:
                return False
            n = v.uses[0][0]
            if n.domain != "":
                return False
            if n.op_type == "Softmax":
                return True
            if n.op_type not in ("Mul", "Div"):
                return False
            v = n.outputs[0]
        return False

    def check(self, m: Match) -> Verdict:
        if self.scores_for_softmax(m.root.outputs[0]):
            return Verdict.no("the addition masks attention scores: left to FuseAttention")
        first = self.check_order(m.a, m.b)
        if first:
            m.__dict__["_order"] = (m.a, m.b)
            return first
        second = self.check_order(m.b, m.a)
        if second:
            m.__dict__["_order"] = (m.b, m.a)
            return second
        return Verdict.no(f"{first.reason}; swapped: {second.reason}")

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        prod, y = m.__dict__["_order"]
        mm, reshape = self.producer(prod)
        assert mm is not None
        for n in (mm, reshape):
            if n is not None:
                m.matched.insert(0, n)
        if reshape is not None:
            y = emit.op("Flatten", [y], {"axis": len(y.shape) - 1})[0]
            y.shape, y.dtype = mm.outputs[0].shape, DType.FLOAT
        ins = list(mm.inputs) + [None] * (3 - len(mm.inputs))
        fused = emit.op(FUSABLE[mm.op_type], [*ins[:3], y], dict(mm.attrs), domain="com.mopt")[0]
        if reshape is None:
            return fused
        fused.shape, fused.dtype = mm.outputs[0].shape, mm.outputs[0].dtype
        return emit.op("Reshape", [fused, *reshape.inputs[1:]], dict(reshape.attrs))[0]


class _Gelu(Rule):
    """A decomposed GELU folded into the activation of the MatMul/Gemm that produces its input x,
    also through a Reshape between them (GELU is elementwise: Gelu(Reshape(y)) = Reshape(Gelu(y)))."""

    level = 2
    activation = "Gelu"

    def constants_ok(self, m: Match) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError

    def producer(self, m: Match) -> tuple[Node | None, Node | None]:
        """(the MatMul/Gemm, the Reshape between it and x or None)."""
        p = m.x.producer
        if p is not None and p.op_type == "Reshape" and p.inputs[0] is not None and p.inputs[0].producer is not None:
            return p.inputs[0].producer, p
        return p, None

    def check(self, m: Match) -> Verdict:
        verdict = self.constants_ok(m)
        if not verdict:
            return verdict
        x = m.x
        prod, reshape = self.producer(m)
        if prod is None or prod.op_type not in FUSABLE or prod.domain not in ("", "com.mopt"):
            return Verdict.no("its input does not come from a MatMul or Gemm it can be fused into")
        if prod.attr("activation") is not None:
            return Verdict.no(f"{prod.op_type} already has an activation")
        inside = {id(n) for n in m.matched}
        if x.is_graph_output or any(id(n) not in inside for n, _ in x.uses) or any(v.uses for v in x.producer.outputs[1:]):
            return Verdict.no(f"the {x.producer.op_type} output is read outside the GELU")
        if reshape is not None:
            y = reshape.inputs[0]
            if y.is_graph_output or len(y.uses) != 1 or any(v.uses for v in prod.outputs[1:]):
                return Verdict.no(f"the {prod.op_type} output is read outside the Reshape")
        if x.dtype not in (None, DType.FLOAT):
            return Verdict.no("not float32")
        return Verdict.yes()

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        prod, reshape = self.producer(m)
        assert prod is not None
        for n in (prod, reshape):  # replaced too: dropped once the GELU's nodes are gone
            if n is not None:
                m.matched.insert(0, n)
        fused = emit.op(FUSABLE[prod.op_type], list(prod.inputs), {**dict(prod.attrs), "activation": self.activation}, domain="com.mopt")[0]
        if reshape is None:
            return fused
        fused.shape, fused.dtype = prod.outputs[0].shape, prod.outputs[0].dtype
        return emit.op("Reshape", [fused, *reshape.inputs[1:]], dict(reshape.attrs))[0]


class _GeluErf(_Gelu):
    def constants_ok(self, m: Match) -> Verdict:
        scale = _scalar(m.arrays.get("scale"))
        div = m.node("div")
        want = math.sqrt(2.0) if div.op_type == "Div" else 1.0 / math.sqrt(2.0)
        if scale is None or not math.isclose(scale, want, rel_tol=1e-4):
            return Verdict.no(f"{div.op_type} by {scale}, not the GELU's {want:.5f}")
        if not math.isclose(_scalar(m.arrays.get("one")) or 0.0, 1.0, rel_tol=1e-6):
            return Verdict.no("the Erf is not shifted by 1")
        if not math.isclose(_scalar(m.arrays.get("half")) or 0.0, 0.5, rel_tol=1e-6):
            return Verdict.no("not scaled by 0.5")
        return Verdict.yes()


def _erf_plus_one(p: Pat):
    div = p.op(("Div", "Mul"), p.any("x"), p.const("scale"), capture="div")
    return p.op("Add", p.op("Erf", div), p.const("one"), commutative=True)


class FuseGeluErf(_GeluErf):
    """x * ((Erf(x / sqrt 2) + 1) * 0.5)"""

    def pattern(self, p: Pat):
        return p.op("Mul", p.any("x"), p.op("Mul", _erf_plus_one(p), p.const("half"), commutative=True), commutative=True)


class FuseGeluErfHalfFirst(_GeluErf):
    """(x * 0.5) * (Erf(x / sqrt 2) + 1)"""

    def pattern(self, p: Pat):
        return p.op("Mul", p.op("Mul", p.any("x"), p.const("half"), commutative=True), _erf_plus_one(p), commutative=True)


class FuseGeluErfHalfLast(_GeluErf):
    """(x * (Erf(x / sqrt 2) + 1)) * 0.5   (torch.onnx's nn.GELU below opset 20)"""

    def pattern(self, p: Pat):
        return p.op("Mul", p.op("Mul", p.any("x"), _erf_plus_one(p), commutative=True), p.const("half"), commutative=True)


class FuseGeluTanh(_Gelu):
    """(x * 0.5) * (1 + Tanh(sqrt(2/pi) * (x + Pow(x, 3) * 0.044715)))   (GPT-2's gelu_new)"""

    activation = "GeluTanh"

    def pattern(self, p: Pat):
        cube = p.op("Mul", p.op("Pow", p.any("x"), p.const("three")), p.const("k3"), commutative=True)
        inner = p.op("Mul", p.op("Add", p.any("x"), cube, commutative=True), p.const("k"), commutative=True)
        one_plus = p.op("Add", p.op("Tanh", inner), p.const("one"), commutative=True)
        return p.op("Mul", p.op("Mul", p.any("x"), p.const("half"), commutative=True), one_plus, commutative=True)

    want: ClassVar[dict[str, float]] = {"three": 3.0, "k3": 0.044715, "k": math.sqrt(2.0 / math.pi), "one": 1.0, "half": 0.5}

    def constants_ok(self, m: Match) -> Verdict:
        for name, value in self.want.items():
            got = _scalar(m.arrays.get(name))
            if got is None or not math.isclose(got, value, rel_tol=1e-4):
                return Verdict.no(f"constant {name} is {got}, not the tanh GELU's {value:.6g}")
        return Verdict.yes()


class FuseGeluTanhFactored(FuseGeluTanh):
    """(x * 0.5) * (1 + Tanh((x * sqrt(2/pi)) * (1 + (x * 0.044715) * x)))   (BLOOM's bloom_gelu_forward:
    x + 0.044715 x^3 factored as x (1 + 0.044715 x^2))"""

    def pattern(self, p: Pat):
        x2k = p.op("Mul", p.op("Mul", p.any("x"), p.const("k3"), commutative=True), p.any("x"), commutative=True)
        inner = p.op("Mul", p.op("Mul", p.any("x"), p.const("k"), commutative=True), p.op("Add", x2k, p.const("one_in"), commutative=True),
                     commutative=True)
        one_plus = p.op("Add", p.op("Tanh", inner), p.const("one"), commutative=True)
        return p.op("Mul", p.op("Mul", p.any("x"), p.const("half"), commutative=True), one_plus, commutative=True)

    want: ClassVar[dict[str, float]] = {"k3": 0.044715, "k": math.sqrt(2.0 / math.pi), "one_in": 1.0, "one": 1.0, "half": 0.5}


RULES = [
    FuseMatMulBias(), FuseGeluErf(), FuseGeluErfHalfFirst(), FuseGeluErfHalfLast(),
    FuseGeluTanh(), FuseGeluTanhFactored(), FuseMatMulResidual(),
]
