"""FuseLayerNorm (the decomposed form older exporters write) and FoldAffineIntoLayerNorm: the graph
becomes one LayerNormalization, the outputs do not change, and what does not fit is left alone."""

from __future__ import annotations

import numpy as np
import pytest

from mopt.passes.fusion.layernorm import FoldAffineIntoLayerNorm, FuseLayerNorm

from .helpers import Weights, apply, assert_outputs_unchanged, make_model, node, ops, the

RULES = (FuseLayerNorm(), FoldAffineIntoLayerNorm())


def decomposed(x_shape, *, opset=13, axes=(-1,), square="Pow", gamma=None, beta=None, keepdims=1, extra_out=None, eps=1e-5):
    """x - mean, / sqrt(mean of squares + eps), * gamma, + beta: opset 13 takes axes as an attribute,
    opset 18 as an input."""
    inits: dict = {"eps": np.array(eps, np.float32), "two": np.array(2.0, np.float32)}

    def mean(inp, out):
        if opset >= 18:
            inits["axes"] = np.array(axes, np.int64)
            return node("ReduceMean", [inp, "axes"], [out], keepdims=keepdims)
        return node("ReduceMean", [inp], [out], axes=list(axes), keepdims=keepdims)

    sq = node("Pow", ["d", "two"], ["d2"]) if square == "Pow" else node("Mul", ["d", "d"], ["d2"])
    nodes = [
        mean("x", "mu"),
        node("Sub", ["x", "mu"], ["d"]),
        sq,
        mean("d2", "var"),
        node("Add", ["var", "eps"], ["ve"]),
        node("Sqrt", ["ve"], ["std"]),
        node("Div", ["d", "std"], ["n"]),
    ]
    last = "n"
    if gamma is not None:
        inits["gamma"] = gamma
        nodes.append(node("Mul", ["gamma", last], ["g"]))
        last = "g"
    if beta is not None:
        inits["beta"] = beta
        nodes.append(node("Add", [last, "beta"], ["y"]))
        last = "y"
    if last != "y":
        nodes.append(node("Identity", [last], ["y"]))
    outputs = ["y"] + ([extra_out] if extra_out else [])
    return make_model(nodes, {"x": list(x_shape)}, outputs, inits, opset=opset)


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("square", ["Pow", "Mul"])
@pytest.mark.parametrize("affine", ["none", "gamma", "gamma+beta", "scalar-gamma"])
def test_decomposed_layernorm_becomes_one_node(opset, square, affine):
    w = Weights(21)
    gamma = {"none": None, "gamma": w.normal(32), "gamma+beta": w.normal(32), "scalar-gamma": np.array(1.5, np.float32)}[affine]
    beta = w.normal(32) if affine == "gamma+beta" else None
    model = decomposed(["batch", 7, 32], opset=opset, square=square, gamma=gamma, beta=beta)
    graph, _ = apply(model, *RULES)
    assert ops(graph).get("LayerNormalization") == 1
    assert set(ops(graph)) <= {"LayerNormalization", "Identity"}, ops(graph)
    ln = the(graph, "LayerNormalization")
    assert ln.attr("axis") == 2 and abs(ln.attr("epsilon") - 1e-5) < 1e-12
    x = w.normal(3, 7, 32) * 4 + 2
    assert_outputs_unchanged(model, graph, level=2, feeds={"x": x})


def test_two_trailing_axes():
    w = Weights(22)
    model = decomposed([2, 5, 4, 6], axes=(-2, -1), gamma=w.normal(4, 6), beta=w.normal(1, 6))
    graph, _ = apply(model, *RULES)
    assert ops(graph) == {"LayerNormalization": 1}
    assert the(graph, "LayerNormalization").attr("axis") == 2
    assert_outputs_unchanged(model, graph, level=2)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("leading-axis", "trailing axes"),
        ("no-keepdims", "trailing axes"),
        ("fourth-power", "power other than 2"),
        ("deviation-read", "read outside"),
        ("gamma-over-batch", "varies over more than"),
    ],
)
def test_not_fused(case, reason):
    w = Weights(23)
    if case == "leading-axis":
        model = decomposed([4, 6, 8], axes=(1,))
    elif case == "no-keepdims":
        model = decomposed([8, 8], axes=(-1,), keepdims=0)  # mean [8] broadcast along rows: not a LayerNorm
    elif case == "fourth-power":
        model = decomposed([4, 8])
        for init in model.graph.initializer:
            if init.name == "two":
                init.CopyFrom(__import__("onnx").numpy_helper.from_array(np.array(4.0, np.float32), "two"))
    elif case == "deviation-read":
        model = decomposed([4, 8], extra_out="d")
    else:
        model = decomposed([3, 8], gamma=w.normal(3, 8))
    graph, records = apply(model, *RULES, explain=True)
    details = [line for r in records for line in r.details]
    assert any(reason in line for line in details), details
    if case != "gamma-over-batch":
        assert "LayerNormalization" not in ops(graph)
    else:
        assert ops(graph).get("Mul") == 1
    assert_outputs_unchanged(model, graph, level=2)


def test_layernorm_at_level_two_on_a_decomposed_encoder_block():
    """The whole -O2 pipeline: residual Add, decomposed LN with affine, then a MatMul reading it."""
    import mopt
    from mopt.testing.assert_close import assert_close
    from mopt.testing.reference import run_reference

    w = Weights(24)
    model = decomposed([2, 9, 16], gamma=w.normal(16), beta=w.normal(16))
    ln_ops = [op for _, op, _ in mopt.Session(mopt.compile(model, 2)).kernels()]
    assert ln_ops.count("LayerNormalization") == 1 and "ReduceMean" not in ln_ops, ln_ops
    x = w.normal(2, 9, 16)
    assert_close(mopt.Session(model, level=2).run(None, {"x": x})[0], run_reference(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


# ---- RMSNorm -----------------------------------------------------------------------------------

from mopt.passes.fusion.layernorm import FoldScaleIntoRMSNorm, FuseRMSNorm, FuseRMSNormDiv, FuseRMSNormOneOver  # noqa: E402

RMS = "com.mopt.RMSNormalization"
RMS_RULES = (FuseRMSNorm(), FuseRMSNormOneOver(), FuseRMSNormDiv(), FoldScaleIntoRMSNorm())


def rms_decomposed(x_shape, *, form="reciprocal", opset=18, axes=(-1,), square="Pow", weight=None, extra_out=None, power=2.0, one=1.0):
    """x * rsqrt(mean(x^2) + eps) * weight, the way torch.onnx writes Llama's and T5's RMSNorm:
    rsqrt as Reciprocal(Sqrt) (dynamo), as 1 / Sqrt (legacy exporter), or x / Sqrt."""
    inits: dict = {"eps": np.array(1e-6, np.float32), "two": np.array(power, np.float32)}
    if opset >= 18:
        inits["axes"] = np.array(axes, np.int64)
        mean = node("ReduceMean", ["x2", "axes"], ["ms"], keepdims=1)
    else:
        mean = node("ReduceMean", ["x2"], ["ms"], axes=list(axes), keepdims=1)
    nodes = [node("Pow", ["x", "two"], ["x2"]) if square == "Pow" else node("Mul", ["x", "x"], ["x2"]), mean,
             node("Add", ["ms", "eps"], ["mse"]), node("Sqrt", ["mse"], ["rms"])]
    if form == "reciprocal":
        nodes += [node("Reciprocal", ["rms"], ["inv"]), node("Mul", ["x", "inv"], ["n"])]
    elif form == "one-over":
        inits["one"] = np.array(one, np.float32)
        nodes += [node("Div", ["one", "rms"], ["inv"]), node("Mul", ["inv", "x"], ["n"])]
    else:
        nodes += [node("Div", ["x", "rms"], ["n"])]
    last = "n"
    if weight is not None:
        inits["w"] = weight
        nodes.append(node("Mul", ["w", last], ["y"]))
    else:
        nodes.append(node("Identity", [last], ["y"]))
    return make_model(nodes, {"x": list(x_shape)}, ["y"] + ([extra_out] if extra_out else []), inits, opset=opset)


@pytest.mark.parametrize("form", ["reciprocal", "one-over", "div"])
@pytest.mark.parametrize("square", ["Pow", "Mul"])
@pytest.mark.parametrize("weight", ["none", "vector", "scalar"])
def test_decomposed_rmsnorm_becomes_one_node(form, square, weight):
    w = Weights(31)
    g = {"none": None, "vector": w.normal(48), "scalar": np.array(0.75, np.float32)}[weight]
    model = rms_decomposed(["batch", 7, 48], form=form, square=square, weight=g)
    graph, _ = apply(model, *RMS_RULES)
    assert set(ops(graph)) <= {RMS, "Identity"}, ops(graph)
    assert ops(graph)[RMS] == 1
    rms = the(graph, RMS)
    assert rms.domain == "com.mopt"
    assert rms.attr("axis") == 2
    assert abs(rms.attr("epsilon") - 1e-6) < 1e-12
    x = w.normal(3, 7, 48) * 3 + 1
    assert_outputs_unchanged(model, graph, level=2, feeds={"x": x})


def test_rmsnorm_over_two_trailing_axes_at_opset_13():
    w = Weights(32)
    model = rms_decomposed([2, 5, 4, 6], opset=13, axes=(-2, -1), weight=w.normal(4, 6))
    graph, _ = apply(model, *RMS_RULES)
    assert ops(graph) == {RMS: 1}
    assert the(graph, RMS).attr("axis") == 2
    assert_outputs_unchanged(model, graph, level=2)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("leading-axis", "trailing axes"),
        ("fourth-power", "power other than 2"),
        ("two-over", "numerator is not 1"),
        ("square-read", "read outside"),
        ("weight-over-batch", "varies over more than"),
    ],
)
def test_rmsnorm_not_fused(case, reason):
    w = Weights(33)
    model = {
        "leading-axis": lambda: rms_decomposed([4, 6, 8], axes=(1,)),
        "fourth-power": lambda: rms_decomposed([4, 8], power=4.0),
        "two-over": lambda: rms_decomposed([4, 8], form="one-over", one=2.0),
        "square-read": lambda: rms_decomposed([4, 8], extra_out="x2"),
        "weight-over-batch": lambda: rms_decomposed([3, 8], weight=w.normal(3, 8)),
    }[case]()
    graph, records = apply(model, *RMS_RULES, explain=True)
    details = [line for r in records for line in r.details]
    assert any(reason in line for line in details), details
    if case == "weight-over-batch":
        assert ops(graph).get(RMS) == 1
        assert ops(graph).get("Mul") == 1
    else:
        assert RMS not in ops(graph)
    assert_outputs_unchanged(model, graph, level=2)


def test_rmsnorm_at_level_two_runs_one_kernel_and_exports_at_opset_23():
    """The -O2 pipeline runs it as one kernel; a graph at opset 23 exports ONNX's own RMSNormalization."""
    import mopt
    from mopt.frontend import export_onnx

    w = Weights(34)
    model = rms_decomposed([2, 9, 64], weight=w.normal(64))
    kernels = [op for _, op, _ in mopt.Session(mopt.compile(model, 2)).kernels()]
    assert kernels == [RMS], kernels
    model23 = rms_decomposed([2, 9, 64], weight=w.normal(64), opset=23)
    graph, _ = apply(model23, *RMS_RULES)
    exported = export_onnx(graph)
    assert [n.op_type for n in exported.graph.node] == ["RMSNormalization"]
    assert_outputs_unchanged(model23, graph, level=2, runner="reference")
