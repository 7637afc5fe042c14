"""GroupNormalization (group_norm_ops.cc) against onnx.reference: opset 21 (scale and bias per
channel) and opset 18 (per group), odd group sizes, 1-D to 3-D spatial shapes, large offsets,
float64/16, an empty batch, and channels the groups do not divide as a clear error.
MeanVarianceNormalization (the same file) over its default and other axes, likewise."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.assert_close import assert_close
from mopt.testing.reference import run_reference, single_op_model

from .helpers import check_op
from .native import check_native

OPS_COVERED = ["GroupNormalization", "MeanVarianceNormalization"]


@pytest.mark.parametrize(
    ("shape", "groups"),
    [((1, 1, 1), 1), ((2, 6, 7), 3), ((1, 4, 17), 4), ((3, 6, 5, 7), 2), ((1, 8, 3, 4, 5), 8), ((2, 32, 33, 9), 8)],
    ids=str,
)
@pytest.mark.parametrize("opset", [18, 21])
def test_group_norm(shape: tuple, groups: int, opset: int, isa: str) -> None:
    c = shape[1]
    n = c if opset >= 21 else groups
    x = random_input(shape, np.float32, seed=1, low=-3, high=5)
    s = random_input((n,), np.float32, seed=2)
    b = random_input((n,), np.float32, seed=3)
    ins = {"x": x, "s": s, "b": b}
    attrs = {"num_groups": groups, "epsilon": 1e-3}
    if opset >= 21:
        check_op("GroupNormalization", ins, attrs, isa=isa, opset=opset, rtol=1e-4, atol=1e-5)
        return
    # the deprecated opset-18 schema infers no output type: give it, and compare by hand
    m = single_op_model("GroupNormalization", ins, attrs, opset=opset, output_dtypes=[TensorProto.FLOAT])
    want = run_reference(m, ins)
    assert not mopt.compile(m, 0, isa=isa).fallback_nodes
    got = mopt.Session(m, isa=isa, fallback=False).run(None, ins)
    assert_close(got[0], want[0], rtol=1e-4, atol=1e-5, context=f"GroupNormalization-18 {shape} {groups} {isa}")


def test_group_norm_large_offset(isa: str) -> None:
    # onnx.reference computes the variance as E[x^2] - E[x]^2 in float32, which loses most digits
    # here; the kernel's two passes in double do not, so the oracle is numpy in float64
    x = random_input((2, 4, 50), np.float32, seed=4) + np.float32(1000)
    s, b = random_input((4,), np.float32, seed=5), random_input((4,), np.float32, seed=6)
    g = x.astype(np.float64).reshape(2, 2, -1)
    want = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    want = (want * s[None, :, None] + b[None, :, None]).astype(np.float32)
    check_native("GroupNormalization", {"x": x, "s": s, "b": b}, [want], {"num_groups": 2}, isa=isa, opset=21, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_group_norm_dtypes(dtype: type, isa: str) -> None:
    x = random_input((2, 6, 5), np.dtype(dtype), seed=5)
    s = random_input((6,), np.dtype(dtype), seed=6)
    b = random_input((6,), np.dtype(dtype), seed=7)
    tol = 1e-2 if dtype == np.float16 else 1e-6  # the reference stashes float64 statistics as float32
    check_op("GroupNormalization", {"x": x, "s": s, "b": b}, {"num_groups": 3}, isa=isa, opset=21, rtol=tol, atol=tol)


def test_group_norm_empty_batch(isa: str) -> None:
    x = np.zeros((0, 4, 3), np.float32)
    s, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    m = single_op_model("GroupNormalization", {"x": x, "s": s, "b": b}, {"num_groups": 2}, opset=21)
    got = mopt.Session(m, isa=isa, fallback=False).run(None, {"x": x, "s": s, "b": b})
    assert got[0].shape == (0, 4, 3)


def test_group_norm_groups_not_dividing_is_an_error() -> None:
    ins = {"x": np.ones((1, 6, 4), np.float32), "s": np.ones(6, np.float32), "b": np.zeros(6, np.float32)}
    m = single_op_model("GroupNormalization", ins, {"num_groups": 4}, opset=21, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="GroupNormalization.*num_groups|num_groups"):
        mopt.Session(cm, fallback=False).run(None, ins)


def test_group_norm_chain_is_typed_and_native(isa: str) -> None:
    """onnx's shape inference types no GroupNormalization output; the frontend does, so a chain of
    them (a diffusion model's blocks) and the ops between them all run natively."""

    nodes, prev = [], "x"
    for i in range(12):
        nodes.append(helper.make_node("GroupNormalization", [prev, "s", "b"], [f"g{i}"], num_groups=2))
        nodes.append(helper.make_node("Sigmoid", [f"g{i}"], [f"a{i}"]))
        prev = f"a{i}"
    x = random_input((2, 4, 5, 3), np.float32, seed=8)
    s, b = random_input((4,), np.float32, seed=9), random_input((4,), np.float32, seed=10)
    g = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(s, "s"), numpy_helper.from_array(b, "b")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 8
    cm = mopt.compile(m, 2, isa=isa)
    assert not cm.fallback_nodes, cm.fallback_nodes[0].reason
    got = mopt.Session(cm, isa=isa, fallback=False).run(None, {"x": x})
    assert_close(got[0], run_reference(m, {"x": x})[0], rtol=1e-4, atol=1e-5, context=f"chain {isa}")


@pytest.mark.parametrize(("shape", "axes"), [
    ((2, 3, 4, 5), None), ((1, 7, 1, 17), None), ((2, 3, 4, 5), [1]), ((2, 3, 4, 5), [0, 1, 2, 3]),
    ((3, 5, 7), [-1]), ((2, 3, 4, 5, 6), [2, 3, 4]), ((17,), [0]),
], ids=str)
def test_mean_variance_normalization(shape: tuple, axes: list | None, isa: str) -> None:
    x = random_input(shape, np.float32, seed=11, low=-2, high=3)
    attrs = {} if axes is None else {"axes": axes}
    check_op("MeanVarianceNormalization", {"x": x}, attrs, isa=isa, rtol=1e-4, atol=1e-4)


def test_mean_variance_normalization_float64_and_constant_data(isa: str) -> None:
    # onnx.reference runs the function body, whose float32 epsilon cannot add to float64: numpy here
    x = random_input((2, 3, 4, 5), np.float64, seed=12)
    mean = x.mean((0, 2, 3), keepdims=True)
    want = (x - mean) / (np.sqrt(((x - mean) ** 2).mean((0, 2, 3), keepdims=True)) + 1e-9)
    check_native("MeanVarianceNormalization", {"x": x}, [want], isa=isa, rtol=1e-12, atol=1e-12)
    # constant groups: zero, not NaN (the function body's E[X^2] - E[X]^2 may round below zero)
    c = np.full((1, 2, 3, 3), 0.1, np.float32)
    check_native("MeanVarianceNormalization", {"x": c}, [np.zeros_like(c)], isa=isa, rtol=0, atol=1e-6)


def test_mean_variance_normalization_empty(isa: str) -> None:
    x = np.zeros((0, 3, 2, 2), np.float32)
    check_native("MeanVarianceNormalization", {"x": x}, [x], isa=isa)


def test_mean_variance_normalization_repeated_axis_is_an_error() -> None:
    x = np.ones((2, 3, 4), np.float32)
    m = single_op_model("MeanVarianceNormalization", {"x": x}, {"axes": [1, 1]}, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="MeanVarianceNormalization.*repeated"):
        mopt.Session(cm, fallback=False).run(None, {"x": x})
