"""The typed reductions of reduce_ops.cc against onnx.reference: ReduceL1, L2, LogSum, LogSumExp, Prod,
SumSquare of the float types, and ReduceSum/Mean/Max/Min/Prod of float64, float16, the integer types
(wrapping like numpy) and bool. Axes as attribute (opset 13) and input (opset 18), keepdims,
noop_with_empty_axes, empty reductions, NaN/inf, and bad axes that must be clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op
from .native import check_native

NEW = ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ReduceProd"]
OPS_COVERED = NEW
ALL = [*NEW, "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"]
FLOATS = [np.float32, np.float64, np.float16]
INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
CASES = [  # shape, axes
    ((7,), None),
    ((3, 17), [1]),
    ((3, 17), [0]),
    ((2, 5, 33), [0, 2]),
    ((2, 5, 33), [-2]),
    ((1031,), [0]),
    ((4, 1, 3), [1]),
    ((), None),
    ((0, 3), [0]),
    ((3, 0), [0]),
]


def name(d: object) -> str:
    return np.dtype(d).name  # type: ignore[call-overload]


def tol(dtype: object) -> dict:
    return {"rtol": 3e-3, "atol": 3e-3} if np.dtype(dtype) == np.float16 else {"rtol": 1e-5, "atol": 1e-6}  # type: ignore[call-overload]


def data(op: str, shape: tuple, dtype: object, seed: int = 0) -> np.ndarray:
    d = np.dtype(dtype)  # type: ignore[call-overload]
    if op in ("ReduceLogSum",):
        return random_input(shape, d, seed=seed, low=0.1, high=2.0)
    if op == "ReduceProd" and d.kind == "f":
        return random_input(shape, d, seed=seed, low=0.5, high=1.5)
    if d.kind in "iu":
        return random_input(shape, d, seed=seed, low=0 if d.kind == "u" else -60, high=60)
    return random_input(shape, d, seed=seed, low=-2.0, high=2.0)


def run(op: str, x: np.ndarray, axes: list | None, keepdims: int, isa: str, **kw: object) -> None:
    inputs = {"x": x, "axes": None if axes is None else np.array(axes, np.int64)}
    check_op(op, inputs, {"keepdims": keepdims}, isa=isa, consts=["axes"], **tol(x.dtype), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize(("shape", "axes"), CASES, ids=str)
@pytest.mark.parametrize("op", NEW)
def test_new_reductions_float32(op: str, shape: tuple, axes: list | None, keepdims: int, isa: str) -> None:
    if op == "ReduceLogSumExp" and shape == ():
        pytest.skip("onnx.reference's ReduceLogSumExp fails on a rank-0 input")
    run(op, data(op, shape, np.float32), axes, keepdims, isa)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=name)
@pytest.mark.parametrize("op", ALL)
def test_other_float_types(op: str, dtype: type, isa: str) -> None:
    run(op, data(op, (3, 4, 17), dtype), [0, 2], 1, isa)
    run(op, data(op, (5, 7), dtype, seed=1), None, 0, isa)


@pytest.mark.parametrize("dtype", INTS, ids=name)
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceProd", "ReduceMax", "ReduceMin"])
def test_integer_types_wrap(op: str, dtype: type, isa: str) -> None:
    run(op, data(op, (6, 33), dtype), [1], 0, isa)
    run(op, data(op, (2, 3, 5), dtype, seed=2), [0, 2], 1, isa)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_bool(op: str, isa: str) -> None:
    x = random_input((4, 9), np.bool_, seed=3)
    x[0] = True
    x[1] = False
    run(op, x, [1], 1, isa)
    run(op, x, None, 0, isa)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd"])
@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_], ids=name)
def test_empty_integer_and_bool(op: str, dtype: type, isa: str) -> None:
    if dtype == np.bool_ and op in ("ReduceSum", "ReduceProd"):
        pytest.skip("no bool Sum/Prod")
    run(op, np.zeros((0, 4), dtype), [0], 1, isa)


@pytest.mark.parametrize("op", ALL)
def test_special_values(op: str, isa: str) -> None:
    x = np.array([[1.0, np.nan, 2.0], [np.inf, 1.0, 0.5], [-np.inf, 2.0, 3.0], [np.inf, -np.inf, 1.0]], np.float64)
    with np.errstate(all="ignore"):
        run(op, x, [1], 0, isa)


def test_log_sum_exp_is_shifted_so_large_values_do_not_overflow(isa: str) -> None:
    x = np.array([[1000.0, 1000.5, 999.0], [-1000.0, -1001.0, -999.5]], np.float32)
    run("ReduceLogSumExp", x, [1], 1, isa)


@pytest.mark.parametrize("op", ["ReduceL2", "ReduceProd"])
def test_axes_attribute_opset13(op: str, isa: str) -> None:
    x = data(op, (3, 5, 7), np.float32)
    check_op(op, {"x": x}, {"axes": [0, -1], "keepdims": 0}, isa=isa, opset=13)


@pytest.mark.parametrize("op", ["ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceProd"])
def test_noop_with_empty_axes(op: str, isa: str) -> None:
    # the spec: "the output tensor would be equivalent to input tensor"; onnx.reference applies the
    # element-wise part (|x|, x^2, ...) instead, so the expected result here is the input itself
    x = data(op, (3, 5), np.float64)
    empty = np.zeros(0, np.int64)
    check_native(op, {"x": x, "axes": empty}, [x], {"noop_with_empty_axes": 1}, isa=isa, consts=["axes"], rtol=0, atol=0)
    check_op(op, {"x": x, "axes": empty}, {"noop_with_empty_axes": 0}, isa=isa, consts=["axes"])


def test_axes_at_run_time(isa: str) -> None:
    check_op("ReduceL2", {"x": data("ReduceL2", (4, 6), np.float32), "axes": np.array([-1], np.int64)}, isa=isa)


@pytest.mark.parametrize(("axes", "match"), [([2], "out of range"), ([0, 0], "repeated"), ([-3], "out of range")])
def test_bad_axes_are_errors(axes: list, match: str) -> None:
    inputs = {"x": np.ones((2, 3), np.float64), "axes": np.array(axes, np.int64)}
    from onnx import TensorProto

    m = single_op_model("ReduceL1", inputs, output_dtypes=[int(TensorProto.DOUBLE)])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match=match):
        mopt.Session(cm, fallback=False).run(None, inputs)
