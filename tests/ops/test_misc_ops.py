"""The smaller kernels of misc_ops.cc (and Swish of math_ops.cc) against onnx.reference: SwiGLU,
BitCast, LpNormalization, Compress, ReverseSequence, CenterCropPad, TensorScatter, Swish, and Pow/Clip
of the types beyond float32. Several dtypes, empty and odd shapes, and bad input as clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op
from .native import check_native

OPS_COVERED = ["SwiGLU", "BitCast", "LpNormalization", "Compress", "ReverseSequence", "CenterCropPad", "TensorScatter", "Swish", "Pow", "Clip",
               "Unique", "NonZero", "InstanceNormalization"]  # fmt: skip


def name(d: object) -> str:
    return np.dtype(d).name  # type: ignore[call-overload]


def rnd(shape: tuple, dtype: object = np.float32, seed: int = 0, low: float = -3, high: float = 3) -> np.ndarray:
    d = np.dtype(dtype)  # type: ignore[call-overload]
    return random_input(shape, d, seed=seed, low=0 if d.kind == "u" else low, high=high)


def tol(dtype: object) -> dict:
    return {"rtol": 3e-3, "atol": 3e-3} if np.dtype(dtype) == np.float16 else {"rtol": 1e-5, "atol": 1e-6}  # type: ignore[call-overload]


def raises(op: str, inputs: dict, match: str, attrs: dict | None = None, opset: int = 18) -> None:
    m = single_op_model(op, inputs, attrs, opset=opset, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes, cm.fallback_nodes[0].reason
    with pytest.raises(mopt.MoptError, match=match):
        mopt.Session(cm, fallback=False).run(None, inputs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=name)
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 1031)], ids=str)
def test_swish_and_swiglu(shape: tuple, dtype: type, isa: str) -> None:
    for alpha in (1.0, 0.5):
        check_op("Swish", {"x": rnd(shape, dtype)}, {"alpha": alpha}, isa=isa, opset=24, **tol(dtype))
        check_op("SwiGLU", {"a": rnd(shape, dtype), "b": rnd(shape, dtype, seed=1)}, {"alpha": alpha}, isa=isa, opset=28, **tol(dtype))


def test_swiglu_shapes_must_agree() -> None:
    raises("SwiGLU", {"a": np.ones((2, 3), np.float32), "b": np.ones((3,), np.float32)}, "one shape", opset=28)


@pytest.mark.parametrize(("src", "to"), [(np.float32, TensorProto.INT32), (np.int64, TensorProto.DOUBLE), (np.float16, TensorProto.UINT16),
                                         (np.uint8, TensorProto.INT8), (np.int32, TensorProto.UINT32)])  # fmt: skip
def test_bitcast(src: type, to: int, isa: str) -> None:
    check_op("BitCast", {"x": rnd((3, 7), src)}, {"to": to}, isa=isa, opset=26, rtol=0, atol=0)


def test_bitcast_width_change_is_an_error() -> None:
    m = single_op_model("BitCast", {"x": np.ones(3, np.float32)}, {"to": TensorProto.DOUBLE}, opset=26, output_dtypes=[TensorProto.DOUBLE])
    with pytest.raises(mopt.MoptError, match="width"):
        mopt.Session(mopt.compile(m, 0), fallback=False).run(None, {"x": np.ones(3, np.float32)})


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=name)
def test_lp_normalization(p: int, axis: int, dtype: type, isa: str) -> None:
    x = rnd((4, 17, 3), dtype, low=0.1, high=3)  # positive: onnx.reference sums x^p rather than |x|^p
    x[1, :, :] = 0  # a zero norm gives zeros
    check_op("LpNormalization", {"x": x}, {"p": p, "axis": axis}, isa=isa, **tol(dtype))


def test_lp_normalization_l1_uses_absolute_values(isa: str) -> None:
    x = np.array([[1.0, -3.0], [-2.0, 2.0]], np.float32)
    check_native("LpNormalization", {"x": x}, [x / np.abs(x).sum(axis=1, keepdims=True)], {"p": 1}, isa=isa)


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_], ids=name)
def test_compress(axis: int | None, dtype: type, isa: str) -> None:
    x = rnd((4, 5), dtype) if dtype != np.bool_ else random_input((4, 5), np.bool_)
    n = 20 if axis is None else 4 if axis == 0 else 5
    cond = np.random.default_rng(2).random(n - 1) > 0.4  # shorter than the axis: the rest are dropped
    check_op("Compress", {"x": x, "c": cond}, None if axis is None else {"axis": axis}, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize(("batch_axis", "time_axis"), [(0, 1), (1, 0)])
def test_reverse_sequence(batch_axis: int, time_axis: int, isa: str) -> None:
    shape = (4, 6, 3) if batch_axis == 0 else (6, 4, 3)
    lens = np.array([1, 6, 0, 3], np.int64)
    check_op("ReverseSequence", {"x": rnd(shape), "l": lens}, {"batch_axis": batch_axis, "time_axis": time_axis}, isa=isa, rtol=0, atol=0)


def test_reverse_sequence_length_out_of_range_is_an_error() -> None:
    raises("ReverseSequence", {"x": np.ones((3, 2), np.float32), "l": np.array([1, 4], np.int64)}, "out of range")


@pytest.mark.parametrize(("shape", "to", "axes"), [((5, 6), (3, 8), None), ((4, 7, 2), (7, 4), [0, 1]), ((3, 3), (3, 3), None), ((6,), (1,), [-1]), ((2, 5), (0, 9), None)], ids=str)
def test_center_crop_pad(shape: tuple, to: tuple, axes: list | None, isa: str) -> None:
    check_op("CenterCropPad", {"x": rnd(shape), "s": np.array(to, np.int64)}, None if axes is None else {"axes": axes}, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("axis", [-2, 1, 2])
def test_tensor_scatter(mode: str, axis: int, isa: str) -> None:
    cache = rnd((2, 3, 8, 4))
    ushape = list(cache.shape)
    ushape[axis] = 3
    upd = rnd(tuple(ushape), seed=1)
    limit = cache.shape[axis]
    wi = np.array([limit - 3, 0] if mode == "linear" else [limit - 1, 2], np.int64)
    check_op("TensorScatter", {"c": cache, "u": upd, "w": wi}, {"mode": mode, "axis": axis}, isa=isa, opset=24, rtol=0, atol=0)
    check_op("TensorScatter", {"c": cache, "u": upd}, {"mode": mode, "axis": axis}, isa=isa, opset=24, rtol=0, atol=0)


def test_tensor_scatter_overrun_is_an_error() -> None:
    ins = {"c": np.ones((1, 4, 2), np.float32), "u": np.ones((1, 2, 2), np.float32), "w": np.array([3], np.int64)}
    raises("TensorScatter", ins, "run past", {"axis": 1}, opset=24)


@pytest.mark.parametrize(("base", "exp"), [(np.int32, np.int32), (np.int64, np.int64), (np.int64, np.float32), (np.float64, np.float64),
                                           (np.float16, np.float32), (np.float64, np.int64), (np.uint8, np.uint8)])  # fmt: skip
def test_pow_other_types(base: type, exp: type, isa: str) -> None:
    x = rnd((4, 9), base, low=-5, high=5)
    e = rnd((9,), exp, seed=1, low=0, high=4)
    check_op("Pow", {"x": x, "e": e}, isa=isa, **tol(base))


def test_pow_negative_integer_exponent_is_an_error() -> None:
    m = single_op_model("Pow", {"x": np.ones(2, np.int32), "e": np.array([1, -1], np.int32)})
    with pytest.raises(mopt.MoptError, match="negative integer powers"):
        mopt.Session(mopt.compile(m, 0), fallback=False).run(None, {"x": np.ones(2, np.int32), "e": np.array([1, -1], np.int32)})


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.float64, np.float16], ids=name)
def test_clip_other_types(dtype: type, isa: str) -> None:
    x = rnd((5, 17), dtype, low=-50, high=50)
    lo, hi = np.array(-7 if np.dtype(dtype).kind != "u" else 3, dtype), np.array(20, dtype)
    check_op("Clip", {"x": x, "lo": lo, "hi": hi}, isa=isa, **tol(dtype))
    check_op("Clip", {"x": x, "lo": None, "hi": hi}, isa=isa, **tol(dtype))
    check_op("Clip", {"x": x, "lo": lo}, isa=isa, **tol(dtype))
    check_op("Clip", {"x": x, "lo": hi, "hi": lo}, isa=isa, **tol(dtype))  # min > max: numpy gives max


@pytest.mark.parametrize("sorted_", [1, 0])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int8, np.float64], ids=name)
def test_unique_flat(sorted_: int, dtype: type, isa: str) -> None:
    x = rnd((37,), dtype, low=-5, high=5).round().astype(dtype)  # many repeats (1-D: the reference takes unsorted results along axis 0)
    check_op("Unique", {"x": x}, {"sorted": sorted_}, isa=isa, num_outputs=4, rtol=0, atol=0)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_unique_along_an_axis_sorted(axis: int, isa: str) -> None:
    x = np.array([[1, 0, 0], [1, 0, 0], [2, 3, 4], [0, 5, 1], [2, 3, 4]], np.float32)
    x = np.stack([x, x + 1]) if axis == 0 else x
    check_op("Unique", {"x": x}, {"axis": axis, "sorted": 1}, isa=isa, num_outputs=4, rtol=0, atol=0)


def test_unique_along_axis_unsorted_is_first_occurrence_order(isa: str) -> None:
    # onnx.reference takes the unsorted slices along axis 0 whatever the axis: checked with numpy
    x = np.array([[3, 1, 3, 2], [9, 8, 9, 7]], np.int64)
    want = [np.array([[3, 1, 2], [9, 8, 7]]), np.array([0, 1, 3]), np.array([0, 1, 0, 2]), np.array([2, 1, 1])]
    check_native("Unique", {"x": x}, want, {"axis": 1, "sorted": 0}, isa=isa, rtol=0, atol=0,
                 output_dtypes=[TensorProto.INT64] * 4)  # fmt: skip


def test_unique_nan_and_empty(isa: str) -> None:
    x = np.array([2.0, np.nan, 1.0, np.nan, 2.0], np.float32)
    got = check_native("Unique", {"x": x}, [np.array([1.0, 2.0, np.nan], np.float32)], isa=isa, rtol=0, atol=0)
    assert got[0].shape == (3,)
    check_op("Unique", {"x": np.zeros((0,), np.float32)}, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (0, 3)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_, np.uint8], ids=name)
def test_non_zero(shape: tuple, dtype: type, isa: str) -> None:
    x = random_input(shape, np.bool_, seed=1) if dtype == np.bool_ else rnd(shape, dtype, low=-1, high=1).round().astype(dtype)
    check_op("NonZero", {"x": x}, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 4, 3, 3), (2, 2, 17, 1, 2)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=name)
def test_instance_norm(shape: tuple, dtype: type, isa: str) -> None:
    c = shape[1]
    ins = {"x": rnd(shape, dtype), "s": rnd((c,), dtype, seed=1), "b": rnd((c,), dtype, seed=2)}
    check_op("InstanceNormalization", ins, {"epsilon": 1e-3}, isa=isa, **tol(dtype))
