"""BatchNormalization (inference form), Softmax and LogSoftmax against onnx.reference, every ISA,
odd channel counts and axis lengths (1, 7, 17, 1000+), every axis, extreme values."""

from __future__ import annotations

import numpy as np
import pytest

from mopt.testing.random_inputs import random_input

from .helpers import check_op
from .native import check_fused, check_native, graph_model

OPS_COVERED = ["BatchNormalization", "com.mopt.FusedBatchNormalization", "LayerNormalization", "Softmax", "LogSoftmax"]


def bn_inputs(shape: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    c = shape[1]
    return {
        "x": random_input(shape, np.float32, seed=seed, low=-3, high=3),
        "scale": random_input((c,), np.float32, seed=seed + 1, low=-2, high=2),
        "bias": random_input((c,), np.float32, seed=seed + 2),
        "mean": random_input((c,), np.float32, seed=seed + 3),
        "var": random_input((c,), np.float32, seed=seed + 4, low=0.1, high=3),
    }


@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (1, 17, 7, 7), (3, 5, 1, 1), (1, 3, 1031), (2, 4, 3, 5, 2), (0, 3, 4, 4)], ids=str)
@pytest.mark.parametrize("const_params", [True, False], ids=["const", "input"])
def test_batchnorm(shape: tuple[int, ...], const_params: bool, isa: str) -> None:
    consts = ["scale", "bias", "mean", "var"] if const_params else []
    check_op("BatchNormalization", bn_inputs(shape, 1), {"epsilon": 1e-3}, isa=isa, consts=consts, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "HardSwish"])
@pytest.mark.parametrize("shape", [(1, 7, 17, 13), (2, 3, 1031), (1, 16, 1, 1)], ids=str)
def test_fused_batchnorm_activation(shape: tuple[int, ...], act: str, isa: str) -> None:
    """com.mopt.FusedBatchNormalization (-O3): the activation applied to each channel as it is written;
    the input is a sum, so the normalization has no layer before it to fold into."""
    i = bn_inputs(shape, 3)
    i["x2"] = random_input(shape, np.float32, seed=9)
    from onnx import helper

    nodes = [
        helper.make_node("Add", ["x", "x2"], ["s"]),
        helper.make_node("BatchNormalization", ["s", "scale", "bias", "mean", "var"], ["b"], epsilon=1e-3),
        helper.make_node(act, ["b"], ["y"]),
    ]
    model = graph_model(nodes, i, ["y"], consts=["scale", "bias", "mean", "var"])
    check_fused(model, {"x": i["x"], "x2": i["x2"]}, "com.mopt.FusedBatchNormalization", isa=isa, level=3, rtol=1e-5, atol=1e-5)


def np_batchnorm(i: dict[str, np.ndarray], eps: float) -> np.ndarray:
    shape = (1, -1) + (1,) * (i["x"].ndim - 2)
    p = {k: v.astype(np.float64).reshape(shape) for k, v in i.items() if k != "x"}
    y = (i["x"] - p["mean"]) / np.sqrt(p["var"] + eps) * p["scale"] + p["bias"]
    return y.astype(np.float32)


def test_batchnorm_opset9_and_default_epsilon(isa: str) -> None:
    # onnx.reference's BatchNormalization-9 disagrees with the spec and ONNX Runtime: numpy is the oracle
    i = bn_inputs((2, 6, 5, 5), 7)
    check_native(
        "BatchNormalization", i, [np_batchnorm(i, 1e-5)], isa=isa, opset=9, consts=["scale", "bias", "mean", "var"], rtol=1e-5, atol=1e-5
    )


SOFTMAX_SHAPES = [
    ((1,), 0),
    ((7,), -1),
    ((3, 17), 1),
    ((2, 1031), -1),
    ((4, 5, 6), 1),
    ((4, 5, 6), 0),
    ((2, 3, 1, 9), 2),
    ((0, 5), 1),
    ((5, 1), 1),
]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize(("shape", "axis"), SOFTMAX_SHAPES, ids=str)
def test_softmax(op: str, shape: tuple[int, ...], axis: int, isa: str) -> None:
    x = random_input(shape, np.float32, seed=3, low=-10, high=10)
    check_op(op, {"x": x}, {"axis": axis}, isa=isa, rtol=2e-5, atol=2e-6)


def np_softmax(op: str, x2d: np.ndarray) -> np.ndarray:
    x = x2d.astype(np.float64)
    z = x - x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    return (z - lse if op == "LogSoftmax" else np.exp(z - lse)).astype(np.float32)


# onnx.reference is not the oracle below: it normalises over one axis at opset 11 (the spec and
# ONNX Runtime flatten every axis from `axis` on) and computes LogSoftmax as log(softmax), -inf
# where the softmax underflows
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_opset11_flattens_trailing_axes(op: str, isa: str) -> None:
    x = random_input((2, 3, 4, 5), np.float32, seed=4, low=-5, high=5)
    want = np_softmax(op, x.reshape(2, 60)).reshape(x.shape)
    check_native(op, {"x": x}, [want], {"axis": 1}, isa=isa, opset=11, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_large_and_equal_logits(op: str, isa: str) -> None:
    x = np.array([[1000.0, 1000.0, -1000.0, 999.0, 0.0] * 4, [-80.0] * 20, [3e38, 3e38] + [0.0] * 18], np.float32)
    check_native(op, {"x": x}, [np_softmax(op, x)], {"axis": -1}, isa=isa, rtol=2e-5, atol=2e-6)


LAYERNORM = [((7,), -1), ((3, 17), -1), ((2, 5, 1031), -1), ((2, 3, 4, 5), 2), ((2, 3, 4, 5), 1), ((4, 6), 0), ((0, 8), -1), ((3, 1), -1)]


@pytest.mark.parametrize(("shape", "axis"), LAYERNORM, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_layernorm(shape: tuple[int, ...], axis: int, bias: bool, isa: str) -> None:
    norm = shape[axis:]
    x = random_input(shape, np.float32, seed=5, low=-4, high=4)
    ins = {"x": x, "scale": random_input(norm, np.float32, seed=6, low=0.5, high=1.5)}
    if bias:
        ins["b"] = random_input(norm, np.float32, seed=7)
    check_op("LayerNormalization", ins, {"axis": axis, "epsilon": 1e-5}, isa=isa, opset=17, consts=["scale", "b"], rtol=1e-5, atol=2e-5)


def test_layernorm_mean_and_inv_std_outputs(isa: str) -> None:
    # a large offset: float32 one-pass statistics (and onnx.reference) lose digits; numpy in float64 is the oracle
    x = (random_input((2, 3, 33), np.float32, seed=8, low=-2, high=2) + 1000.0).astype(np.float32)
    ins = {"x": x, "scale": np.ones(33, np.float32), "b": np.zeros(33, np.float32)}
    xd = x.astype(np.float64)
    mean = xd.mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(xd.var(axis=-1, keepdims=True) + 1e-5)
    want = [((xd - mean) * inv).astype(np.float32), mean.astype(np.float32), inv.astype(np.float32)]
    check_native("LayerNormalization", ins, want, {"axis": -1}, isa=isa, opset=17, rtol=1e-5, atol=2e-5)
