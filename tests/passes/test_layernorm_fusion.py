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
