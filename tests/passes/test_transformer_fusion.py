"""FuseMatMulBias and the erf-GELU fusions (FuseGeluErf, FuseGeluErfHalfFirst): the graph changes
as intended, outputs do not, and the rules refuse what they must."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mopt.passes.fusion.transformer import FuseGeluErf, FuseGeluErfHalfFirst, FuseGeluErfHalfLast, FuseMatMulBias

from .helpers import Weights, apply, assert_outputs_unchanged, make_model, node, ops, the

SQRT2 = np.float32(math.sqrt(2.0))


def mm_bias_model(bias: np.ndarray, *, x_shape: tuple = (2, 5, 16), extra: list | None = None, outputs: list[str] | None = None):
    w = Weights(1)
    nodes = [node("MatMul", ["x", "w"], ["mm"]), node("Add", ["mm", "b"], ["y"]), *(extra or [])]
    return make_model(nodes, {"x": list(x_shape)}, outputs or ["y"], {"w": w.normal(x_shape[-1], 32), "b": bias})


@pytest.mark.parametrize("shape", [(32,), (1, 32), (1, 1, 32)], ids=str)
def test_bias_fuses_into_matmul(shape: tuple) -> None:
    model = mm_bias_model(Weights(2).normal(*shape))
    graph, records = apply(model, FuseMatMulBias())
    assert ops(graph) == {"com.mopt.FusedMatMul": 1}
    fused = the(graph, "com.mopt.FusedMatMul")
    assert fused.inputs[2].const.shape == (32,)
    assert records[0].details == ["FuseMatMulBias: 1x"]
    assert_outputs_unchanged(model, graph, level=2)


def test_bias_fuses_with_two_dimensional_input_and_symbolic_batch() -> None:
    w = Weights(3)
    model = make_model(
        [node("MatMul", ["x", "w"], ["mm"]), node("Add", ["b", "mm"], ["y"])],
        {"x": ["n", 16]},
        ["y"],
        {"w": w.normal(16, 32), "b": w.normal(32)},
    )
    graph, _ = apply(model, FuseMatMulBias())
    assert ops(graph) == {"com.mopt.FusedMatMul": 1}
    assert_outputs_unchanged(model, graph, level=2, feeds={"x": w.normal(3, 16)})


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("per-row", "is not one value per output column"),
        ("per-element", "is not one value per output column"),
        ("matmul-read-twice", "MatMul output feeds other nodes"),
    ],
)
def test_bias_not_fused(case: str, reason: str) -> None:
    w = Weights(4)
    if case == "per-row":
        model = mm_bias_model(w.normal(5, 1))
    elif case == "per-element":
        model = mm_bias_model(w.normal(5, 32))
    else:
        model = mm_bias_model(w.normal(32), extra=[node("Relu", ["mm"], ["r"])], outputs=["y", "r"])
    graph, records = apply(model, FuseMatMulBias(), explain=True)
    assert "com.mopt.FusedMatMul" not in ops(graph)
    assert any(reason in d for d in records[0].details), records[0].details
    assert_outputs_unchanged(model, graph, level=2)


def gelu_nodes(x: str, *, half_first: bool | str, mul_by_inverse: bool) -> list:
    div = node("Mul", [x, "inv_sqrt2"], ["d"]) if mul_by_inverse else node("Div", [x, "sqrt2"], ["d"])
    common = [div, node("Erf", ["d"], ["e"]), node("Add", ["e", "one"], ["e1"])]
    if half_first == "x-times-erf-first":  # torch.onnx's nn.GELU: (x * (erf + 1)) * 0.5
        return [*common, node("Mul", [x, "e1"], ["xe"]), node("Mul", ["xe", "half"], ["y"])]
    if half_first:
        return [*common, node("Mul", [x, "half"], ["xh"]), node("Mul", ["xh", "e1"], ["y"])]
    return [*common, node("Mul", ["e1", "half"], ["eh"]), node("Mul", [x, "eh"], ["y"])]


GELU_CONSTS = {
    "sqrt2": np.array(SQRT2, np.float32),
    "inv_sqrt2": np.array(1 / SQRT2, np.float32),
    "one": np.array(1.0, np.float32),
    "half": np.array(0.5, np.float32),
}


@pytest.mark.parametrize("half_first", [False, True, "x-times-erf-first"], ids=["half-last", "half-first", "x-times-erf-first"])
@pytest.mark.parametrize("mul_by_inverse", [False, True], ids=["div", "mul"])
def test_erf_gelu_after_matmul_and_bias_becomes_one_fused_matmul(half_first, mul_by_inverse: bool) -> None:
    w = Weights(5)
    nodes = [
        node("MatMul", ["x", "w"], ["mm"]),
        node("Add", ["mm", "b"], ["h"]),
        *gelu_nodes("h", half_first=half_first, mul_by_inverse=mul_by_inverse),
    ]
    model = make_model(nodes, {"x": [2, 7, 16]}, ["y"], {"w": w.normal(16, 32), "b": w.normal(32), **GELU_CONSTS})
    graph, _ = apply(model, FuseMatMulBias(), FuseGeluErf(), FuseGeluErfHalfFirst(), FuseGeluErfHalfLast())
    assert ops(graph) == {"com.mopt.FusedMatMul": 1}
    fused = the(graph, "com.mopt.FusedMatMul")
    assert fused.attr("activation") == "Gelu"
    assert fused.inputs[2] is not None
    assert_outputs_unchanged(model, graph, level=2)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong-scale", "not the GELU's"),
        ("input-read-elsewhere", "output is read outside the GELU"),
        ("not-after-matmul", "does not come from a MatMul or Gemm"),
    ],
)
def test_erf_gelu_not_fused(case: str, reason: str) -> None:
    w = Weights(6)
    consts = {"w": w.normal(16, 32), **GELU_CONSTS}
    if case == "wrong-scale":
        consts["sqrt2"] = np.array(1.5, np.float32)
    src = [node("MatMul", ["x", "w"], ["h"])] if case != "not-after-matmul" else [node("Relu", ["x"], ["h"])]
    extra, outputs = ([node("Neg", ["h"], ["n"])], ["y", "n"]) if case == "input-read-elsewhere" else ([], ["y"])
    if case == "not-after-matmul":
        consts.pop("w")
    x_shape = [2, 7, 16] if case != "not-after-matmul" else [2, 7, 32]
    model = make_model([*src, *gelu_nodes("h", half_first=False, mul_by_inverse=False), *extra], {"x": x_shape}, outputs, consts)
    graph, records = apply(model, FuseGeluErf(), explain=True)
    assert "Erf" in ops(graph)
    assert any(reason in d for d in records[0].details), records[0].details
    assert_outputs_unchanged(model, graph, level=2)


@pytest.mark.parametrize("act", ["Gelu", "GeluTanh"])
def test_fused_gelu_exports_as_opset_18_ops(act: str) -> None:
    # Gelu is an ONNX op from opset 20 only: below it, export spells the activation out
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    from mopt.frontend.onnx_export import activation_nodes

    nodes = activation_nodes(act, 0.0, 0.0, "x", "y", "g", opset=18)
    assert all(n.op_type != "Gelu" for n in nodes)
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [64])], [helper.make_tensor_value_info("y", 1, [64])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(m, full_check=True)
    x = np.linspace(-6, 6, 64).astype(np.float32)
    (y,) = ReferenceEvaluator(m).run(None, {"x": x})
    xd = x.astype(np.float64)
    if act == "Gelu":
        from math import erf

        want = 0.5 * xd * (1 + np.vectorize(erf)(xd / math.sqrt(2)))
    else:
        want = 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def tanh_gelu_nodes(x: str) -> list:
    return [
        node("Pow", [x, "three"], ["p3"]),
        node("Mul", ["p3", "k3"], ["c"]),
        node("Add", [x, "c"], ["inner"]),
        node("Mul", ["inner", "k"], ["s"]),
        node("Tanh", ["s"], ["t"]),
        node("Add", ["t", "one"], ["t1"]),
        node("Mul", [x, "half"], ["xh"]),
        node("Mul", ["xh", "t1"], ["y"]),
    ]


TANH_CONSTS = {
    "three": np.array(3.0, np.float32),
    "k3": np.array(0.044715, np.float32),
    "k": np.array(math.sqrt(2 / math.pi), np.float32),
    "one": np.array(1.0, np.float32),
    "half": np.array(0.5, np.float32),
}


@pytest.mark.parametrize("through_reshape", [False, True], ids=["direct", "through-reshape"])
def test_tanh_gelu_after_gemm_becomes_fused_gemm(through_reshape: bool) -> None:
    # GPT-2's gelu_new: Gemm on the flattened tokens, Reshape back to [batch, seq, hidden], then the GELU
    from mopt.passes.fusion.transformer import FuseGeluTanh

    w = Weights(7)
    gemm = node("Gemm", ["x", "w", "b"], ["g"])
    shape = {"shape": np.array([2, 7, 32], np.int64)} if through_reshape else {}
    pre = [gemm, node("Reshape", ["g", "shape"], ["h"])] if through_reshape else [node("Gemm", ["x", "w", "b"], ["h"])]
    model = make_model(
        [*pre, *tanh_gelu_nodes("h")], {"x": [14, 16]}, ["y"], {"w": w.normal(16, 32), "b": w.normal(32), **TANH_CONSTS, **shape}
    )
    graph, _ = apply(model, FuseGeluTanh())
    want = {"com.mopt.FusedGemm": 1, **({"Reshape": 1} if through_reshape else {})}
    assert ops(graph) == want
    assert the(graph, "com.mopt.FusedGemm").attr("activation") == "GeluTanh"
    assert_outputs_unchanged(model, graph, level=2)


def test_tanh_gelu_with_other_constants_is_not_fused() -> None:
    from mopt.passes.fusion.transformer import FuseGeluTanh

    w = Weights(8)
    consts = {**TANH_CONSTS, "k3": np.array(0.05, np.float32)}
    model = make_model([node("Gemm", ["x", "w"], ["h"]), *tanh_gelu_nodes("h")], {"x": [5, 16]}, ["y"], {"w": w.normal(16, 32), **consts})
    graph, records = apply(model, FuseGeluTanh(), explain=True)
    assert "Tanh" in ops(graph)
    assert any("constant k3 is" in d for d in records[0].details), records[0].details
    assert_outputs_unchanged(model, graph, level=2)


def bloom_gelu_nodes(x: str) -> list:
    """BLOOM's bloom_gelu_forward as torch.onnx writes it: x * 0.5 * (1 + tanh(0.79788456 * x * (1 + 0.044715 * x * x)))."""
    return [
        node("Mul", [x, "half"], ["xh"]),
        node("Mul", [x, "k"], ["xk"]),
        node("Mul", [x, "k3"], ["xk3"]),
        node("Mul", ["xk3", x], ["x2k3"]),
        node("Add", ["x2k3", "one_in"], ["poly"]),
        node("Mul", ["xk", "poly"], ["s"]),
        node("Tanh", ["s"], ["t"]),
        node("Add", ["t", "one"], ["t1"]),
        node("Mul", ["xh", "t1"], ["y"]),
    ]


@pytest.mark.parametrize("k3", [0.044715, 0.05], ids=["bloom", "other-constant"])
def test_factored_tanh_gelu_after_matmul(k3: float) -> None:
    from mopt.passes.fusion.transformer import FuseGeluTanhFactored, FuseMatMulBias

    w = Weights(9)
    consts = {**{k: v for k, v in TANH_CONSTS.items() if k != "three"}, "one_in": np.array(1.0, np.float32), "k3": np.array(k3, np.float32)}
    nodes = [node("MatMul", ["x", "w"], ["m"]), node("Add", ["m", "b"], ["h"]), *bloom_gelu_nodes("h")]
    model = make_model(nodes, {"x": [2, 7, 16]}, ["y"], {"w": w.normal(16, 32), "b": w.normal(32), **consts})
    graph, records = apply(model, FuseMatMulBias(), FuseGeluTanhFactored(), explain=True)
    if k3 == 0.044715:
        assert ops(graph) == {"com.mopt.FusedMatMul": 1}
        assert the(graph, "com.mopt.FusedMatMul").attr("activation") == "GeluTanh"
    else:
        assert "Tanh" in ops(graph)
        assert any("constant k3 is" in d for r in records for d in r.details)
    x = w.normal(2, 7, 16, scale=2.0)
    assert_outputs_unchanged(model, graph, level=2, feeds={"x": x})


# -- FuseMatMulResidual ---------------------------------------------------------------------------
def test_residual_add_fuses_into_matmul_with_bias() -> None:
    from mopt.passes.fusion.transformer import FuseMatMulResidual

    w = Weights(11)
    model = make_model(
        [node("MatMul", ["x", "w"], ["mm"]), node("Add", ["mm", "b"], ["h"]), node("Add", ["x", "h"], ["y"])],
        {"x": ["batch", "seq", 16]},
        ["y"],
        {"w": w.normal(16, 16), "b": w.normal(16)},
    )
    graph, _ = apply(model, FuseMatMulBias(), FuseMatMulResidual())
    assert ops(graph) == {"com.mopt.FusedMatMul": 1}
    fused = the(graph, "com.mopt.FusedMatMul")
    assert fused.inputs[3] is graph.inputs[0]
    assert_outputs_unchanged(model, graph, level=2, feeds={"x": w.normal(3, 7, 16)})


@pytest.mark.parametrize("relu", [False, True])
def test_residual_add_fuses_into_gemm_through_reshape(relu: bool) -> None:
    """GPT-2: Gemm over the flattened tokens, Reshape back to [batch, seq, N], Add of the residual
    stream (then, here, a Relu that must run after the addition)."""
    from mopt.passes.fusion.activation import FuseActivation
    from mopt.passes.fusion.transformer import FuseMatMulResidual

    w = Weights(12)
    tail = [node("Relu", ["s"], ["y"])] if relu else []
    model = make_model(
        [
            node("Reshape", ["r", "flat"], ["x"]),
            node("Gemm", ["x", "w"], ["g"]),
            node("Reshape", ["g", "shape"], ["h"]),
            node("Add", ["r", "h"], ["s" if relu else "y"]),
            *tail,
        ],
        {"r": [2, 7, 32]},
        ["y"],
        {"w": w.normal(32, 32), "flat": np.array([14, 32], np.int64), "shape": np.array([2, 7, 32], np.int64)},
    )
    rules = [FuseMatMulResidual(), *([FuseActivation()] if relu else [])]
    graph, _ = apply(model, *rules)
    assert ops(graph).get("com.mopt.FusedGemm") == 1 and "Add" not in ops(graph)
    fused = the(graph, "com.mopt.FusedGemm")
    assert fused.inputs[3] is not None and fused.inputs[3].producer.op_type == "Flatten"
    assert fused.attr("activation") is None  # the Relu reads the sum: it stays after the Reshape
    assert_outputs_unchanged(model, graph, level=2)


@pytest.mark.parametrize(
    ("case", "reason"),
    [("broadcast-product", "would broadcast the product"), ("read-twice", "read elsewhere"), ("activation-first", "applies an activation")],
)
def test_residual_not_fused(case: str, reason: str) -> None:
    from mopt.passes.fusion.activation import FuseActivation
    from mopt.passes.fusion.transformer import FuseMatMulResidual

    w = Weights(13)
    outputs = ["y"]
    inputs: dict = {"x": [2, 5, 16], "r": [2, 5, 16]}
    nodes = [node("MatMul", ["x", "w"], ["mm"])]
    if case == "broadcast-product":
        inputs["x"] = [1, 5, 16]
        nodes.append(node("Add", ["mm", "r"], ["y"]))
    elif case == "read-twice":
        nodes.append(node("Add", ["mm", "r"], ["y"]))
        outputs.append("mm")
    else:
        nodes += [node("Relu", ["mm"], ["a"]), node("Add", ["a", "r"], ["y"])]
    model = make_model(nodes, inputs, outputs, {"w": w.normal(16, 16)})
    rules = [FuseActivation()] if case == "activation-first" else []
    graph, records = apply(model, *rules, FuseMatMulResidual(), explain=True)
    assert "Add" in ops(graph)
    assert any(reason in line for r in records for line in r.details), [r.details for r in records]
    assert_outputs_unchanged(model, graph, level=2)


@pytest.mark.parametrize("act", [None, "Relu"])
@pytest.mark.parametrize("r_shape", [[1, 1, 16], [2, 1, 16], ["b", "s", 16]], ids=str)
def test_residual_that_broadcasts_or_is_symbolic_is_added_after_the_gemm(r_shape, act) -> None:
    """y broadcast into the product (or of dims the importer could not relate to the product's):
    fused, the kernel adds it after the GEMM (then the activation) when the shapes differ at run time."""
    from mopt.passes.fusion.activation import FuseActivation
    from mopt.passes.fusion.transformer import FuseMatMulResidual

    w = Weights(14)
    nodes = [node("MatMul", ["x", "w"], ["mm"]), node("Add", ["mm", "r"], ["s" if act else "y"])]
    if act:
        nodes.append(node(act, ["s"], ["y"]))
    model = make_model(nodes, {"x": ["b", "s", 16], "r": r_shape}, ["y"], {"w": w.normal(16, 16)})
    graph, _ = apply(model, FuseMatMulResidual(), FuseActivation())
    assert ops(graph) == {"com.mopt.FusedMatMul": 1}
    for rs in ([1, 1, 16], [2, 1, 16], [2, 3, 16]) if r_shape == ["b", "s", 16] else ([r if isinstance(r, int) else 3 for r in r_shape],):
        feeds = {"x": w.normal(2, 3, 16), "r": w.normal(*[d if d != 1 else 1 for d in rs])}
        assert_outputs_unchanged(model, graph, level=2, feeds=feeds)


def test_float16_bias_fuses_into_matmul_and_runs_through_the_float32_kernel() -> None:
    """A float16 model's MatMul + Add(bias) fuses too: FusedMatMul runs on float16 through the float32
    kernel (one rounding instead of two), so it stays within a float16 step of the float32 result."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import mopt

    rng = np.random.default_rng(6)
    w, b = rng.normal(0, 0.3, (16, 32)).astype(np.float16), rng.normal(0, 1, 32).astype(np.float16)
    g = helper.make_graph([node("MatMul", ["x", "w"], ["mm"]), node("Add", ["mm", "b"], ["y"])], "f16",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 5, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 5, 32])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    graph, _ = apply(model, FuseMatMulBias())
    assert ops(graph) == {"com.mopt.FusedMatMul": 1}
    assert the(graph, "com.mopt.FusedMatMul").inputs[2].const.dtype == np.float16
    x = rng.normal(0, 1, (2, 5, 16)).astype(np.float16)
    got = mopt.Session(mopt.compile(model, 2), fallback=False).run(None, {"x": x})[0]
    want = x.astype(np.float32) @ w.astype(np.float32) + b.astype(np.float32)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=2e-3)
