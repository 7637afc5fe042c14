"""The plain-C++ element-wise kernels of math_ops.cc against onnx.reference: trigonometric and
hyperbolic functions, Round, the rarer activations, float64/float16 forms of the float32 unary ops,
binary arithmetic on every numeric type (wrapping integers), Mod, BitShift, Bitwise*, PRelu, the
variadic Sum/Max/Min/Mean, and Cast/CastLike from the bfloat16, float8, float4 and 2/4-bit types.
Odd and empty shapes, broadcasting, every registered dtype, and bad input that must be a clear error."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op

UNARY_NEW = ["Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Round", "Softsign",
             "Celu", "ThresholdedRelu", "Mish", "Shrink"]  # fmt: skip
UNARY_WIDENED = ["Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Exp",
                 "Erf", "Sqrt", "Reciprocal", "Floor", "Ceil", "Log", "Sign", "Neg", "Abs"]  # fmt: skip
BINARY_NEW = ["Mod", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "PRelu"]
OPS_COVERED = [*UNARY_NEW, *BINARY_NEW, "BitwiseNot", "CastLike"]

FLOATS = [np.float32, np.float64, np.float16]
INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
SHAPES = [(), (0,), (1,), (7,), (17,), (1031,), (3, 5, 33)]
DOMAIN = {"Asin": (-0.99, 0.99), "Acos": (-0.99, 0.99), "Atanh": (-0.99, 0.99), "Acosh": (1.01, 5.0), "Log": (0.01, 5.0),
          "Sqrt": (0.0, 5.0), "Tan": (-1.4, 1.4), "Round": (-6.0, 6.0)}  # fmt: skip
ATTRS = {"Celu": {"alpha": 0.7}, "ThresholdedRelu": {"alpha": 0.3}, "Shrink": {"lambd": 0.6, "bias": 0.25},
         "LeakyRelu": {"alpha": 0.2}, "Elu": {"alpha": 0.5}, "HardSigmoid": {"alpha": 0.3, "beta": 0.4}}  # fmt: skip


def name(d: object) -> str:
    return np.dtype(d).name  # type: ignore[call-overload]


def tol(dtype: object) -> dict:
    return {"rtol": 2e-3, "atol": 2e-3} if np.dtype(dtype) == np.float16 else {"rtol": 1e-5, "atol": 1e-6}  # type: ignore[call-overload]


def rnd(shape: tuple, dtype: object, seed: int = 0, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    return random_input(shape, np.dtype(dtype), seed=seed, low=low, high=high)  # type: ignore[call-overload]


def raises(op: str, inputs: dict, match: str, attrs: dict | None = None) -> None:
    from mopt.ir.dtypes import from_numpy

    m = single_op_model(op, inputs, attrs, output_dtypes=[int(from_numpy(next(iter(inputs.values())).dtype))])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes, cm.fallback_nodes[0].reason
    with pytest.raises(mopt.MoptError, match=match):
        mopt.Session(cm, fallback=False).run(None, inputs)


# ---- unary ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", UNARY_NEW)
def test_unary_float32(op: str, shape: tuple, isa: str) -> None:
    if shape == () and op == "Softsign":
        pytest.skip("onnx.reference's Softsign fails on a rank-0 input")
    low, high = DOMAIN.get(op, (-3.0, 3.0))
    check_op(op, {"x": rnd(shape, np.float32, low=low, high=high)}, ATTRS.get(op), isa=isa, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=name)
@pytest.mark.parametrize("op", UNARY_NEW + UNARY_WIDENED)
def test_unary_other_floats(op: str, dtype: type, isa: str) -> None:
    low, high = DOMAIN.get(op, (-3.0, 3.0))
    check_op(op, {"x": rnd((3, 5, 33), dtype, low=low, high=high)}, ATTRS.get(op), isa=isa, **tol(dtype))


def test_round_ties_to_even_and_specials(isa: str) -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, np.nan, np.inf, -np.inf, -0.0], np.float32)
    got = check_op("Round", {"x": x}, isa=isa, rtol=0, atol=0)[0]
    assert np.array_equal(np.signbit(got), np.signbit(np.round(x)))


@pytest.mark.parametrize("op", ["Sin", "Mish", "Softsign", "Exp", "Sigmoid", "Softplus"])
def test_unary_special_values(op: str, isa: str) -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 100.0, -100.0], np.float64)
    check_op(op, {"x": x}, isa=isa)


def test_float16_rounding_of_results(isa: str) -> None:
    # every float16 value through Sqrt: one rounding of the float result, like numpy
    x = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16)
    check_op("Sqrt", {"x": x}, isa=isa, rtol=0, atol=0)


def test_unary_integer_input_is_an_error_not_a_crash() -> None:
    m = single_op_model("Sin", {"x": np.zeros(3, np.int32)}, output_dtypes=[int(TensorProto.INT32)])
    cm = mopt.compile(m, 0)
    assert cm.fallback_nodes, "Sin of int32 has no native kernel: it must go to the fallback"


# ---- binary -----------------------------------------------------------------------------------------------

BCAST = [((7,), (7,)), ((3, 1, 17), (5, 1)), ((1,), (4, 9)), ((0, 3), (3,)), ((), (2, 3)), ((1031,), ())]


@pytest.mark.parametrize("shapes", BCAST, ids=str)
@pytest.mark.parametrize("dtype", FLOATS + INTS, ids=name)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
def test_arithmetic_every_type(op: str, dtype: type, shapes: tuple, isa: str) -> None:
    d = np.dtype(dtype)
    a = rnd(shapes[0], d, seed=1, low=-100 if d.kind != "u" else 0, high=100)
    b = rnd(shapes[1], d, seed=2, low=1, high=9)
    check_op(op, {"a": a, "b": b}, isa=isa, **tol(dtype))


@pytest.mark.parametrize("dtype", INTS, ids=name)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
def test_integer_arithmetic_wraps(op: str, dtype: type, isa: str) -> None:
    info = np.iinfo(dtype)
    a = np.array([info.max, info.min, info.max, info.min, 3], dtype)
    b = np.array([info.max, info.min, 2, -1 if info.min < 0 else 1, 5], dtype)
    check_op(op, {"a": a, "b": b}, isa=isa)


def test_integer_division_by_zero_is_an_error() -> None:
    raises("Div", {"a": np.ones(4, np.int8), "b": np.array([1, 2, 0, 3], np.int8)}, "division by zero")


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64], ids=name)
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_integers(fmod: int, dtype: type, isa: str) -> None:
    d = np.dtype(dtype)
    low = -50 if d.kind == "i" else 0
    a, b = rnd((4, 17), d, seed=3, low=low, high=50), rnd((17,), d, seed=4, low=1, high=9)
    if d.kind == "i":
        b[::2] = -b[::2]
    check_op("Mod", {"a": a, "b": b}, {"fmod": fmod}, isa=isa)


@pytest.mark.parametrize("dtype", FLOATS, ids=name)
def test_mod_floats(dtype: type, isa: str) -> None:
    a, b = rnd((5, 33), dtype, seed=5, low=-10, high=10), rnd((33,), dtype, seed=6, low=0.5, high=3)
    b[::3] = -b[::3]
    check_op("Mod", {"a": a, "b": b}, {"fmod": 1}, isa=isa, **tol(dtype))


def test_mod_by_zero_is_an_error() -> None:
    raises("Mod", {"a": np.ones(3, np.int32), "b": np.array([1, 0, 2], np.int32)}, "modulo by zero")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64], ids=name)
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift(direction: str, dtype: type, isa: str) -> None:
    bits = np.dtype(dtype).itemsize * 8
    x = rnd((3, 17), dtype, seed=7, low=0, high=200)
    s = np.arange(17).astype(dtype) % bits
    check_op("BitShift", {"x": x, "s": s}, {"direction": direction}, isa=isa)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64], ids=name)
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift_signed_opset28(direction: str, dtype: type, isa: str) -> None:
    # arithmetic right shift; counts that are negative or >= the width leave the sign fill only
    bits = np.dtype(dtype).itemsize * 8
    x = np.concatenate([rnd((40,), dtype, seed=7, low=-100, high=100), np.array([np.iinfo(dtype).min, -1, 1], dtype)])
    s = np.concatenate([np.arange(40) % (bits + 3) - 1, [bits - 1, bits, -5]]).astype(dtype)
    check_op("BitShift", {"x": x, "s": s}, {"direction": direction}, isa=isa, opset=28)


@pytest.mark.parametrize("shapes", BCAST, ids=str)
@pytest.mark.parametrize("dtype", INTS, ids=name)
@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
def test_bitwise(op: str, dtype: type, shapes: tuple, isa: str) -> None:
    d = np.dtype(dtype)
    lo = -120 if d.kind == "i" else 0
    check_op(op, {"a": rnd(shapes[0], d, seed=8, low=lo, high=120), "b": rnd(shapes[1], d, seed=9, low=lo, high=120)}, isa=isa)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", INTS, ids=name)
def test_bitwise_not(dtype: type, shape: tuple, isa: str) -> None:
    d = np.dtype(dtype)
    check_op("BitwiseNot", {"x": rnd(shape, d, low=-100 if d.kind == "i" else 0, high=100)}, isa=isa)


@pytest.mark.parametrize(("xs", "ss"), [((3, 4, 5), (5,)), ((3, 4, 5), (4, 1)), ((7,), (7,)), ((0, 2), (2,)), ((2, 3), ())])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32, np.int64], ids=name)
def test_prelu(xs: tuple, ss: tuple, dtype: type, isa: str) -> None:
    check_op("PRelu", {"x": rnd(xs, dtype, seed=10, low=-9, high=9), "slope": rnd(ss, dtype, seed=11, low=-2, high=2)}, isa=isa, **tol(dtype))


def test_operand_types_must_agree() -> None:
    raises("BitwiseAnd", {"a": np.ones(3, np.int8), "b": np.ones(3, np.int16)}, "types differ")


def test_incompatible_shapes_are_an_error() -> None:
    raises("Mod", {"a": np.ones((3, 4), np.int32), "b": np.ones((5,), np.int32)}, "cannot be broadcast")


# ---- variadic ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.int16, np.uint8, np.uint16, np.uint32, np.uint64], ids=name)
@pytest.mark.parametrize("op", ["Sum", "Max", "Min", "Mean"])
def test_variadic_other_types(op: str, dtype: type, isa: str) -> None:
    if op == "Mean" and np.dtype(dtype).kind != "f":
        pytest.skip("Mean is defined for floating-point types")
    # onnx.reference's Mean adds in place into its first input, so it cannot broadcast that one
    first = (3, 5) if op == "Mean" else (1, 5)
    ins = {"a": rnd(first, dtype, seed=1, low=0, high=60), "b": rnd((3, 1), dtype, seed=2, low=0, high=60)}
    ins["c"] = rnd((5,), dtype, seed=3, low=0, high=60)
    check_op(op, ins, isa=isa, **tol(dtype))
    check_op(op, {"a": ins["a"]}, isa=isa, **tol(dtype))


# ---- Cast / CastLike from the formats without a C++ type ----------------------------------------------------

EXOTIC = {  # numpy type, opset
    "bfloat16": (ml_dtypes.bfloat16, 21),
    "float8e4m3fn": (ml_dtypes.float8_e4m3fn, 21),
    "float8e4m3fnuz": (ml_dtypes.float8_e4m3fnuz, 21),
    "float8e5m2": (ml_dtypes.float8_e5m2, 21),
    "float8e5m2fnuz": (ml_dtypes.float8_e5m2fnuz, 21),
    "float4e2m1": (ml_dtypes.float4_e2m1fn, 23),
    "uint4": (ml_dtypes.uint4, 21),
    "int4": (ml_dtypes.int4, 21),
}


def every_code(dtype: type) -> np.ndarray:
    d = np.dtype(dtype)
    if d.itemsize == 2:  # bfloat16: every 16th code, plus the specials around the top
        return np.concatenate([np.arange(0, 65536, 16), np.arange(0x7F70, 0x7F90), np.arange(0xFF70, 0xFF90)]).astype(np.uint16).view(d)
    n = {"float4_e2m1fn": 16, "uint4": 16, "int4": 16}.get(d.name, 256)
    vals = np.arange(n, dtype=np.uint8)
    if d.name in ("uint4", "int4"):
        return np.array([int(v) for v in vals.view(d)], dtype=np.int64).astype(d) if d.name == "uint4" else np.arange(-8, 8).astype(d)
    return vals.view(d)


@pytest.mark.parametrize("to", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT8, TensorProto.UINT8,
                                TensorProto.INT32, TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN],
                         ids=lambda t: TensorProto.DataType.Name(t))  # fmt: skip
@pytest.mark.parametrize("src", list(EXOTIC))
def test_cast_from_exotic_types(src: str, to: int, isa: str) -> None:
    dtype, opset = EXOTIC[src]
    x = every_code(dtype)
    if to in (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32):
        f = x.astype(np.float32)
        low = 0 if to == TensorProto.UINT8 else -100  # out-of-range float -> int is undefined in ONNX
        x = x[np.isfinite(f) & (f >= low) & (f < 100)]
    with np.errstate(invalid="ignore"):  # signalling NaN codes: the comparison's float64 copy quiets them
        check_op("Cast", {"x": x}, {"to": to}, isa=isa, rtol=0, atol=0, opset=opset)


@pytest.mark.parametrize("src", [np.float32, np.float16, np.int64, np.uint8, np.bool_, ml_dtypes.float8_e4m3fn, ml_dtypes.int4], ids=name)
@pytest.mark.parametrize("like", [np.float16, np.float64, np.int32, ml_dtypes.bfloat16, ml_dtypes.float8_e5m2, ml_dtypes.uint4], ids=name)
def test_castlike(src: type, like: type, isa: str) -> None:
    if np.dtype(src).name == "int4" and np.dtype(like).name == "uint4":
        pytest.skip("onnx.reference cannot cast int4 to uint4")
    if np.dtype(src).kind == "V" or np.dtype(src).name in ("float8_e4m3fn", "int4"):
        x = every_code(src)
    else:
        x = rnd((7, 5), src, seed=12, low=0 if np.dtype(like).name == "uint4" else -7, high=7)
    if np.dtype(like).kind in "iu" or np.dtype(like).name == "uint4":
        f = x.astype(np.float32)
        x = x[np.isfinite(f) & (f >= 0) & (f < 16)]
    check_op("CastLike", {"x": x, "like": np.zeros(2, like)}, isa=isa, rtol=0, atol=0, opset=21)


def test_castlike_empty(isa: str) -> None:
    check_op("CastLike", {"x": np.zeros((0, 3), np.float32), "like": np.zeros(1, np.int64)}, isa=isa)


# ---- bfloat16, and MatMul / Softmax / LogSoftmax of float64 ---------------------------------------------


@pytest.mark.parametrize("op", ["Sin", "Exp", "Relu", "Celu", "Sigmoid", "Round"])
def test_unary_bfloat16(op: str, isa: str) -> None:
    x = rnd((3, 33), np.float32).astype(ml_dtypes.bfloat16)
    check_op(op, {"x": x}, isa=isa, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
def test_binary_bfloat16_rounds_once(op: str, isa: str) -> None:
    a = rnd((4, 17), np.float32, seed=1).astype(ml_dtypes.bfloat16)
    b = rnd((17,), np.float32, seed=2, low=0.5, high=3).astype(ml_dtypes.bfloat16)
    check_op(op, {"a": a, "b": b}, isa=isa, rtol=0, atol=0)  # float arithmetic, one rounding: exact


@pytest.mark.parametrize(("sa", "sb"), [((3, 4), (4, 5)), ((2, 3, 4), (4, 7)), ((7,), (7, 2)), ((3, 7), (7,)), ((7,), (7,)),
                                        ((2, 1, 3, 4), (5, 4, 2)), ((0, 4), (4, 3)), ((3, 0), (0, 2))], ids=str)  # fmt: skip
def test_matmul_float64(sa: tuple, sb: tuple, isa: str) -> None:
    check_op("MatMul", {"a": rnd(sa, np.float64, seed=1), "b": rnd(sb, np.float64, seed=2)}, isa=isa, rtol=1e-12, atol=1e-12)


def test_matmul_float64_mismatched_inner_dimension_is_an_error() -> None:
    raises("MatMul", {"a": np.ones((2, 3)), "b": np.ones((4, 2))}, "inner dimensions")


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_float64(op: str, axis: int, isa: str) -> None:
    x = rnd((4, 17, 3), np.float64, low=-30, high=30)
    check_op(op, {"x": x}, {"axis": axis}, isa=isa, rtol=1e-12, atol=1e-12)


# ---- float16 MatMul / Softmax / LogSoftmax: float32 arithmetic, results rounded to float16 ---------


@pytest.mark.parametrize(("sa", "sb"), [((3, 4), (4, 5)), ((2, 3, 17), (17, 7)), ((7,), (7, 2)), ((1, 1000), (1000, 3)),
                                        ((2, 1, 3, 4), (5, 4, 2)), ((0, 4), (4, 3)), ((3, 0), (0, 2))], ids=str)  # fmt: skip
def test_matmul_float16(sa: tuple, sb: tuple, isa: str) -> None:
    a, b = rnd(sa, np.float16, seed=1), rnd(sb, np.float16, seed=2)
    # one rounding of a float32 sum: within one float16 ulp of numpy's (which also sums in float32)
    got = check_op("MatMul", {"a": a, "b": b}, isa=isa, rtol=1e-3, atol=1e-3)
    assert got[0].dtype == np.float16
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert np.all(np.abs(got[0].astype(np.float64) - exact) <= 2 ** -10 * np.abs(exact) + 1e-3)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_float16(axis: int, isa: str) -> None:
    x = rnd((4, 17, 3), np.float16, low=-10, high=10)
    got = check_op("Softmax", {"x": x}, {"axis": axis}, isa=isa, rtol=2e-3, atol=2e-3)
    assert got[0].dtype == np.float16


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_logsoftmax_float16(axis: int, isa: str) -> None:
    # onnx.reference takes the log of a float16 softmax, which underflows to -inf below about -17;
    # the oracle is float64 arithmetic rounded once
    from .native import check_native

    x = rnd((4, 17, 3), np.float16, low=-10, high=10)
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis=axis, keepdims=True)
    want = (shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))).astype(np.float16)
    check_native("LogSoftmax", {"x": x}, [want], {"axis": axis}, isa=isa, rtol=2e-3, atol=2e-3)
