"""NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss and RMSNormalization (loss_ops.cc) against
onnx.reference: every reduction, weights, ignore_index (in range and negative), extra spatial
dimensions, the log_prob output, float32/64/16, and targets out of range as clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op
from .native import check_fused, check_native, graph_model

OPS_COVERED = ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", "RMSNormalization", "com.mopt.RMSNormalization"]
LOSSES = ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"]


def name(d: object) -> str:
    return np.dtype(d).name  # type: ignore[call-overload]


def tol(dtype: object) -> dict:
    return {"rtol": 3e-3, "atol": 3e-3} if np.dtype(dtype) == np.float16 else {"rtol": 1e-5, "atol": 1e-6}  # type: ignore[call-overload]


def targets(shape: tuple, c: int, seed: int = 1, ignore: int | None = None) -> np.ndarray:
    t = np.random.default_rng(seed).integers(0, c, shape).astype(np.int64)
    if ignore is not None and t.size:
        t.flat[:: max(1, t.size // 3)] = ignore
    return t


@pytest.mark.parametrize("ignore", [None, 2, -1])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 7), (2, 3, 4, 5), (17, 1), (1, 6)], ids=str)
@pytest.mark.parametrize("op", LOSSES)
def test_loss(op: str, shape: tuple, reduction: str, weighted: bool, ignore: int | None, isa: str) -> None:
    n, c = shape[0], shape[1]
    x = random_input(shape, np.float32, seed=0, low=-3, high=3)
    if op == "NegativeLogLikelihoodLoss":
        x = -np.abs(x)
    t = targets((n, *shape[2:]), c, ignore=ignore)
    attrs: dict = {"reduction": reduction}
    if ignore is not None:
        attrs["ignore_index"] = ignore
    w = random_input((c,), np.float32, seed=3, low=0.2, high=2) if weighted else None
    if op == "NegativeLogLikelihoodLoss" and ignore == -1 and not weighted and reduction == "mean":
        # onnx.reference divides by every target here (its `ignore_index != -1` test); the spec, and
        # its own SoftmaxCrossEntropyLoss, divide by the targets that are not ignored
        keep = t != ignore
        picked = np.take_along_axis(x, np.where(keep, t, 0)[:, None], axis=1)[:, 0]
        with np.errstate(invalid="ignore"):  # every target ignored: 0 / 0
            want = np.float32(-(picked * keep).sum(dtype=np.float64) / keep.sum())
        check_native(op, {"x": x, "t": t}, [np.array(want)], attrs, isa=isa, rtol=1e-5, atol=1e-5)
        return
    check_op(op, {"x": x, "t": t, "w": w}, attrs, isa=isa, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=name)
@pytest.mark.parametrize("op", LOSSES)
def test_loss_dtypes(op: str, dtype: type, isa: str) -> None:
    x = random_input((4, 3, 5), dtype, seed=0, low=-2, high=0)
    w = random_input((3,), dtype, seed=3, low=0.5, high=1.5)
    check_op(op, {"x": x, "t": targets((4, 5), 3), "w": w}, {"reduction": "mean"}, isa=isa, **tol(dtype))


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_softmax_cross_entropy_log_prob_output(reduction: str, isa: str) -> None:
    x = random_input((3, 6, 4), np.float32, seed=4, low=-5, high=5)
    check_op("SoftmaxCrossEntropyLoss", {"x": x, "t": targets((3, 4), 6)}, {"reduction": reduction}, isa=isa, num_outputs=2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", LOSSES)
def test_target_out_of_range_is_an_error(op: str) -> None:
    inputs = {"x": np.zeros((2, 3), np.float32), "t": np.array([1, 3], np.int64)}
    m = single_op_model(op, inputs, {"reduction": "sum"}, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="out of range"):
        mopt.Session(cm, fallback=False).run(None, inputs)


def test_loss_target_shape_mismatch_is_an_error() -> None:
    inputs = {"x": np.zeros((2, 3, 4), np.float32), "t": np.zeros((2, 5), np.int64)}
    m = single_op_model("NegativeLogLikelihoodLoss", inputs, output_dtypes=[TensorProto.FLOAT])
    with pytest.raises(mopt.MoptError, match="must have shape"):
        mopt.Session(mopt.compile(m, 0), fallback=False).run(None, inputs)


RMS_CASES = [
    ((2, 3, 8), -1, (8,)), ((2, 3, 8), 1, (3, 8)), ((4, 17), 0, (4, 17)), ((5, 1031), -1, (1031,)),
    ((3, 4, 5), -2, (1, 5)), ((0, 4), -1, (4,)),
    # float32 rows: a scalar Scale, leading 1s, a Scale varying over a row axis (not per-row), many rows
    ((1, 1), -1, (1,)), ((7, 1), -1, (1,)), ((6, 40), -1, (1,)), ((2, 3, 8), -1, (1, 1, 8)),
    ((2, 3, 8), -1, (2, 1, 8)), ((300, 64), -1, (64,)), ((2, 7, 17), 1, (7, 17)),
]


@pytest.mark.parametrize(("shape", "axis", "sshape"), RMS_CASES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=name)
def test_rms_norm(shape: tuple, axis: int, sshape: tuple, dtype: type, isa: str) -> None:
    x = random_input(shape, dtype, seed=5, low=-3, high=3)
    s = random_input(sshape, dtype, seed=6, low=0.5, high=2)
    check_op("RMSNormalization", {"x": x, "s": s}, {"axis": axis, "epsilon": 1e-3}, isa=isa, opset=23, **tol(dtype))


def test_rms_norm_scale_that_does_not_broadcast_is_an_error() -> None:
    inputs = {"x": np.ones((2, 4), np.float32), "s": np.ones((3,), np.float32)}
    m = single_op_model("RMSNormalization", inputs, opset=23, output_dtypes=[TensorProto.FLOAT])
    with pytest.raises(mopt.MoptError, match="does not broadcast"):
        mopt.Session(mopt.compile(m, 0), fallback=False).run(None, inputs)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 7, 17), (3, 5, 1031), (1, 128, 64)], ids=str)
def test_fused_rms_norm(shape: tuple, isa: str) -> None:
    """com.mopt.RMSNormalization (-O2), fused from Llama's decomposed RMSNorm below opset 23: the
    float32 rows, against onnx.reference on the decomposed graph."""
    from onnx import helper

    d = shape[-1]
    inputs = {
        "x": random_input(shape, np.float32, seed=7, low=-3, high=3),
        "two": np.array(2.0, np.float32),
        "axes": np.array([-1], np.int64),
        "eps": np.array(1e-6, np.float32),
        "w": random_input((d,), np.float32, seed=8, low=0.5, high=2),
    }
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["x2"]),
        helper.make_node("ReduceMean", ["x2", "axes"], ["ms"], keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["mse"]),
        helper.make_node("Sqrt", ["mse"], ["rms"]),
        helper.make_node("Reciprocal", ["rms"], ["inv"]),
        helper.make_node("Mul", ["x", "inv"], ["n"]),
        helper.make_node("Mul", ["w", "n"], ["y"]),
    ]
    model = graph_model(nodes, inputs, ["y"], consts=["two", "axes", "eps", "w"])
    check_fused(model, {"x": inputs["x"]}, "com.mopt.RMSNormalization", isa=isa, rtol=1e-5, atol=1e-5)
