"""MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv and DynamicQuantizeLinear (qlinear_ops.cc)
against onnx.reference, bit-exact: uint8/int8 operands in every combination, zero points per
tensor, per column of B and per output channel of W, batch broadcasting and 1-D operands, 1-D to
3-D convolutions with pads, strides, dilations, groups and auto_pad, requantization that saturates,
empty inputs, and mismatched operands as clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op
from .native import check_native

OPS_COVERED = ["MatMulInteger", "QLinearMatMul", "ConvInteger", "QLinearConv", "DynamicQuantizeLinear"]

Q8 = [np.uint8, np.int8]


def q(shape: tuple, dtype: type, seed: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return random_input(shape, dtype, seed=seed, low=info.min, high=info.max)


def zp(dtype: type, seed: int, n: int | None = None) -> np.ndarray:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    shape = () if n is None else (n,)
    return rng.integers(info.min // 2, info.max // 2 + 1, shape).astype(dtype)


MATMUL_SHAPES = [((1, 1), (1, 1)), ((7, 17), (17, 5)), ((3, 1, 4, 9), (2, 9, 7)), ((9,), (9, 3)), ((2, 5, 8), (8,)), ((0, 4), (4, 3))]


@pytest.mark.parametrize("bt", Q8, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("at", Q8, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("ashape", "bshape"), MATMUL_SHAPES, ids=str)
def test_matmul_integer(ashape: tuple, bshape: tuple, at: type, bt: type, isa: str) -> None:
    a, b = q(ashape, at, 1), q(bshape, bt, 2)
    check_op("MatMulInteger", {"a": a, "b": b, "az": zp(at, 3), "bz": zp(bt, 4)}, isa=isa, rtol=0, atol=0)
    check_op("MatMulInteger", {"a": a, "b": b}, isa=isa, rtol=0, atol=0)
    if len(bshape) == 2:  # a zero point per column of B
        check_op("MatMulInteger", {"a": a, "b": b, "az": None, "bz": zp(bt, 5, bshape[1])}, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("yt", Q8, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("at", Q8, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("ashape", "bshape"), MATMUL_SHAPES, ids=str)
def test_qlinear_matmul(ashape: tuple, bshape: tuple, at: type, yt: type, isa: str) -> None:
    bt = np.int8 if at == np.uint8 else np.uint8
    ins = {
        "a": q(ashape, at, 1), "as": np.float32(0.05), "az": zp(at, 2),
        "b": q(bshape, bt, 3), "bs": np.float32(0.02), "bz": zp(bt, 4),
        "ys": np.float32(0.7), "yz": zp(yt, 5),
    }
    check_op("QLinearMatMul", ins, isa=isa, opset=21, rtol=0, atol=0)
    if len(bshape) == 2:  # per-column scales and zero points of B
        n = bshape[1]
        ins2 = {**ins, "bs": np.linspace(0.01, 0.08, n, dtype=np.float32), "bz": zp(bt, 6, n)}
        check_op("QLinearMatMul", ins2, isa=isa, opset=21, rtol=0, atol=0)


def test_qlinear_matmul_saturates(isa: str) -> None:
    a = np.full((3, 4), 255, np.uint8)
    b = np.full((4, 2), 127, np.int8)
    ins = {
        "a": a, "as": np.float32(1), "az": np.uint8(0),
        "b": b, "bs": np.float32(1), "bz": np.int8(0),
        "ys": np.float32(0.5), "yz": np.int8(3),
    }
    got = check_op("QLinearMatMul", ins, isa=isa, opset=21, rtol=0, atol=0)
    assert (got[0] == 127).all()


CONV_CASES = {
    "1d": ((2, 3, 17), (4, 3, 3), {}),
    "2d-pad-stride": ((1, 4, 7, 9), (6, 4, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    "2d-group-dil": ((1, 6, 9, 8), (4, 3, 2, 3), {"group": 2, "dilations": [2, 1], "pads": [0, 1, 2, 0]}),
    "2d-same": ((1, 2, 7, 7), (3, 2, 3, 2), {"auto_pad": "SAME_UPPER", "strides": [2, 1]}),
    "2d-depthwise": ((2, 5, 6, 6), (5, 1, 3, 3), {"group": 5, "pads": [1, 1, 1, 1]}),
    "3d": ((1, 2, 4, 5, 6), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1], "strides": [1, 2, 2]}),
    "unit": ((1, 1, 1, 1), (1, 1, 1, 1), {}),
}


@pytest.mark.parametrize("wt", Q8, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("xt", Q8, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_integer(case: str, xt: type, wt: type, isa: str) -> None:
    xs, ws, attrs = CONV_CASES[case]
    x, w = q(xs, xt, 1), q(ws, wt, 2)
    check_op("ConvInteger", {"x": x, "w": w, "xz": zp(xt, 3), "wz": zp(wt, 4)}, attrs, isa=isa, rtol=0, atol=0)
    check_op("ConvInteger", {"x": x, "w": w}, attrs, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("xt", Q8, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_qlinear_conv(case: str, xt: type, isa: str) -> None:
    xs, ws, attrs = CONV_CASES[case]
    m = ws[0] if len(xs) == 4 else 1  # onnx.reference takes per-channel scales of 2-D convolutions only
    ins = {
        "x": q(xs, xt, 1), "xs": np.float32(0.03), "xz": zp(xt, 2),
        "w": q(ws, np.int8, 3), "ws": np.linspace(0.005, 0.04, m, dtype=np.float32), "wz": np.zeros(m, np.int8),
        "ys": np.float32(0.4), "yz": zp(xt, 4),
        "b": np.random.default_rng(5).integers(-500, 500, ws[0]).astype(np.int32),
    }
    check_op("QLinearConv", ins, attrs, isa=isa, rtol=0, atol=0)
    check_op("QLinearConv", {**ins, "ws": np.float32(0.01), "wz": np.int8(0), "b": None}, attrs, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(1,), (7,), (17, 3), (4, 1031)], ids=str)
@pytest.mark.parametrize(("low", "high"), [(-3, 5), (0.5, 2), (-4, -1), (0, 0)])
def test_dynamic_quantize_linear(shape: tuple, low: float, high: float, isa: str) -> None:
    x = random_input(shape, np.float32, seed=6, low=low, high=high)
    check_op("DynamicQuantizeLinear", {"x": x}, isa=isa, num_outputs=3, rtol=0, atol=0)


def test_dynamic_quantize_linear_empty(isa: str) -> None:
    x = np.zeros((0, 3), np.float32)
    want = [np.zeros((0, 3), np.uint8), np.array(1 / 255, np.float32), np.array(0, np.uint8)]
    check_native("DynamicQuantizeLinear", {"x": x}, want, isa=isa, rtol=0, atol=0)


def test_conv_integer_empty_batch(isa: str) -> None:
    x = np.zeros((0, 2, 5, 5), np.uint8)
    w = q((3, 2, 3, 3), np.uint8, 1)
    m = single_op_model("ConvInteger", {"x": x, "w": w}, consts=["w"])
    got = mopt.Session(m, isa=isa, fallback=False).run(None, {"x": x})
    assert got[0].shape == (0, 3, 3, 3)
    assert got[0].dtype == np.int32


def test_matmul_integer_mismatch_is_an_error() -> None:
    ins = {"a": np.ones((2, 3), np.uint8), "b": np.ones((4, 2), np.uint8)}
    m = single_op_model("MatMulInteger", ins, output_dtypes=[TensorProto.INT32])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="MatMulInteger.*inner dimension"):
        mopt.Session(cm, fallback=False).run(None, ins)


def test_conv_integer_bad_group_is_an_error() -> None:
    ins = {"x": np.ones((1, 4, 5, 5), np.uint8), "w": np.ones((3, 2, 3, 3), np.uint8)}
    m = single_op_model("ConvInteger", ins, {"group": 2}, output_dtypes=[TensorProto.INT32])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="ConvInteger.*group"):
        mopt.Session(cm, fallback=False).run(None, ins)
