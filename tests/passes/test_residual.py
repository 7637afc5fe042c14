"""FuseResidualAdd: Add/Sum of a convolution's result and a tensor of exactly its shape becomes
com.mopt.FusedConv(x, w, b, residual); broadcasting, a conv result read elsewhere, an activation
already applied or a residual already added leave the graph alone."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import pytest

from mopt.passes.fusion.activation import FuseActivation
from mopt.passes.fusion.residual import FuseResidualAdd

from .helpers import Shape, Weights, apply, assert_outputs_unchanged, imported_ops, make_model, node, ops, the

X = [2, 3, 6, 6]
OUT = [2, 4, 6, 6]  # Conv 3 -> 4 channels, 3x3 with pads 1


def residual_model(
    add: onnx.NodeProto,
    *,
    bias: bool = True,
    extra: Sequence[onnx.NodeProto] = (),
    y_shape: Shape = OUT,
    outputs: Sequence[str] = ("s",),
    x_shape: Shape = X,
) -> onnx.ModelProto:
    w = Weights(0)
    inits = {"w": w.normal(4, 3, 3, 3)}
    conv_in = ["x", "w"]
    if bias:
        inits["b"] = w.normal(4)
        conv_in.append("b")
    return make_model(
        [node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1]), add, *extra],
        {"x": x_shape, "y": y_shape},
        list(outputs),
        inits,
    )


FUSED = {
    "Add(conv, y)": (node("Add", ["c", "y"], ["s"]), True),
    "Add(y, conv)": (node("Add", ["y", "c"], ["s"]), True),
    "Sum(conv, y)": (node("Sum", ["c", "y"], ["s"]), True),
    "Sum(y, conv)": (node("Sum", ["y", "c"], ["s"]), True),
    "no-bias": (node("Add", ["c", "y"], ["s"]), False),
}


@pytest.mark.parametrize("case", FUSED, ids=list(FUSED))
def test_residual_add_fuses_into_conv(case: str) -> None:
    add, bias = FUSED[case]
    model = residual_model(add, bias=bias)
    graph, records = apply(model, FuseResidualAdd())
    assert imported_ops(model) == {"Conv": 1, add.op_type: 1}
    assert ops(graph) == {"com.mopt.FusedConv": 1}
    assert records[0].details == ["FuseResidualAdd: 1x"]
    fused = the(graph, "com.mopt.FusedConv")
    assert [v.name if v is not None else None for v in fused.inputs] == ["x", "w", "b" if bias else None, "y"]
    assert fused.attr("pads") == [1, 1, 1, 1]
    assert fused.attr("activation") is None
    assert fused.outputs[0].name == "s"
    assert_outputs_unchanged(model, graph, level=2)


def test_residual_then_relu_fuses_both_in_graph_order() -> None:
    """Relu(Add(Conv, y)): the addition comes first, then the activation, both in one FusedConv."""
    model = residual_model(node("Add", ["c", "y"], ["s"]), extra=[node("Relu", ["s"], ["r"])], outputs=["r"])
    graph, records = apply(model, FuseResidualAdd(), FuseActivation())
    assert ops(graph) == {"com.mopt.FusedConv": 1}
    assert records[0].details == ["FuseResidualAdd: 1x", "FuseActivation: 1x"]
    fused = the(graph, "com.mopt.FusedConv")
    assert fused.attr("activation") == "Relu"
    assert [v.name for v in fused.inputs if v is not None] == ["x", "w", "b", "y"]
    assert_outputs_unchanged(model, graph, level=2)


def test_two_convolutions_added() -> None:
    """Add(conv1, conv2): one conv takes the other's result as its residual."""
    w = Weights(1)
    model = make_model(
        [
            node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
            node("Conv", ["x", "w2"], ["c2"]),
            node("Add", ["c1", "c2"], ["s"]),
        ],
        {"x": X},
        ["s"],
        {"w1": w.normal(4, 3, 3, 3), "b1": w.normal(4), "w2": w.normal(4, 3, 1, 1)},
    )
    graph, _ = apply(model, FuseResidualAdd())
    assert ops(graph) == {"Conv": 1, "com.mopt.FusedConv": 1}
    fused = the(graph, "com.mopt.FusedConv")
    assert fused.inputs[3] is the(graph, "Conv").outputs[0]
    assert_outputs_unchanged(model, graph, level=2)


def test_symbolic_batch_dimension_fuses() -> None:
    """The same named dimension on both sides is the same size."""
    model = residual_model(node("Add", ["c", "y"], ["s"]), x_shape=["N", 3, 6, 6], y_shape=["N", 4, 6, 6])
    graph, _ = apply(model, FuseResidualAdd())
    assert ops(graph) == {"com.mopt.FusedConv": 1}
    assert the(graph, "com.mopt.FusedConv").outputs[0].shape == ("N", 4, 6, 6)
    w = Weights(9)
    feeds = {"x": w.normal(3, 3, 6, 6), "y": w.normal(3, 4, 6, 6)}
    assert_outputs_unchanged(model, graph, level=2, feeds=feeds)


# -- negative cases: the graph stays as it was --------------------------------------------------
NOT_FUSED = {
    # name: (model, name of the Add, reason shown by --explain or None when the pattern does not match)
    "y-broadcasts-per-channel": (
        lambda: residual_model(node("Add", ["c", "y"], ["s"]), y_shape=[1, 4, 1, 1]),
        "s",
        "shapes (2, 4, 6, 6) and (1, 4, 1, 1) are not known to be equal (no broadcasting)",
    ),
    "y-broadcasts-over-the-batch": (
        lambda: residual_model(node("Add", ["c", "y"], ["s"]), y_shape=[1, 4, 6, 6]),
        "s",
        "shapes (2, 4, 6, 6) and (1, 4, 6, 6) are not known to be equal (no broadcasting)",
    ),
    "y-lower-rank": (
        lambda: residual_model(node("Add", ["y", "c"], ["s"]), y_shape=[4, 6, 6]),
        "s",
        "shapes (2, 4, 6, 6) and (4, 6, 6) are not known to be equal (no broadcasting)",
    ),
    "y-widens-the-output": (
        lambda: residual_model(node("Add", ["c", "y"], ["s"]), x_shape=[1, 3, 6, 6], y_shape=[3, 4, 6, 6]),
        "s",
        "shapes (1, 4, 6, 6) and (3, 4, 6, 6) are not known to be equal (no broadcasting)",
    ),
    "different-symbolic-dims": (
        lambda: residual_model(node("Add", ["c", "y"], ["s"]), x_shape=["N", 3, 6, 6], y_shape=["M", 4, 6, 6]),
        "s",
        "shapes ('N', 4, 6, 6) and ('M', 4, 6, 6) are not known to be equal (no broadcasting)",
    ),
    "conv-output-used-twice": (
        lambda: residual_model(node("Add", ["c", "y"], ["s"]), extra=[node("Relu", ["c"], ["r"])], outputs=["s", "r"]),
        "s",
        "Conv output feeds other nodes",
    ),
    "conv-output-is-a-graph-output": (
        lambda: residual_model(node("Add", ["c", "y"], ["s"]), outputs=["s", "c"]),
        "s",
        "Conv output feeds other nodes",
    ),
    "conv-added-to-itself": (
        lambda: make_model(
            [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Add", ["c", "c"], ["s"])],
            {"x": X},
            ["s"],
            {"w": Weights(0).normal(4, 3, 3, 3)},
        ),
        "s",
        "Conv output feeds other nodes",
    ),
    "sum-of-three": (
        lambda: residual_model(node("Sum", ["c", "y", "y"], ["s"])),
        "s",
        None,
    ),
    "not-a-convolution": (
        lambda: make_model(
            [node("MatMul", ["a", "w"], ["m"]), node("Add", ["m", "y"], ["s"])],
            {"a": [3, 4], "y": [3, 5]},
            ["s"],
            {"w": Weights(0).normal(4, 5)},
        ),
        "s",
        None,
    ),
}


@pytest.mark.parametrize("case", NOT_FUSED, ids=list(NOT_FUSED))
def test_residual_add_not_fused(case: str) -> None:
    build, at, reason = NOT_FUSED[case]
    model = build()
    before = imported_ops(model)
    graph, records = apply(model, FuseResidualAdd(), explain=True)
    assert ops(graph) == before
    assert not records[0].changed
    if reason is None:
        assert records[0].details == []
    else:
        assert records[0].details == [f"FuseResidualAdd at '{at}': not applied: {reason}"]
    feeds = None
    if case == "different-symbolic-dims":  # N=2, M=1: y broadcasts over the batch
        feeds = {"x": Weights(9).normal(2, 3, 6, 6), "y": Weights(10).normal(1, 4, 6, 6)}
    assert_outputs_unchanged(model, graph, level=2, feeds=feeds)


def test_activation_before_the_addition_is_not_fused() -> None:
    """Add(Relu(Conv), y): the Relu fuses first; the addition after it cannot join (the fused
    kernel adds the residual before its activation)."""
    model = residual_model(node("Relu", ["c"], ["r"]), extra=[node("Add", ["r", "y"], ["s"])])
    graph, records = apply(model, FuseActivation(), FuseResidualAdd(), explain=True)
    assert ops(graph) == {"Add": 1, "com.mopt.FusedConv": 1}
    assert the(graph, "com.mopt.FusedConv").attr("activation") == "Relu"
    assert "FuseResidualAdd at 's': not applied: the convolution already applies an activation before the addition" in records[0].details
    assert_outputs_unchanged(model, graph, level=2)


def test_second_residual_is_not_fused() -> None:
    """Add(Add(Conv, y), z): the first addition fuses, the second stays."""
    model = make_model(
        [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Add", ["c", "y"], ["s1"]), node("Add", ["s1", "z"], ["s"])],
        {"x": X, "y": OUT, "z": OUT},
        ["s"],
        {"w": Weights(0).normal(4, 3, 3, 3)},
    )
    graph, records = apply(model, FuseResidualAdd(), explain=True)
    assert ops(graph) == {"Add": 1, "com.mopt.FusedConv": 1}
    assert the(graph, "com.mopt.FusedConv").inputs[3] is graph.inputs[1]
    assert "FuseResidualAdd at 's': not applied: the convolution already adds a residual" in records[0].details
    assert_outputs_unchanged(model, graph, level=2)


def test_residual_shape_unknown_is_not_fused() -> None:
    """Without shape information (a dimension unknown) equality cannot be proven."""
    model = residual_model(node("Add", ["c", "y"], ["s"]))
    del model.graph.input[1].type.tensor_type.shape.dim[:]
    model.graph.input[1].type.tensor_type.ClearField("shape")
    graph, records = apply(model, FuseResidualAdd(), explain=True)
    assert ops(graph) == {"Add": 1, "Conv": 1}
    assert records[0].details == [
        "FuseResidualAdd at 's': not applied: shapes (2, 4, 6, 6) and None are not known to be equal (no broadcasting)"
    ]
    feeds = {"x": Weights(3).normal(*X), "y": Weights(4).normal(*OUT)}
    assert_outputs_unchanged(model, graph, level=2, feeds=feeds)


def test_residual_is_a_constant() -> None:
    """A constant of the conv output's shape is a residual like any other."""
    w = Weights(2)
    model = make_model(
        [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Add", ["k", "c"], ["s"])],
        {"x": X},
        ["s"],
        {"w": w.normal(4, 3, 3, 3), "k": w.normal(*OUT)},
    )
    graph, _ = apply(model, FuseResidualAdd())
    fused = the(graph, "com.mopt.FusedConv")
    assert fused.inputs[3] is not None
    assert fused.inputs[3].is_const
    assert_outputs_unchanged(model, graph, level=2)
    assert np.asarray(fused.inputs[3].const).shape == tuple(OUT)
