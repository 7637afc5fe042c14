"""Binary arithmetic and the variadic Sum/Max/Min/Mean against onnx.reference: every ISA, every
supported dtype, numpy broadcasting of every kind, empty tensors."""

from __future__ import annotations

import numpy as np
import pytest

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import feeds_of, run_mopt, single_op_model

from .helpers import check_op
from .native import check_native

BINARY = ["Add", "Sub", "Mul", "Div"]
VARIADIC = ["Sum", "Max", "Min", "Mean"]
OPS_COVERED = [*BINARY, *VARIADIC, "Pow"]

DTYPES = [np.float32, np.float64, np.int64, np.int32]

# (shape of a, shape of b): every kind of broadcast the kernel has to index.
BROADCASTS = {
    "same-1": ((1,), (1,)),
    "same-7": ((7,), (7,)),
    "same-1031": ((1031,), (1031,)),
    "same-3d": ((3, 5, 33), (3, 5, 33)),
    "scalar-scalar": ((), ()),
    "b-scalar": ((3, 17), ()),
    "a-scalar": ((), (3, 17)),
    "b-one": ((5, 17), (1,)),
    "row": ((4, 17), (17,)),
    "row-2d": ((4, 17), (1, 17)),
    "row-left": ((17,), (4, 17)),
    "column": ((4, 17), (4, 1)),
    "column-left": ((4, 1), (4, 17)),
    "middle": ((2, 5, 7), (1, 5, 1)),
    "middle-rank2": ((2, 5, 7), (5, 1)),
    "outer": ((3, 4, 17), (3, 1, 1)),
    "both-2d": ((4, 1), (1, 17)),
    "both-3d": ((2, 1, 7), (1, 5, 1)),
    "both-alternating": ((3, 1, 5, 1), (1, 4, 1, 6)),
    "rank-mismatch": ((2, 3, 4, 5), (4, 5)),
    "rank-mismatch-left": ((5,), (2, 3, 5)),
    "all-ones": ((1, 1), (1,)),
    "ones-kept": ((1, 7, 1), (1, 7, 1)),
    "long-inner": ((2, 1031), (2, 1)),
}

EMPTY = {
    "empty-1d": ((0,), (0,)),
    "empty-vs-one": ((0,), (1,)),
    "empty-vs-scalar": ((0, 3), ()),
    "empty-rows": ((0, 3), (3,)),
    "empty-cols": ((2, 0), (2, 1)),
    "empty-broadcast-a": ((1, 3), (0, 3)),
    "empty-middle": ((2, 0, 4), (1, 1, 4)),
}


def operands(op: str, sa: tuple[int, ...], sb: tuple[int, ...], dtype: type, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    d = np.dtype(dtype)
    if d.kind == "f":
        a = random_input(sa, d, seed=seed, low=-3, high=3)
        b = random_input(sb, d, seed=seed + 1, low=-3, high=3)
        if op == "Div":  # keep the divisor away from zero: the relative error stays meaningful
            b = np.where(np.abs(b) < 0.25, np.asarray(0.5, d), b).astype(d)
        return a, b
    a = random_input(sa, d, seed=seed, low=-100, high=100)
    b = random_input(sb, d, seed=seed + 1, low=-100, high=100)
    if op == "Div":
        b = np.where(b == 0, np.asarray(7, d), b).astype(d)
    return a, b


def tol(dtype: type) -> float:
    return 0 if np.dtype(dtype).kind in "iu" else 1e-6


def dtype_id(d: type) -> str:
    return np.dtype(d).name


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shapes", list(BROADCASTS.values()), ids=list(BROADCASTS))
@pytest.mark.parametrize("op", BINARY)
def test_binary_broadcast(op: str, shapes: tuple, dtype: type, isa: str) -> None:
    a, b = operands(op, *shapes, dtype)
    check_op(op, {"a": a, "b": b}, isa=isa, rtol=tol(dtype), atol=tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.int64], ids=dtype_id)
@pytest.mark.parametrize("shapes", list(EMPTY.values()), ids=list(EMPTY))
@pytest.mark.parametrize("op", BINARY)
def test_binary_empty(op: str, shapes: tuple, dtype: type, isa: str) -> None:
    a, b = operands(op, *shapes, dtype)
    check_op(op, {"a": a, "b": b}, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("op", BINARY)
def test_binary_with_constant_operand(op: str, isa: str) -> None:
    a, b = operands(op, (3, 17), (17,), np.float32, seed=3)
    check_op(op, {"a": a, "b": b}, isa=isa, consts=["b"], rtol=1e-6, atol=1e-6)
    check_op(op, {"b": b, "a": a}, isa=isa, consts=["b"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int64, np.int32], ids=dtype_id)
def test_integer_div_truncates_toward_zero(dtype: type, isa: str) -> None:
    # every sign combination, exact and inexact quotients, |a| < |b|
    a = np.array([7, -7, 7, -7, 6, -6, 1, -1, 0, 0, 100, -100, 3, -3, 2**30, -(2**30)], dtype)
    b = np.array([2, 2, -2, -2, 3, 3, 5, 5, 4, -4, 7, 7, -9, -9, 3, 7], dtype)
    got = check_op("Div", {"a": a, "b": b}, isa=isa, rtol=0, atol=0)[0]
    np.testing.assert_array_equal(got, np.array([3, -3, -3, 3, 2, -2, 0, 0, 0, 0, 14, -14, 0, 0, 357913941, -153391689], dtype))


@pytest.mark.parametrize("dtype", [np.int64, np.int32], ids=dtype_id)
def test_integer_div_by_zero_is_a_clear_error(dtype: type, isa: str) -> None:
    a = np.array([1, 2, 3], dtype)
    b = np.array([1, 0, 1], dtype)
    model = single_op_model("Div", {"a": a, "b": b})
    with pytest.raises(mopt.ExecutionError, match="division by zero"):
        run_mopt(model, feeds_of(model, {"a": a, "b": b}), isa=isa)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=dtype_id)
def test_float_special_values(dtype: type, isa: str) -> None:
    vals = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 3.5e38 if dtype == np.float64 else 3e38], dtype)
    a = np.repeat(vals, len(vals))
    b = np.tile(vals, len(vals))
    for op in BINARY:
        check_op(op, {"a": a, "b": b}, isa=isa, rtol=1e-6, atol=0)


# -- Sum / Max / Min / Mean ---------------------------------------------------------------------

VARIADIC_SHAPES = {
    "one-input": [(3, 17)],
    "one-input-scalar": [()],
    "two-same": [(1031,), (1031,)],
    "two-row": [(4, 17), (17,)],
    "two-first-broadcast": [(17,), (4, 17)],
    "three-same": [(2, 3, 7), (2, 3, 7), (2, 3, 7)],
    "three-mixed": [(5, 1), (1, 7), (7,)],
    "three-scalar-first": [(), (3, 7), (3, 1)],
    "four-mixed": [(2, 1, 5), (1, 3, 1), (5,), ()],
    "four-same": [(1,), (1,), (1,), (1,)],
    "four-grow-late": [(1,), (1,), (1,), (2, 9)],
    "empty": [(0, 3), (3,), (1, 3)],
}


def variadic_inputs(op: str, shapes: list[tuple[int, ...]], dtype: type) -> dict[str, np.ndarray]:
    d = np.dtype(dtype)
    lo, hi = (-3, 3) if d.kind == "f" else (-50, 50)
    return {f"x{i}": random_input(s, d, seed=10 + i, low=lo, high=hi) for i, s in enumerate(shapes)}


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shapes", list(VARIADIC_SHAPES.values()), ids=list(VARIADIC_SHAPES))
@pytest.mark.parametrize("op", ["Sum", "Max", "Min"])
def test_variadic(op: str, shapes: list, dtype: type, isa: str) -> None:
    check_op(op, variadic_inputs(op, shapes, dtype), isa=isa, rtol=tol(dtype) * 2, atol=tol(dtype) * 4)


@pytest.mark.parametrize("shapes", list(VARIADIC_SHAPES.values()), ids=list(VARIADIC_SHAPES))
def test_mean(shapes: list, isa: str) -> None:
    xs = variadic_inputs("Mean", shapes, np.float32)
    out = np.broadcast_shapes(*shapes)
    if tuple(shapes[0]) == out:
        check_op("Mean", xs, isa=isa, rtol=2e-6, atol=2e-6)
    else:  # onnx.reference's Mean accumulates in place into input 0 and cannot broadcast it
        want = (sum(np.broadcast_to(x, out).astype(np.float64) for x in xs.values()) / len(xs)).astype(np.float32)
        check_native("Mean", xs, [want], isa=isa, rtol=2e-6, atol=2e-6)


def test_variadic_with_constant_inputs(isa: str) -> None:
    xs = variadic_inputs("Sum", [(3, 17), (17,), (3, 1)], np.float32)
    for op in VARIADIC:
        check_op(op, xs, isa=isa, consts=["x1"], rtol=2e-6, atol=4e-6)


def test_mean_float64_runs_natively(isa: str) -> None:
    # float64 Mean runs on the typed kernels of math_ops.cc (it used to fall back)
    xs = variadic_inputs("Mean", [(3, 7), (7,)], np.float64)
    check_op("Mean", xs, isa=isa, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=dtype_id)
@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_propagate_nan(op: str, dtype: type, isa: str) -> None:
    # NaN in either operand, in the vector body (first 32) and the tail, and against a broadcast scalar
    a = np.array([np.nan, 1.0, np.nan, 2.0, -np.inf, np.inf, 0.0, -0.5] * 4 + [np.nan, 3.0, 1.0], dtype)
    b = np.array([1.0, np.nan, np.nan, -3.0, np.nan, 1.0, -0.0, 0.5] * 4 + [2.0, np.nan, 1.0], dtype)
    check_op(op, {"a": a, "b": b}, isa=isa, rtol=0, atol=0)
    check_op(op, {"a": b, "b": a}, isa=isa, rtol=0, atol=0)
    check_op(op, {"a": a, "b": np.array(np.nan, dtype)}, isa=isa, rtol=0, atol=0)
    check_op(op, {"a": np.array(np.nan, dtype), "b": b}, isa=isa, rtol=0, atol=0)
    check_op(op, {"a": a, "b": b, "c": a[::-1].copy()}, isa=isa, rtol=0, atol=0)


# -- Pow: float32 base, exponent of any numeric type ----------------------------------------------
POW_EXPONENTS = {
    "square": np.array(2.0, np.float32),
    "cube": np.array(3.0, np.float32),
    "sqrt": np.array(0.5, np.float32),
    "reciprocal": np.array(-1.0, np.float32),
    "one": np.array(1.0, np.float32),
    "general": np.array(1.7, np.float32),
    "int64-scalar": np.array(3, np.int64),
    "per-column": np.linspace(-2, 2, 17).astype(np.float32),
    "broadcast-up": np.array([[0.5], [2.0], [3.0]], np.float32),
}


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 17), (0, 17)], ids=str)
@pytest.mark.parametrize("exp", list(POW_EXPONENTS))
@pytest.mark.parametrize("const", [True, False], ids=["const-exp", "input-exp"])
def test_pow(exp: str, shape: tuple[int, ...], const: bool, isa: str) -> None:
    e = POW_EXPONENTS[exp]
    try:
        np.broadcast_shapes(shape, e.shape)
    except ValueError:
        pytest.skip("shapes do not broadcast")
    x = random_input(shape, np.float32, seed=3, low=0.1, high=3.0)
    check_op("Pow", {"x": x, "e": e}, isa=isa, consts=["e"] if const else [], rtol=2e-6, atol=1e-6)


def test_pow_negative_base_and_special_values(isa: str) -> None:
    x = np.array([-2.0, -0.5, 0.0, -0.0, np.inf, -np.inf, np.nan, 1.0], np.float32)
    for e in (2.0, 3.0, 0.5, -1.0, 1.7):
        check_op("Pow", {"x": x, "e": np.array(e, np.float32)}, isa=isa, consts=["e"], rtol=2e-6, atol=1e-6)
