"""The indexing and rearranging kernels of index_ops.cc against onnx.reference: Split, Trilu,
ArgMax/ArgMin, GatherElements, ScatterElements, ScatterND, Pad, TopK, Hardmax, CumProd, OneHot, EyeLike,
DepthToSpace/SpaceToDepth. Odd and empty shapes, negative axes and indices, every mode and reduction,
several dtypes, NaN and ties, and bad input that must be a clear error rather than a crash."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.ir.dtypes import from_numpy
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op

OPS_COVERED = ["Split", "Trilu", "ArgMax", "ArgMin", "GatherElements", "ScatterElements", "ScatterND", "Pad", "TopK",
               "Hardmax", "CumProd", "OneHot", "EyeLike", "DepthToSpace", "SpaceToDepth"]  # fmt: skip
DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.uint64]


def name(d: object) -> str:
    return np.dtype(d).name  # type: ignore[call-overload]


def rnd(shape: tuple, dtype: object = np.float32, seed: int = 0, low: float = -9, high: float = 9) -> np.ndarray:
    d = np.dtype(dtype)  # type: ignore[call-overload]
    return random_input(shape, d, seed=seed, low=0 if d.kind == "u" else low, high=high)


def i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def exact(op: str, inputs: dict, attrs: dict | None = None, **kw: object) -> list[np.ndarray]:
    return check_op(op, inputs, attrs, rtol=0, atol=0, **kw)  # type: ignore[arg-type]


def raises(op: str, inputs: dict, match: str, attrs: dict | None = None, out: int = TensorProto.FLOAT, n: int = 1) -> None:
    m = single_op_model(op, inputs, attrs, output_dtypes=[out] * n, num_outputs=n)
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes, cm.fallback_nodes[0].reason
    with pytest.raises(mopt.MoptError, match=match):
        mopt.Session(cm, fallback=False).run(None, {k: v for k, v in inputs.items() if v is not None})


# ---- Split ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "axis", "split", "n"),
    [((6, 4), 0, None, 3), ((7, 5), 0, None, 3), ((2, 17), -1, [5, 0, 12], 3), ((3, 0), 1, None, 2), ((1031,), 0, [1000, 31], 2),
     ((4, 6, 3), 1, [1, 2, 3], 3), ((5,), 0, None, 1)],
    ids=str,
)  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.float16], ids=name)
def test_split(shape: tuple, axis: int, split: list | None, n: int, dtype: type, isa: str) -> None:
    attrs: dict = {"axis": axis}
    if split is None:
        attrs["num_outputs"] = n
    x = rnd(shape, dtype) if dtype != np.bool_ else random_input(shape, np.bool_)
    exact("Split", {"x": x, "split": None if split is None else i64(*split)}, attrs, isa=isa, num_outputs=n, consts=["split"])


def test_split_sizes_at_run_time(isa: str) -> None:
    exact("Split", {"x": rnd((9, 2)), "split": i64(2, 7)}, isa=isa, num_outputs=2)


@pytest.mark.parametrize(("split", "match"), [([2, 1], "add up to"), ([5, -1], "negative"), ([1, 1, 2], "3 sizes for 2")])
def test_split_errors(split: list, match: str) -> None:
    raises("Split", {"x": np.ones((4, 2), np.float32), "split": i64(*split)}, match, n=2)


# ---- Trilu ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [None, 0, 1, -1, 3, -4, 100, -100])
@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 7, 4), (1, 1), (0, 3), (17, 17)], ids=str)
def test_trilu(shape: tuple, upper: int, k: int | None, isa: str) -> None:
    exact("Trilu", {"x": rnd(shape), "k": None if k is None else np.array(k, np.int64)}, {"upper": upper}, isa=isa)


def test_trilu_dtypes_and_rank_error(isa: str) -> None:
    for d in [np.int8, np.float64, np.bool_]:
        x = rnd((3, 4), d) if d != np.bool_ else random_input((3, 4), np.bool_)
        exact("Trilu", {"x": x}, isa=isa)
    raises("Trilu", {"x": np.ones(4, np.float32)}, "rank >= 2")


# ---- ArgMax / ArgMin --------------------------------------------------------------------------------------


@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize(("shape", "axis"), [((7,), 0), ((3, 17), 1), ((3, 17), 0), ((2, 5, 33), -2), ((1031,), 0), ((0, 4), 1)], ids=str)
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg(op: str, shape: tuple, axis: int, keepdims: int, last: int, isa: str) -> None:
    x = rnd(shape, np.float32, low=-3, high=3).round()  # many ties
    exact(op, {"x": x}, {"axis": axis, "keepdims": keepdims, "select_last_index": last}, isa=isa)


@pytest.mark.parametrize("dtype", DTYPES, ids=name)
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_dtypes(op: str, dtype: type, isa: str) -> None:
    exact(op, {"x": rnd((4, 9), dtype, low=-3, high=3)}, {"axis": 1, "select_last_index": 1}, isa=isa)
    exact(op, {"x": rnd((4, 9), dtype, low=-3, high=3)}, {"axis": 0}, isa=isa)


@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_nan_wins(op: str, last: int, isa: str) -> None:
    x = np.array([[1, np.nan, 3, np.nan], [2, 2, 1, 1], [np.nan, 0, 0, 5]], np.float32)
    exact(op, {"x": x}, {"axis": 1, "select_last_index": last}, isa=isa)


def test_arg_of_empty_axis_is_an_error() -> None:
    raises("ArgMax", {"x": np.ones((3, 0), np.float32)}, "empty axis", {"axis": 1}, out=TensorProto.INT64)


# ---- GatherElements / ScatterElements / ScatterND ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.float16, np.uint8], ids=name)
@pytest.mark.parametrize(("shape", "ishape", "axis"), [((3, 4), (3, 4), 1), ((3, 4), (2, 4), 0), ((5, 6, 7), (5, 6, 9), 2), ((9,), (20,), 0), ((2, 3), (0, 3), 0)], ids=str)
def test_gather_elements(shape: tuple, ishape: tuple, axis: int, dtype: type, isa: str) -> None:
    dim = shape[axis]
    idx = np.random.default_rng(1).integers(-dim, dim, ishape).astype(np.int64)
    exact("GatherElements", {"x": rnd(shape, dtype), "i": idx}, {"axis": axis}, isa=isa)
    exact("GatherElements", {"x": rnd(shape, dtype), "i": idx.astype(np.int32)}, {"axis": axis}, isa=isa)


@pytest.mark.parametrize("bad", [3, -4])
def test_gather_elements_out_of_range_is_an_error(bad: int) -> None:
    raises("GatherElements", {"x": np.ones((2, 3), np.float32), "i": np.array([[0, bad]], np.int64)}, "out of range", {"axis": 1})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float64, np.float16], ids=name)
def test_scatter_elements(reduction: str, dtype: type, isa: str) -> None:
    x = rnd((4, 5), dtype, low=1, high=4)
    idx = np.array([[1, 3, 1], [0, 0, 4]], np.int64) - np.array([[0, 5, 0], [0, 0, 0]])  # a negative index too
    upd = rnd((2, 3), dtype, seed=2, low=1, high=4)
    exact("ScatterElements", {"x": x, "i": idx, "u": upd}, {"axis": 1, "reduction": reduction}, isa=isa, opset=18)
    if reduction == "none":
        idx0 = np.array([[3, 0, 2, 1, 0]], np.int64)
        exact("ScatterElements", {"x": x, "i": idx0, "u": rnd((1, 5), dtype, seed=3)}, {"axis": 0}, isa=isa)


def test_scatter_elements_errors() -> None:
    x, u = np.ones((2, 3), np.float32), np.ones((1, 2), np.float32)
    raises("ScatterElements", {"x": x, "i": np.array([[0, 3]], np.int64), "u": u}, "out of range", {"axis": 1})
    raises("ScatterElements", {"x": x, "i": np.array([[0, 1]], np.int64), "u": np.ones((2, 2), np.float32)}, "shape of indices", {"axis": 1})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize(
    ("shape", "idx", "ushape"),
    [((4, 4, 4), [[0], [2]], (2, 4, 4)), ((4, 4, 4), [[1, 2], [3, -1]], (2, 4)), ((8,), [[4], [3], [1], [7]], (4,)), ((3, 5), [[[0, 1]], [[2, 4]]], (2, 1))],
    ids=str,
)  # fmt: skip
def test_scatter_nd(shape: tuple, idx: list, ushape: tuple, reduction: str, isa: str) -> None:
    if reduction != "none" and shape == (4, 4, 4) and len(idx[0]) == 1:
        idx = [[0], [0]]  # a repeated index accumulates
    x, u = rnd(shape, np.float32, low=1, high=3), rnd(ushape, np.float32, seed=4, low=1, high=3)
    check_op("ScatterND", {"x": x, "i": np.array(idx, np.int64), "u": u}, {"reduction": reduction}, isa=isa, rtol=1e-6)


def test_scatter_nd_errors() -> None:
    x = np.ones((3, 4), np.float32)
    raises("ScatterND", {"x": x, "i": np.array([[3]], np.int64), "u": np.ones((1, 4), np.float32)}, "out of range")
    raises("ScatterND", {"x": x, "i": np.array([[1]], np.int64), "u": np.ones((1, 3), np.float32)}, "must have shape")
    raises("ScatterND", {"x": x, "i": np.array([[1, 1, 1]], np.int64), "u": np.ones((1,), np.float32)}, "last dimension")


# ---- Pad --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize(
    ("shape", "pads", "axes"),
    [((3, 4), [1, 2, 2, 1], None), ((2, 3, 5), [0, 1, 4, 0, 2, 3], None), ((5,), [7, 9], None), ((1, 4), [0, 0, 0, 3], None),
     ((3, 4, 2), [2, 1, 1, 0], [0, -2]), ((3, 4), [0, 0, 0, 0], None), ((1031,), [3, 1], None)],
    ids=str,
)  # fmt: skip
def test_pad(shape: tuple, pads: list, axes: list | None, mode: str, isa: str) -> None:
    inputs = {"x": rnd(shape), "pads": i64(*pads), "value": np.array(1.5, np.float32), "axes": None if axes is None else i64(*axes)}
    if mode != "constant":
        inputs["value"] = None
    exact("Pad", inputs, {"mode": mode}, isa=isa, consts=["pads", "axes"])


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.float16, np.float64, np.bool_], ids=name)
def test_pad_dtypes(dtype: type, isa: str) -> None:
    x = rnd((3, 5), dtype) if dtype != np.bool_ else random_input((3, 5), np.bool_)
    exact("Pad", {"x": x, "pads": i64(1, 0, 2, 3)}, isa=isa)
    exact("Pad", {"x": x, "pads": i64(1, 0, 2, 3)}, {"mode": "reflect"}, isa=isa)


def test_pad_negative_pads_crop_in_constant_mode(isa: str) -> None:
    from .native import check_native

    x = rnd((4, 6))
    want = np.pad(x[1:, :4], [(0, 2), (1, 0)], constant_values=0)
    check_native("Pad", {"x": x, "pads": i64(-1, 1, 2, -2)}, [want], isa=isa, consts=["pads"], rtol=0, atol=0)


def test_pad_errors() -> None:
    x = np.ones((2, 3), np.float32)
    raises("Pad", {"x": x, "pads": i64(1, 2, 3)}, "pads has 3 values")
    raises("Pad", {"x": x, "pads": i64(-3, 0, 0, 0)}, "remove more")
    raises("Pad", {"x": x, "pads": i64(-1, 0, 1, 0)}, "negative pads", {"mode": "edge"})
    raises("Pad", {"x": np.ones((0, 2), np.float32), "pads": i64(1, 0, 0, 0)}, "empty axis", {"mode": "reflect"})


# ---- TopK, Hardmax ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize(("shape", "axis", "k"), [((7,), 0, 3), ((3, 17), 1, 17), ((3, 17), 0, 2), ((2, 33, 5), -2, 8), ((1031,), 0, 10), ((4, 5), 1, 0)], ids=str)
def test_topk(shape: tuple, axis: int, k: int, largest: int, isa: str) -> None:
    x = rnd(shape, np.float32, low=-4, high=4).round()  # ties: the lower index first
    exact("TopK", {"x": x, "k": i64(k)}, {"axis": axis, "largest": largest}, isa=isa, num_outputs=2)


@pytest.mark.parametrize("dtype", DTYPES, ids=name)
def test_topk_dtypes_and_nan(dtype: type, isa: str) -> None:
    x = rnd((5, 9), dtype, low=-20, high=20)
    if np.dtype(dtype).kind == "f":
        x[0, 3] = x[2, 0] = x[2, 5] = np.nan
    for largest in (0, 1):
        exact("TopK", {"x": x, "k": i64(4)}, {"largest": largest}, isa=isa, num_outputs=2)


def test_topk_k_too_large_is_an_error() -> None:
    m = single_op_model("TopK", {"x": np.ones((2, 3), np.float32), "k": i64(4)}, num_outputs=2, output_dtypes=[TensorProto.FLOAT, TensorProto.INT64])
    cm = mopt.compile(m, 0)
    with pytest.raises(mopt.MoptError, match="K = 4"):
        mopt.Session(cm, fallback=False).run(None, {"x": np.ones((2, 3), np.float32), "k": i64(4)})


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=name)
def test_hardmax(axis: int, dtype: type, isa: str) -> None:
    x = rnd((4, 7, 3), dtype, low=-2, high=2).round()  # ties: the first one
    exact("Hardmax", {"x": x}, {"axis": axis}, isa=isa)


# ---- CumProd, OneHot, EyeLike, DepthToSpace / SpaceToDepth -------------------------------------------------


@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize(("shape", "axis"), [((7,), 0), ((3, 17), 1), ((3, 17), -2), ((2, 0, 3), 1)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64], ids=name)
def test_cumprod(shape: tuple, axis: int, exclusive: int, reverse: int, dtype: type, isa: str) -> None:
    x = rnd(shape, dtype, low=-2, high=2) if np.dtype(dtype).kind == "i" else rnd(shape, dtype, low=0.5, high=1.5)
    check_op("CumProd", {"x": x, "axis": np.array(axis, np.int64)}, {"exclusive": exclusive, "reverse": reverse}, isa=isa, opset=26, rtol=1e-5)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32, np.float32], ids=name)
def test_one_hot(axis: int, idx_dtype: type, isa: str) -> None:
    idx = np.array([[0, 3, -1], [9, -10, 2]], idx_dtype)  # negative wrap; 9 and -10 are out of range: all off
    exact("OneHot", {"i": idx, "depth": np.array(5, np.int64), "v": np.array([2, 7], np.float32)}, {"axis": axis}, isa=isa)
    exact("OneHot", {"i": idx, "depth": np.array(4.0, np.float32), "v": np.array([0, 1], np.int64)}, {"axis": axis}, isa=isa)


@pytest.mark.parametrize("k", [0, 1, -2, 9])
@pytest.mark.parametrize("dtype", [None, TensorProto.INT32, TensorProto.DOUBLE])
def test_eye_like(k: int, dtype: int | None, isa: str) -> None:
    attrs: dict = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    exact("EyeLike", {"x": rnd((4, 6))}, attrs, isa=isa)
    exact("EyeLike", {"x": rnd((5, 3), np.int64)}, attrs, isa=isa)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.float64], ids=name)
def test_depth_space(mode: str, dtype: type, isa: str) -> None:
    exact("DepthToSpace", {"x": rnd((2, 12, 3, 5), dtype)}, {"blocksize": 2, "mode": mode}, isa=isa)
    exact("SpaceToDepth", {"x": rnd((2, 3, 6, 4), dtype)}, {"blocksize": 2, "mode": mode}, isa=isa, opset=25)
    exact("SpaceToDepth", {"x": rnd((1, 2, 3, 3), dtype)}, {"blocksize": 3}, isa=isa)


def test_depth_space_errors() -> None:
    raises("DepthToSpace", {"x": np.ones((1, 6, 2, 2), np.float32)}, "multiple of blocksize", {"blocksize": 2})
    raises("SpaceToDepth", {"x": np.ones((1, 2, 3, 4), np.float32)}, "multiples of blocksize", {"blocksize": 2})
