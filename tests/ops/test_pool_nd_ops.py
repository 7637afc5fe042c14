"""MaxPool, AveragePool and LpPool on pool_nd_ops.cc: 3-D windows (pads, strides, dilations,
ceil_mode, auto_pad, count_include_pad, the Indices output in both storage orders), MaxPool of
int8/uint8, pools of float64/float16, LpPool of any p, empty batches, and a window larger than the
padded input as a clear error; MaxUnpool of MaxPool's indices, with and without output_shape. The oracles are test_pool.py's numpy implementations of the
specification (onnx.reference gets several of these cases wrong, see there), generalized here for
LpPool and the column-major indices of 3-D windows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op
from .native import check_native
from .test_pool import pool_geometry, pool_oracle

OPS_COVERED = ["LpPool", "MaxPool", "AveragePool", "MaxUnpool"]

WINDOWS_3D = {
    "k2s2": ((1, 3, 4, 6, 8), {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
    "k3-pad1": ((2, 2, 5, 7, 3), {"kernel_shape": [3, 3, 3], "pads": [1, 1, 1, 1, 1, 1]}),
    "asym": ((1, 5, 7, 9, 17), {"kernel_shape": [3, 2, 4], "strides": [2, 1, 3], "pads": [0, 1, 2, 1, 0, 1]}),
    "ceil": ((1, 2, 7, 8, 9), {"kernel_shape": [3, 3, 2], "strides": [2, 3, 2], "ceil_mode": 1}),
    "ceil-pad": ((1, 2, 7, 7, 7), {"kernel_shape": [3, 3, 3], "strides": [2, 2, 2], "pads": [1, 1, 1, 1, 1, 1], "ceil_mode": 1}),
    "dilated": ((1, 2, 9, 9, 9), {"kernel_shape": [2, 3, 2], "dilations": [2, 1, 3], "pads": [1, 0, 1, 0, 1, 1]}),
    "same-upper": ((1, 3, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1], "auto_pad": "SAME_UPPER"}),
    "same-lower": ((1, 3, 5, 6, 7), {"kernel_shape": [2, 3, 4], "auto_pad": "SAME_LOWER"}),
    "valid": ((1, 1, 17, 4, 5), {"kernel_shape": [3, 2, 2], "strides": [3, 2, 2], "auto_pad": "VALID"}),
    "unit": ((1, 1, 1, 1, 1), {"kernel_shape": [1, 1, 1]}),
    "4d": ((1, 2, 3, 4, 5, 6), {"kernel_shape": [2, 2, 2, 2], "pads": [0, 1, 0, 1, 1, 0, 1, 0]}),
}


def col_major_indices(idx: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """Row-major flat indices (over N, C and the spatial dims) with the spatial part made column-major."""
    s = int(np.prod(spatial))
    plane, flat = np.divmod(idx, s)
    pos = np.unravel_index(flat, spatial)
    cm = np.zeros_like(flat)
    mul = 1
    for i, p in enumerate(pos):
        cm += p * mul
        mul *= spatial[i]
    return plane * s + cm


@pytest.mark.parametrize("case", list(WINDOWS_3D))
def test_maxpool_3d(case: str, isa: str) -> None:
    shape, attrs = WINDOWS_3D[case]
    x = random_input(shape, np.float32, seed=len(case))
    y, idx = pool_oracle(x, "MaxPool", attrs)
    check_native("MaxPool", {"x": x}, [y, idx], attrs, isa=isa, rtol=0, atol=0)
    cm = col_major_indices(idx, shape[2:])
    check_native("MaxPool", {"x": x}, [y, cm], {**attrs, "storage_order": 1}, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", list(WINDOWS_3D))
def test_averagepool_3d(case: str, count_include_pad: int, isa: str) -> None:
    shape, attrs = WINDOWS_3D[case]
    attrs = {**attrs, "count_include_pad": count_include_pad}
    x = random_input(shape, np.float32, seed=len(case))
    y, _ = pool_oracle(x, "AveragePool", attrs)
    check_native("AveragePool", {"x": x}, [y], attrs, isa=isa, opset=19, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", ["k2s2", "k3-pad1", "ceil-pad", "dilated"])
def test_maxpool_integers(case: str, dtype: type, isa: str) -> None:
    shape, attrs = WINDOWS_3D[case]
    info = np.iinfo(dtype)
    x = random_input(shape, dtype, seed=3, low=info.min, high=info.max)
    y, idx = pool_oracle(x.astype(np.float32), "MaxPool", attrs)
    check_native("MaxPool", {"x": x}, [y.astype(dtype), idx], attrs, isa=isa, rtol=0, atol=0)
    # 2-D windows of integers take this kernel too
    x2 = random_input((2, 3, 7, 17), dtype, seed=4, low=info.min, high=info.max)
    a2 = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    y2, idx2 = pool_oracle(x2.astype(np.float32), "MaxPool", a2)
    check_native("MaxPool", {"x": x2}, [y2.astype(dtype), idx2], a2, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_pool_float_types(op: str, dtype: type, isa: str) -> None:
    for shape, attrs in [((1, 3, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2]}), WINDOWS_3D["asym"]]:
        x = random_input(shape, dtype, seed=5)
        y, _ = pool_oracle(x.astype(np.float64), op, attrs)
        tol = 1e-3 if dtype == np.float16 else 1e-6
        check_native(op, {"x": x}, [y.astype(dtype)], attrs, isa=isa, rtol=tol, atol=tol)


def lp_oracle(x: np.ndarray, attrs: dict) -> np.ndarray:
    """(sum over the window's input elements of |x|^p)^(1/p); padding adds nothing."""
    p = attrs.get("p", 2)
    sp = x.shape[2:]
    outs, p0s, _, ks = pool_geometry(sp, attrs)
    n = len(ks)
    st = attrs.get("strides", [1] * n)
    dl = attrs.get("dilations", [1] * n)
    y = np.zeros((*x.shape[:2], *outs), np.float64)
    a = np.abs(x.astype(np.float64)) ** p
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for o in itertools.product(*[range(v) for v in outs]):
            s = 0.0
            for k in itertools.product(*[range(v) for v in ks]):
                pos = tuple(o[i] * st[i] - p0s[i] + k[i] * dl[i] for i in range(n))
                if all(0 <= pos[i] < sp[i] for i in range(n)):
                    s += a[(b, c, *pos)]
            y[(b, c, *o)] = s ** (1.0 / p)
    return y.astype(x.dtype)


LP_CASES = {
    "1d": ((2, 3, 17), {"kernel_shape": [3], "strides": [2]}),
    "2d-pad": ((1, 3, 7, 7), {"kernel_shape": [3, 3], "pads": [1, 0, 1, 2]}),
    "2d-dil-ceil": ((1, 2, 9, 8), {"kernel_shape": [2, 2], "dilations": [2, 1], "strides": [2, 3], "ceil_mode": 1}),
    "2d-same": ((1, 2, 6, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "3d": ((1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "pads": [1, 1, 0, 0, 1, 1]}),
}


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("case", list(LP_CASES))
def test_lppool(case: str, p: int, isa: str) -> None:
    shape, attrs = LP_CASES[case]
    attrs = {**attrs, "p": p}
    x = random_input(shape, np.float32, seed=6)
    check_native("LpPool", {"x": x}, [lp_oracle(x, attrs)], attrs, isa=isa, opset=18, rtol=1e-5, atol=1e-5)


def test_lppool_agrees_with_onnx_reference(isa: str) -> None:
    # without padding the reference's average-times-count equals the sum the spec means
    x = random_input((2, 3, 9, 17), np.float32, seed=7)
    check_op("LpPool", {"x": x}, {"kernel_shape": [3, 2], "strides": [2, 3], "p": 3}, isa=isa, opset=18, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_lppool_dtypes(dtype: type, isa: str) -> None:
    shape, attrs = LP_CASES["2d-pad"]
    x = random_input(shape, dtype, seed=8)
    tol = 2e-3 if dtype == np.float16 else 1e-9
    check_native("LpPool", {"x": x}, [lp_oracle(x, attrs)], attrs, isa=isa, opset=18, rtol=tol, atol=tol)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
def test_pool_nd_empty_batch(op: str, isa: str) -> None:
    x = np.zeros((0, 3, 4, 4, 4), np.float32)
    m = single_op_model(op, {"x": x}, {"kernel_shape": [2, 2, 2]}, opset=18)
    assert not mopt.compile(m, 0, isa=isa).fallback_nodes
    got = mopt.Session(m, isa=isa, fallback=False).run(None, {"x": x})
    assert got[0].shape == (0, 3, 3, 3, 3)


def test_pool_nd_window_too_large_is_an_error() -> None:
    x = np.ones((1, 1, 2, 2, 2), np.float32)
    m = single_op_model("LpPool", {"x": x}, {"kernel_shape": [3, 3, 3]}, opset=18, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="LpPool.*window"):
        mopt.Session(cm, fallback=False).run(None, {"x": x})


UNPOOL = {
    "2d": ((1, 3, 8, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "2d-pad": ((2, 2, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "1d": ((1, 2, 17), {"kernel_shape": [3], "strides": [2]}),
    "3d": ((1, 2, 4, 6, 4), {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
}


@pytest.mark.parametrize("case", list(UNPOOL))
def test_max_unpool(case: str, isa: str) -> None:
    shape, attrs = UNPOOL[case]
    x = random_input(shape, np.float32, seed=9)
    y, idx = pool_oracle(x, "MaxPool", attrs)
    check_op("MaxUnpool", {"y": y, "i": idx}, attrs, isa=isa, rtol=0, atol=0)
    bigger = np.array([s + 1 if d >= 2 else s for d, s in enumerate(shape)], np.int64)
    check_op("MaxUnpool", {"y": y, "i": idx, "os": bigger}, attrs, isa=isa, consts=["os"], rtol=0, atol=0)


def test_max_unpool_float64(isa: str) -> None:
    x = random_input((1, 2, 6, 6), np.float64, seed=10)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    y, idx = pool_oracle(x, "MaxPool", attrs)
    check_op("MaxUnpool", {"y": y.astype(np.float64), "i": idx}, attrs, isa=isa, rtol=0, atol=0)


def test_max_unpool_bad_index_is_an_error() -> None:
    ins = {"y": np.ones((1, 1, 2, 2), np.float32), "i": np.array([0, 1, 2, 99], np.int64).reshape(1, 1, 2, 2)}
    m = single_op_model("MaxUnpool", ins, {"kernel_shape": [2, 2], "strides": [2, 2]}, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="MaxUnpool.*index 99"):
        mopt.Session(cm, fallback=False).run(None, ins)
