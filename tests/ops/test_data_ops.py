"""The transformer glue ops against onnx.reference: Slice, Gather, GatherND, Expand, Tile, Where, Cast,
Range, Size, the comparisons and logical ops, IsNaN/IsInf, CumSum, ReduceSum/Mean/Max/Min, Sign, Log,
and Neg/Abs of the integer types. Odd and empty shapes, rank 0, broadcasting, negative axes, every
registered dtype, and the bad shapes and indices that must be clear errors rather than crashes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op

OPS_COVERED = [
    "Slice",
    "Gather",
    "GatherND",
    "Expand",
    "Tile",
    "Where",
    "Cast",
    "Range",
    "Size",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "IsNaN",
    "IsInf",
    "CumSum",
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "Sign",
    "Log",
    "Neg",
    "Abs",
]

NUMERIC = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
# data movement takes any element size: 1, 2, 4, 8 bytes, bool, and one exotic type
MOVE_DTYPES = [np.float32, np.int64, np.uint8, np.bool_, np.float16, np.int16, ml_dtypes.bfloat16]
I64_MAX, I64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def name(d: object) -> str:
    return np.dtype(d).name  # type: ignore[call-overload]


def rnd(shape: tuple[int, ...], dtype: object = np.float32, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    d = np.dtype(dtype)  # type: ignore[call-overload]
    if d == np.dtype(ml_dtypes.bfloat16):
        return random_input(shape, np.float32, seed=seed, low=low, high=high).astype(d)
    return random_input(shape, d, seed=seed, low=low, high=high)


def i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def exact(op: str, inputs: dict, attrs: dict | None = None, **kw: object) -> list[np.ndarray]:
    return check_op(op, inputs, attrs, rtol=0, atol=0, **kw)  # type: ignore[arg-type]


def raises(op: str, inputs: dict, match: str, attrs: dict | None = None, output_dtypes: list[int] | None = None) -> None:
    """The op runs natively and fails with a mopt error naming the problem."""
    m = single_op_model(op, inputs, attrs, output_dtypes=output_dtypes or [int(TensorProto.FLOAT)])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes, cm.fallback_nodes[0].reason
    sess = mopt.Session(cm, fallback=False)
    with pytest.raises(mopt.MoptError, match=match):
        sess.run(None, inputs)


# ---- Slice ------------------------------------------------------------------------------------------------

SLICES = [  # shape, starts, ends, axes, steps
    ((20, 10, 5), [0, 0], [3, 10], [0, 1], None),
    ((20, 10, 5), [1], [1000], [1], [2]),
    ((20, 10, 5), [-1], [-1000], [-2], [-1]),
    ((20, 10, 5), [I64_MAX], [I64_MIN], [0], [-3]),
    ((20, 10, 5), [-3, 0], [I64_MAX, -1], [0, -1], None),
    ((20, 10, 5), [5], [2], [0], [1]),
    ((20, 10, 5), [0, 1, 2], [20, 9, 5], None, [7, 3, 2]),
    ((1031,), [3], [1030], [0], [17]),
    ((1031,), [1030], [0], [0], [-7]),
    ((7, 17), [0], [7], [0], [I64_MAX]),
    ((7, 17), [6], [-8], [0], [I64_MIN]),
    ((7, 17), [2], [3], [-1], None),
    ((0, 4), [0], [5], [1], None),
    ((3, 0), [0], [1], [0], None),
    ((1, 1, 7), [0, 0], [1, 7], [0, 2], [1, -1]),
]


@pytest.mark.parametrize(("shape", "starts", "ends", "axes", "steps"), SLICES, ids=str)
def test_slice(shape: tuple, starts: list, ends: list, axes: list | None, steps: list | None, isa: str) -> None:
    inputs = {"x": rnd(shape), "starts": i64(*starts), "ends": i64(*ends)}
    inputs["axes"] = None if axes is None else i64(*axes)
    inputs["steps"] = None if steps is None else i64(*steps)
    exact("Slice", inputs, isa=isa, consts=["starts", "ends", "axes", "steps"])


@pytest.mark.parametrize("dtype", MOVE_DTYPES, ids=name)
def test_slice_dtypes_and_int32_run_time_starts(dtype: object, isa: str) -> None:
    inputs = {"x": rnd((4, 9, 3), dtype), "starts": np.array([1, -2], np.int32), "ends": np.array([9, 0], np.int32)}
    inputs |= {"axes": np.array([1, 0], np.int32), "steps": np.array([3, -1], np.int32)}
    exact("Slice", inputs, isa=isa)


def test_slice_of_a_scalar_with_no_axes(isa: str) -> None:
    exact("Slice", {"x": np.array(3.5, np.float32), "starts": i64(), "ends": i64()}, isa=isa, consts=["starts", "ends"])


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps", "match"),
    [([0], [1], [0], [0], "steps must not be 0"), ([0, 0], [1, 1], [1, -1], None, "repeated"), ([0], [1], [3], None, "axis"),
     ([0], [1, 2], None, None, "ends has 2")],
    ids=["step0", "repeated_axis", "bad_axis", "lengths"],
)
def test_slice_errors(starts: list, ends: list, axes: list | None, steps: list | None, match: str) -> None:
    inputs = {"x": rnd((3, 4)), "starts": i64(*starts), "ends": i64(*ends)}
    if axes is not None:
        inputs["axes"] = i64(*axes)
    if steps is not None:
        inputs["steps"] = i64(*steps)
    raises("Slice", inputs, match)


# ---- Gather, GatherND ------------------------------------------------------------------------------------

GATHERS = [  # data shape, indices, axis
    ((1031, 17), np.array([[0, 5, 1030], [-1, -1031, 2]], np.int64), 0),
    ((7, 17), np.array([16, 0, -17, 3], np.int32), 1),
    ((7, 17), np.array([-1, 0], np.int64), -1),
    ((2, 3, 5), np.array(2, np.int64), 1),
    ((2, 3, 5), np.array([[4], [0]], np.int32), -1),
    ((5,), np.array([], np.int64), 0),
    ((0, 3), np.array([1, 2], np.int64), 1),
    ((4, 1), np.zeros((3, 0, 2), np.int64), 0),
]


@pytest.mark.parametrize(("shape", "idx", "axis"), GATHERS, ids=str)
def test_gather(shape: tuple, idx: np.ndarray, axis: int, isa: str) -> None:
    exact("Gather", {"x": rnd(shape), "i": idx}, {"axis": axis}, isa=isa)


@pytest.mark.parametrize("dtype", MOVE_DTYPES, ids=name)
def test_gather_dtypes(dtype: object, isa: str) -> None:
    exact("Gather", {"x": rnd((6, 7), dtype), "i": np.array([[5, -6, 0]], np.int64)}, {"axis": 0}, isa=isa)


def test_gather_embedding_from_constant_table(isa: str) -> None:
    ids = random_input((2, 17), np.int64, seed=3, low=0, high=1030)
    exact("Gather", {"table": rnd((1031, 33)), "ids": ids}, isa=isa, consts=["table"])


@pytest.mark.parametrize("bad", [5, -6, I64_MAX, I64_MIN], ids=str)
def test_gather_out_of_range_index_is_an_error(bad: int) -> None:
    raises("Gather", {"x": rnd((5, 2)), "i": i64(0, bad)}, "out of range")


def test_gather_from_a_scalar_is_an_error() -> None:
    raises("Gather", {"x": np.array(1.0, np.float32), "i": i64(0)}, "rank >= 1")


GATHER_NDS = [  # data shape, indices, batch_dims
    ((2, 2), np.array([[0, 0], [1, 1]], np.int64), 0),
    ((2, 2), np.array([[1], [0]], np.int64), 0),
    ((2, 2, 2), np.array([[[0, 1]], [[1, 0]]], np.int64), 0),
    ((2, 2, 2), np.array([[1], [0]], np.int64), 1),
    ((3, 4, 17), np.array([[[-1, 2], [0, -4]], [[1, 1], [2, 3]], [[0, 0], [1, 2]]], np.int64), 1),
    ((2, 3, 4, 5), random_input((2, 3, 7, 1), np.int64, seed=4, low=-4, high=3), 2),
    ((7, 17), np.array(np.zeros((0, 2)), np.int64), 0),
    ((1031, 3), random_input((9, 1), np.int64, seed=5, low=-1031, high=1030), 0),
]


@pytest.mark.parametrize(("shape", "idx", "batch_dims"), GATHER_NDS, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8], ids=name)
def test_gather_nd(shape: tuple, idx: np.ndarray, batch_dims: int, dtype: type, isa: str) -> None:
    exact("GatherND", {"x": rnd(shape, dtype), "i": idx}, {"batch_dims": batch_dims}, isa=isa)


@pytest.mark.parametrize(
    ("shape", "idx", "batch_dims", "match"),
    [
        ((2, 3), np.array([[0, 3]], np.int64), 0, "out of range"),
        ((2, 3), np.array([[-3, 0]], np.int64), 0, "out of range"),
        ((2, 3), np.array([[0, 0, 0]], np.int64), 0, "last dimension of indices"),
        ((2, 3), np.array([[0], [1], [0]], np.int64), 1, "must match"),
    ],
    ids=["past_end", "before_start", "tuple_too_long", "batch_mismatch"],
)
def test_gather_nd_errors(shape: tuple, idx: np.ndarray, batch_dims: int, match: str) -> None:
    raises("GatherND", {"x": rnd(shape), "i": idx}, match, {"batch_dims": batch_dims})


# ---- Expand, Tile, Where ---------------------------------------------------------------------------------

EXPANDS = [
    ((3, 1), [2, 3, 17]),
    ((1,), [1031]),
    ((), [7, 1]),
    ((2, 1, 5), [2, 7, 1]),
    ((4, 5), [5]),
    ((1, 7), [0, 7]),
    ((0, 3), [2, 1, 1]),
    ((7,), []),
]


@pytest.mark.parametrize(("shape", "to"), EXPANDS, ids=str)
@pytest.mark.parametrize("dtype", MOVE_DTYPES, ids=name)
def test_expand(shape: tuple, to: list, dtype: object, isa: str) -> None:
    exact("Expand", {"x": rnd(shape, dtype), "s": i64(*to)}, isa=isa, consts=["s"])


def test_expand_shape_at_run_time(isa: str) -> None:
    exact("Expand", {"x": rnd((1, 1, 1, 17)), "s": i64(2, 12, 17, 1)}, isa=isa)


@pytest.mark.parametrize("to", [[3, 4], [-1, 5], [2, 2]], ids=str)
def test_expand_incompatible_is_an_error(to: list) -> None:
    raises("Expand", {"x": rnd((3, 5)), "s": i64(*to)}, "expand|negative")


TILES = [((2, 3), [1, 1]), ((2, 3), [3, 2]), ((1031,), [2]), ((7, 1, 17), [1, 5, 1]), ((3, 4), [0, 2]), ((0, 2), [3, 3]), ((), [])]


@pytest.mark.parametrize(("shape", "reps"), TILES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.float16], ids=name)
def test_tile(shape: tuple, reps: list, dtype: type, isa: str) -> None:
    exact("Tile", {"x": rnd(shape, dtype), "r": i64(*reps)}, isa=isa)


@pytest.mark.parametrize(("reps", "match"), [([2], "repeats has 1"), ([2, -1], "negative")], ids=str)
def test_tile_errors(reps: list, match: str) -> None:
    raises("Tile", {"x": rnd((2, 3)), "r": i64(*reps)}, match)


WHERES = [  # condition, X, Y shapes
    ((7,), (7,), (7,)),
    ((1, 1, 17, 17), (2, 3, 17, 17), ()),
    ((17, 1), (1, 1031), (17, 1031)),
    ((), (5, 3), (3,)),
    ((2, 1, 3), (1, 4, 1), (2, 4, 3)),
    ((0, 3), (1, 3), (1,)),
    ((), (), ()),
]


@pytest.mark.parametrize("shapes", WHERES, ids=str)
@pytest.mark.parametrize("dtype", MOVE_DTYPES, ids=name)
def test_where(shapes: tuple, dtype: object, isa: str) -> None:
    c, a, b = shapes
    exact("Where", {"c": rnd(c, np.bool_), "a": rnd(a, dtype, seed=1), "b": rnd(b, dtype, seed=2)}, isa=isa)


def test_where_incompatible_is_an_error() -> None:
    raises("Where", {"c": rnd((3,), np.bool_), "a": rnd((4,)), "b": rnd((3,))}, "cannot be broadcast")


# ---- Cast ------------------------------------------------------------------------------------------------

CAST_TYPES = [*NUMERIC, np.bool_]
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, 127.9, -128.9, 255.5, 300.7, -300.7, 65504.0,
           70000.5, -70000.5, 2.0**31, -(2.0**31) - 1, 3e9, -3e9, 5e18, 1e19, 2e19, -1e19, 1e30, -1e30, 1e-30, 6e-8]


def cast_source(dtype: type) -> np.ndarray:
    """Random values, every special case the type holds, and a long tail for the parallel path."""
    d = np.dtype(dtype)
    if d.kind == "f":
        with np.errstate(over="ignore"):
            special = np.array(SPECIAL, np.float64).astype(d)
        body = rnd((1031,), d, seed=7, low=-300, high=300)
    elif d.kind in "iu":
        info = np.iinfo(d)
        values = [info.min, info.max, 0, 1, info.max // 2, info.min // 2 + 1, 127, 128, 255, 256]
        special = np.array([min(max(v, info.min), info.max) for v in values], d)
        body = rnd((1031,), d, seed=7, low=max(info.min, -1000), high=min(info.max, 1000))
    else:
        special, body = np.array([True, False]), rnd((1031,), d)
    return np.concatenate([special, body])


@pytest.mark.parametrize("to", CAST_TYPES, ids=name)
@pytest.mark.parametrize("src", CAST_TYPES, ids=name)
def test_cast(src: type, to: type, isa: str) -> None:
    from mopt.ir.dtypes import from_numpy

    exact("Cast", {"x": cast_source(src)}, {"to": int(from_numpy(np.dtype(to)))}, isa=isa)


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,)], ids=str)
def test_cast_empty_and_scalar(shape: tuple, isa: str) -> None:
    exact("Cast", {"x": rnd(shape, np.int64)}, {"to": TensorProto.FLOAT}, isa=isa)


EXOTIC = {  # ONNX type -> the first opset that has it
    TensorProto.BFLOAT16: 13,
    TensorProto.FLOAT8E4M3FN: 19,
    TensorProto.FLOAT8E4M3FNUZ: 19,
    TensorProto.FLOAT8E5M2: 19,
    TensorProto.FLOAT8E5M2FNUZ: 19,
    TensorProto.UINT4: 21,
    TensorProto.INT4: 21,
    TensorProto.FLOAT4E2M1: 23,
    TensorProto.FLOAT8E8M0: 24,
    TensorProto.UINT2: 25,
    TensorProto.INT2: 25,
}
SUB_BYTE_INTS = {TensorProto.UINT4: (0, 15), TensorProto.INT4: (-8, 7), TensorProto.UINT2: (0, 3), TensorProto.INT2: (-2, 1)}
FLOAT8 = [TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ]


def exotic_source(dtype: type) -> np.ndarray:
    x = cast_source(dtype)
    if np.dtype(dtype).kind == "f":  # values around each format's range and rounding ties
        fine = np.concatenate([np.arange(-520, 520, 0.25), 2.0 ** np.arange(-20, 17), 57344.0 + np.arange(-4096, 8192, 512)])
        with np.errstate(over="ignore"):
            x = np.concatenate([x, fine.astype(dtype), -(fine.astype(dtype))])
    return x


def check_bits(inputs: dict, attrs: dict, opset: int, isa: str) -> None:
    """Cast to a one- or two-byte format: the values must match, and so must the stored codes (which
    tells -0 from 0 apart); NaN may use any of its codes."""
    from mopt.testing.reference import run_reference

    got = check_op("Cast", inputs, attrs, isa=isa, rtol=0, atol=0, opset=opset)[0]
    want = run_reference(single_op_model("Cast", inputs, attrs, opset=opset), inputs)[0]
    bits = np.uint16 if got.dtype.itemsize == 2 else np.uint8
    keep = ~np.isnan(want.astype(np.float64))
    g, w = got.view(bits)[keep], want.view(bits)[keep]
    assert np.array_equal(g, w), f"codes differ at {np.argwhere(g != w)[:5].ravel()}: {g[g != w][:5]} != {w[g != w][:5]}"


@pytest.mark.parametrize("to", list(EXOTIC), ids=lambda t: TensorProto.DataType.Name(t))
@pytest.mark.parametrize("src", [np.float32, np.float16, np.float64, np.int64, np.int8, np.uint8, np.bool_], ids=name)
def test_cast_to_exotic_types(src: type, to: int, isa: str) -> None:
    x = exotic_source(src)
    if np.dtype(src).kind == "f" and to in SUB_BYTE_INTS:
        # ONNX leaves a float out of the integer's range undefined (ml_dtypes 0.7 gives 0, older
        # ones wrapped): only values whose truncation fits are compared
        lo, hi = SUB_BYTE_INTS[to]
        with np.errstate(invalid="ignore"):
            t = np.trunc(x.astype(np.float64))
        x = x[np.isfinite(t) & (t >= lo) & (t <= hi)]
    check_bits({"x": x}, {"to": to}, max(EXOTIC[to], 21), isa)


@pytest.mark.parametrize("to", FLOAT8, ids=lambda t: TensorProto.DataType.Name(t))
@pytest.mark.parametrize("src", [np.float32, np.float16, np.float64], ids=name)
def test_cast_to_float8_without_saturation(src: type, to: int, isa: str) -> None:
    check_bits({"x": exotic_source(src)}, {"to": to, "saturate": 0}, 21, isa)


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [0, 1])
def test_cast_to_float8e8m0_modes(round_mode: str, saturate: int, isa: str) -> None:
    x = np.concatenate([exotic_source(np.float32), np.float32([3.4e38, 1.7e38, 2.0**127, 1e-40, -1e-40])])
    check_bits({"x": x}, {"to": TensorProto.FLOAT8E8M0, "saturate": saturate, "round_mode": round_mode}, 25, isa)


# ---- Range, Size ---------------------------------------------------------------------------------------------

RANGES = [(0, 10, 1), (10, 0, -3), (0, 1031, 1), (5, 5, 1), (5, 0, 1), (-7, 17, 5), (3, -100, -1)]


@pytest.mark.parametrize(("start", "limit", "delta"), RANGES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32, np.int64], ids=name)
def test_range(start: int, limit: int, delta: int, dtype: type, isa: str) -> None:
    s, lim, d = (np.array(v, dtype) for v in (start, limit, delta))
    exact("Range", {"s": s, "l": lim, "d": d}, isa=isa)


@pytest.mark.parametrize(("start", "limit", "delta"), [(0.0, 1.0, 0.1), (-1.5, 2.25, 0.3), (1.0, -1.0, -0.125), (0.0, 1e3, 0.37)], ids=str)
def test_range_fractional(start: float, limit: float, delta: float, isa: str) -> None:
    inputs = {"s": np.float32(start), "l": np.float32(limit), "d": np.float32(delta)}
    check_op("Range", {k: np.array(v) for k, v in inputs.items()}, isa=isa, rtol=1e-6, atol=1e-6)


def test_range_zero_delta_is_an_error() -> None:
    raises("Range", {"s": np.array(0, np.int64), "l": np.array(3, np.int64), "d": np.array(0, np.int64)}, "delta", output_dtypes=[7])


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 0, 5), (17, 1031)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.bool_, np.int8], ids=name)
def test_size(shape: tuple, dtype: type, isa: str) -> None:
    exact("Size", {"x": rnd(shape, dtype)}, isa=isa)


# ---- comparisons, logic, IsNaN / IsInf -----------------------------------------------------------------

COMPARE_SHAPES = [((7,), (7,)), ((3, 1, 17), (1, 5, 1)), ((1031,), ()), ((), (2, 3)), ((0, 3), (3,)), ((), ())]


@pytest.mark.parametrize("shapes", COMPARE_SHAPES, ids=str)
@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_compare_broadcast(op: str, shapes: tuple, isa: str) -> None:
    a, b = shapes
    # few distinct values so that equal pairs occur
    exact(op, {"a": rnd(a, np.int64, seed=1, low=-2, high=2), "b": rnd(b, np.int64, seed=2, low=-2, high=2)}, isa=isa)


@pytest.mark.parametrize("dtype", NUMERIC, ids=name)
@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_compare_dtypes(op: str, dtype: type, isa: str) -> None:
    a = rnd((4, 17), dtype, seed=1, low=0, high=3)
    b = rnd((17,), dtype, seed=2, low=0, high=3)
    if np.dtype(dtype).kind == "f":  # NaN compares false, infinities order
        a[0, :4] = [np.nan, np.inf, -np.inf, 0.0]
        b[:4] = [np.nan, np.inf, np.inf, -0.0]
    exact(op, {"a": a, "b": b}, isa=isa)


def test_equal_bool(isa: str) -> None:
    exact("Equal", {"a": rnd((3, 17), np.bool_, seed=1), "b": rnd((17,), np.bool_, seed=2)}, isa=isa)


def test_compare_operand_types_must_agree() -> None:
    # not a valid ONNX model, so it is built by hand without type inference
    raises("Less", {"a": rnd((3,)), "b": rnd((3,), np.float64)}, "types differ", output_dtypes=[int(TensorProto.BOOL)])


@pytest.mark.parametrize("shapes", COMPARE_SHAPES, ids=str)
@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical(op: str, shapes: tuple, isa: str) -> None:
    a, b = shapes
    exact(op, {"a": rnd(a, np.bool_, seed=1), "b": rnd(b, np.bool_, seed=2)}, isa=isa)


@pytest.mark.parametrize("shape", [(), (0,), (1,), (17,), (3, 1031)], ids=str)
def test_not(shape: tuple, isa: str) -> None:
    exact("Not", {"x": rnd(shape, np.bool_)}, isa=isa)


def float_specials(dtype: type, shape: tuple) -> np.ndarray:
    x = rnd(shape, dtype)
    flat = x.reshape(-1)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -np.nan, 1.0], dtype)
    flat[: min(flat.size, special.size)] = special[: flat.size]
    return x


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 1031)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=name)
def test_isnan(dtype: type, shape: tuple, isa: str) -> None:
    exact("IsNaN", {"x": float_specials(dtype, shape)}, isa=isa)


@pytest.mark.parametrize(("neg", "pos"), [(1, 1), (0, 1), (1, 0), (0, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=name)
def test_isinf(dtype: type, neg: int, pos: int, isa: str) -> None:
    exact("IsInf", {"x": float_specials(dtype, (5, 17))}, {"detect_negative": neg, "detect_positive": pos}, isa=isa)


# ---- CumSum ----------------------------------------------------------------------------------------------

CUMSUMS = [((7,), 0), ((1031,), -1), ((3, 17), 0), ((3, 17), 1), ((2, 3, 1031), 1), ((4, 0, 3), 2), ((1,), 0), ((2, 2000), 1)]


@pytest.mark.parametrize(("shape", "axis"), CUMSUMS, ids=str)
@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)], ids=["plain", "exclusive", "reverse", "both"])
def test_cumsum(shape: tuple, axis: int, exclusive: int, reverse: int, isa: str) -> None:
    x = rnd(shape, np.float32)
    check_op("CumSum", {"x": x, "a": np.array(axis, np.int64)}, {"exclusive": exclusive, "reverse": reverse}, isa=isa, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int64, np.uint32, np.uint64], ids=name)
@pytest.mark.parametrize("axis_type", [np.int32, np.int64], ids=name)
def test_cumsum_dtypes(dtype: type, axis_type: type, isa: str) -> None:
    x = rnd((5, 33), dtype, low=0, high=50)
    exact("CumSum", {"x": x, "a": np.array(-2, axis_type)}, {"reverse": 1}, isa=isa)


def test_cumsum_bad_axis_is_an_error() -> None:
    raises("CumSum", {"x": rnd((3, 4)), "a": np.array(2, np.int64)}, "axis")


# ---- reductions ------------------------------------------------------------------------------------------

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"]
REDUCES = [  # shape, axes (None: the input is absent)
    ((2, 17, 768), [-1]),
    ((7, 1031), [1]),
    ((3, 17, 5), [1]),
    ((17, 5), [0]),
    ((3, 4, 5, 6), [1, 2]),
    ((3, 4, 5, 6), [0, 2]),
    ((3, 4, 5, 6), [-1, 0]),
    ((3, 4, 5, 6), [1, 3]),
    ((2, 1, 3), [1]),
    ((7, 17), None),
    ((7, 17), []),
    ((), None),
    ((1,), [0]),
    ((4, 1, 3, 1), [1, 3]),
    ((0, 3), [1]),
    ((3, 0, 2), [1]),
    ((3, 0), None),
]


@pytest.mark.parametrize(("shape", "axes"), REDUCES, ids=str)
@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce(op: str, shape: tuple, axes: list | None, keepdims: int, isa: str) -> None:
    inputs = {"x": rnd(shape, np.float32), "axes": None if axes is None else i64(*axes)}
    check_op(op, inputs, {"keepdims": keepdims}, isa=isa, consts=["axes"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axes", [None, []], ids=["absent", "empty"])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_noop_with_empty_axes(op: str, axes: list | None, isa: str) -> None:
    inputs = {"x": rnd((3, 7)), "axes": None if axes is None else i64(*axes)}
    exact(op, inputs, {"noop_with_empty_axes": 1}, isa=isa, consts=["axes"])


@pytest.mark.parametrize("axes", [[1], [0], [0, 1]], ids=str)
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_special_values(op: str, axes: list, isa: str) -> None:
    x = rnd((4, 6))
    x[0, 1], x[1, 2], x[2, 0], x[3, 5] = np.nan, np.inf, -np.inf, np.nan
    check_op(op, {"x": x, "axes": i64(*axes)}, isa=isa, rtol=1e-6, atol=1e-6)


def test_reduce_axes_at_run_time(isa: str) -> None:
    check_op("ReduceMean", {"x": rnd((3, 5, 7)), "axes": i64(-1, 0)}, isa=isa, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("axes", "match"), [([0, -2], "repeated"), ([2], "axis")], ids=str)
def test_reduce_bad_axes_are_errors(axes: list, match: str) -> None:
    raises("ReduceSum", {"x": rnd((3, 4)), "axes": i64(*axes)}, match)


# ---- Sign, Log, Neg / Abs of integers --------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (0,), (1,), (7,), (17,), (1031,), (3, 5, 33)], ids=str)
@pytest.mark.parametrize("op", ["Sign", "Log"])
def test_sign_log(op: str, shape: tuple, isa: str) -> None:
    low = 0.01 if op == "Log" else -3.0
    check_op(op, {"x": rnd(shape, np.float32, low=low, high=50)}, isa=isa, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", ["Sign", "Log"])
def test_sign_log_special_values(op: str, isa: str) -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-38, -1e-38, 1e-45, 3.0, -3.0] * 3, np.float32)
    check_op(op, {"x": x}, isa=isa, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64], ids=name)
@pytest.mark.parametrize("op", ["Neg", "Abs"])
def test_neg_abs_other_types(op: str, dtype: type, isa: str) -> None:
    d = np.dtype(dtype)
    if op == "Neg" and d.kind == "u":
        pytest.skip("ONNX Neg takes no unsigned types")
    x = rnd((1031,), d, low=-100 if d.kind != "u" else 0, high=100)
    if d.kind in "iu":  # the extremes wrap as in numpy
        x[:2] = [np.iinfo(d).min, np.iinfo(d).max]
    for shape in [(), (0,), (7,)]:
        exact(op, {"x": rnd(shape, d)}, isa=isa)
    exact(op, {"x": x}, isa=isa)
