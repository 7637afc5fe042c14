"""FoldMulIntoConv / FoldAddIntoConv: a constant scale or shift per output channel (or a scalar)
after a Conv goes into its weights and bias; a non-constant operand, a constant that varies over
the spatial axes or the batch, or one that would change the output's shape leaves the graph alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest

from mopt.passes.fusion.conv_affine import FoldAddIntoConv, FoldMulIntoConv, per_channel

from .helpers import Weights, apply, assert_outputs_unchanged, imported_ops, make_model, node, ops, the

C = 4
RULES = {"Mul": FoldMulIntoConv, "Add": FoldAddIntoConv}


def affine_model(
    op: str,
    k_shape: tuple[int, ...],
    *,
    bias: bool = True,
    k_first: bool = False,
    spatial: tuple[int, ...] = (6, 6),
    extra: list[onnx.NodeProto] | None = None,
    outputs: tuple[str, ...] = ("y",),
    k_is_input: bool = False,
    batch: int = 2,
    **conv_attrs: Any,
) -> onnx.ModelProto:
    """Conv (3 -> C channels, 3x3 kernel, same padding) then op(conv, k)."""
    w = Weights(0)
    kernel = (3,) * len(spatial)
    inits = {"w": w.normal(C, 3, *kernel), "k": w.normal(*k_shape)}
    inputs: dict[str, list[int]] = {"x": [batch, 3, *spatial]}
    conv_attrs.setdefault("pads", [1] * (2 * len(spatial)))
    if k_is_input:
        inputs["k"] = list(k_shape)
        del inits["k"]
    conv_in = ["x", "w"]
    if bias:
        inits["b"] = w.normal(C)
        conv_in.append("b")
    ab = ["k", "c"] if k_first else ["c", "k"]
    return make_model([node("Conv", conv_in, ["c"], **conv_attrs), node(op, ab, ["y"]), *(extra or [])], inputs, list(outputs), inits)


FOLDED = {
    # name: (k shape, spatial rank, bias, k first)
    "C11": ((C, 1, 1), 2, True, False),
    "1C11": ((1, C, 1, 1), 2, True, False),
    "scalar": ((), 2, True, False),
    "one-element": ((1,), 2, True, False),
    "1111": ((1, 1, 1, 1), 2, True, False),
    "k-first": ((C, 1, 1), 2, True, True),
    "no-bias": ((1, C, 1, 1), 2, False, False),
    "conv1d-C1": ((C, 1), 1, True, False),
    "conv1d-scalar-first": ((), 1, False, True),
}


@pytest.mark.parametrize("op", ["Mul", "Add"])
@pytest.mark.parametrize("case", FOLDED, ids=list(FOLDED))
def test_per_channel_constant_folds_into_conv(op: str, case: str) -> None:
    k_shape, rank, bias, k_first = FOLDED[case]
    spatial = (5, 6)[:rank]
    model = affine_model(op, k_shape, bias=bias, k_first=k_first, spatial=spatial, strides=[2] * rank)
    graph, records = apply(model, RULES[op]())
    assert imported_ops(model) == {"Conv": 1, op: 1}
    assert ops(graph) == {"Conv": 1}
    assert records[0].details == [f"{RULES[op].__name__}: 1x"]
    conv = the(graph, "Conv")
    assert conv.attr("pads") == [1] * (2 * rank), "the Conv's attributes are kept"
    assert conv.attr("strides") == [2] * rank
    assert conv.outputs[0].name == "y"
    w_before = next(t for t in model.graph.initializer if t.name == "w")
    w = conv.inputs[1]
    assert w is not None
    assert w.is_const
    assert w.const.dtype == np.float32
    assert w.const.shape == tuple(w_before.dims)
    b = conv.inputs[2] if len(conv.inputs) > 2 else None
    if op == "Add" or bias:
        assert b is not None
        assert b.is_const
        assert b.const.shape == (C,)
        assert b.const.dtype == np.float32
    else:
        assert b is None, "Mul into a conv without bias needs no bias"
    if op == "Add":
        np.testing.assert_array_equal(w.const, onnx.numpy_helper.to_array(w_before), err_msg="Add leaves the weights alone")
    assert_outputs_unchanged(model, graph, level=1)


def test_mul_then_add_both_fold() -> None:
    """Conv -> Mul(scale) -> Add(shift): the scale goes into w, then the shift becomes the bias."""
    w = Weights(1)
    weights, scale, shift = w.normal(C, 3, 3, 3), w.normal(C, 1, 1), w.normal(1, C, 1, 1)
    model = make_model(
        [node("Conv", ["x", "w"], ["c"]), node("Mul", ["c", "s"], ["m"]), node("Add", ["t", "m"], ["y"])],
        {"x": [1, 3, 6, 6]},
        ["y"],
        {"w": weights, "s": scale, "t": shift},
    )
    graph, records = apply(model, FoldMulIntoConv(), FoldAddIntoConv())
    assert ops(graph) == {"Conv": 1}
    assert records[0].details == ["FoldMulIntoConv: 1x", "FoldAddIntoConv: 1x"]
    conv = the(graph, "Conv")
    assert conv.inputs[1] is not None
    assert conv.inputs[2] is not None
    np.testing.assert_allclose(conv.inputs[1].const, weights * scale.reshape(C, 1, 1, 1), rtol=1e-6)
    np.testing.assert_array_equal(conv.inputs[2].const, shift.reshape(C))
    assert_outputs_unchanged(model, graph, level=1)


def test_grouped_conv_scale() -> None:
    model = affine_model("Mul", (C, 1, 1), group=2)
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(Weights(3).normal(C, 3, 3, 3), "w"))
    # group=2 needs 2 input channels per group: x gets 6 channels
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 6
    graph, _ = apply(model, FoldMulIntoConv())
    assert ops(graph) == {"Conv": 1}
    assert the(graph, "Conv").attr("group") == 2
    assert_outputs_unchanged(model, graph, level=1)


# -- negative cases: the graph stays as it was --------------------------------------------------
NOT_FOLDED = {
    # name: (kwargs of affine_model, reason shown by --explain or None when the pattern does not match)
    "k-is-an-input": ({"k_shape": (C, 1, 1), "k_is_input": True}, None),
    "per-width-not-per-channel": ({"k_shape": (C,), "spatial": (6, C)}, "constant of shape (4,) is not per-channel"),
    "per-spatial": ({"k_shape": (1, 1, 6, 6)}, "constant of shape (1, 1, 6, 6) is not per-channel"),
    "per-height": ({"k_shape": (1, C, 1), "spatial": (C, 6)}, "constant of shape (1, 4, 1) is not per-channel"),
    "per-batch": ({"k_shape": (2, C, 1, 1)}, "constant of shape (2, 4, 1, 1) is not per-channel"),
    "widens-the-batch": ({"k_shape": (3, 1, 1, 1), "batch": 1}, "constant of shape (3, 1, 1, 1) is not per-channel"),
    "adds-a-dimension": ({"k_shape": (1, 1, C, 1, 1)}, "constant of shape (1, 1, 4, 1, 1) is not per-channel"),
    "full-output-shape": ({"k_shape": (2, C, 6, 6)}, "constant of shape (2, 4, 6, 6) is not per-channel"),
    "conv-output-used-twice": (
        {"k_shape": (C, 1, 1), "extra": [node("Relu", ["c"], ["r"])], "outputs": ("y", "r")},
        "Conv output feeds other nodes",
    ),
    "conv-output-is-a-graph-output": ({"k_shape": (C, 1, 1), "outputs": ("y", "c")}, "Conv output feeds other nodes"),
}


@pytest.mark.parametrize("op", ["Mul", "Add"])
@pytest.mark.parametrize("case", NOT_FOLDED, ids=list(NOT_FOLDED))
def test_constant_not_folded_into_conv(op: str, case: str) -> None:
    kwargs, reason = NOT_FOLDED[case]
    model = affine_model(op, **kwargs)
    before = imported_ops(model)
    graph, records = apply(model, RULES[op](), explain=True)
    assert ops(graph) == before
    assert not records[0].changed
    if reason is None:
        assert records[0].details == []
    else:
        assert records[0].details == [f"{RULES[op].__name__} at 'y': not applied: {reason}"]
    assert_outputs_unchanged(model, graph, level=1)


def test_conv_with_runtime_bias_is_not_folded() -> None:
    """The bias must be a constant to fold the shift into it."""
    w = Weights(2)
    model = make_model(
        [node("Conv", ["x", "w", "b"], ["c"]), node("Add", ["c", "k"], ["y"])],
        {"x": [1, 3, 5, 5], "b": [C]},
        ["y"],
        {"w": w.normal(C, 3, 3, 3), "k": w.normal(C, 1, 1)},
    )
    graph, records = apply(model, FoldAddIntoConv(), explain=True)
    assert ops(graph) == {"Add": 1, "Conv": 1}
    assert records[0].details == []
    assert_outputs_unchanged(model, graph, level=1)


@pytest.mark.parametrize(
    ("shape", "rank", "want"),
    [
        ((), 4, [7, 7, 7, 7]),
        ((C, 1, 1), 4, [7, 8, 9, 10]),
        ((1, C, 1, 1), 4, [7, 8, 9, 10]),
        ((1, 1), 3, [7, 7, 7, 7]),
        ((C,), 4, None),
        ((1, C, 1, 1, 1), 4, None),
        ((C, 2), 3, None),
        ((1, 3, 1, 1), 4, None),
    ],
)
def test_per_channel_helper(shape: tuple[int, ...], rank: int, want: list[float] | None) -> None:
    arr = np.arange(7, 7 + int(np.prod(shape)), dtype=np.float32).reshape(shape) if shape else np.array(7, np.float32)
    got = per_channel(arr, C, rank)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert got.tolist() == want
