"""MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool and LRN: every ISA, 1-D and 2-D windows,
pads, strides, dilations, ceil_mode, auto_pad, the Indices output.

onnx.reference (1.23) is not a usable oracle for most of these: MaxPool with unit strides takes a
path that computes no Indices and fails on 1-D pads; SAME_LOWER with strides gets the output size
and padding side wrong; AveragePool with ceil_mode divides by the wrong count; LRN sums the window
over the batch axis instead of channels and takes 4-D input only; GlobalMaxPool reduces the wrong
axes for anything but 4-D; GlobalAveragePool divides by zero on empty input. The expected results
here come from the numpy implementations below, written from the ONNX operator specification (they
agree with ONNX Runtime on every case); test_agrees_with_onnx_reference keeps the cases where
onnx.reference is right compared against it as well.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op
from .native import check_native

OPS_COVERED = ["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN"]


def rnd(shape: tuple[int, ...], seed: int = 0, low: float = -2, high: float = 2) -> np.ndarray:
    return random_input(shape, np.float32, seed=seed, low=low, high=high)


# name -> (x shape, attributes); shared by MaxPool and AveragePool
WINDOWS = {
    "k2s2": ((1, 3, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "k2s2-odd": ((1, 3, 7, 17), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "k3s1-pad1": ((1, 3, 7, 7), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "k3s2-pad1": ((2, 17, 17, 17), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "k3s2-asym": ((1, 3, 7, 17), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 1, 2, 0]}),
    "k1": ((1, 3, 7, 7), {"kernel_shape": [1, 1]}),
    "k1-s2": ((1, 3, 7, 7), {"kernel_shape": [1, 1], "strides": [2, 2]}),
    "spatial1": ((1, 5, 1, 1), {"kernel_shape": [1, 1]}),
    "spatial1-pad": ((1, 5, 1, 1), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "rect": ((1, 3, 17, 7), {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [1, 0, 1, 1]}),
    "whole-image": ((1, 3, 7, 7), {"kernel_shape": [7, 7]}),
    "ceil-k3s2": ((1, 3, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "ceil-k2s2-odd": ((1, 3, 7, 17), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    "ceil-k3s2-pad": ((1, 3, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    "ceil-k3s3-asym": ((1, 3, 10, 11), {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [0, 1, 1, 0], "ceil_mode": 1}),
    "ceil-exact": ((1, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "same-upper": ((1, 3, 7, 7), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}),
    "same-upper-s2": ((1, 3, 8, 7), {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "same-lower-s2": ((1, 3, 7, 7), {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    "same-lower-k4": ((1, 3, 7, 9), {"kernel_shape": [4, 4], "auto_pad": "SAME_LOWER"}),
    "valid": ((1, 3, 17, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID"}),
    "batch3-c17": ((3, 17, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    # wide rows: the vectorised row/column loops with their remainders (squeezenet's and inception's pools)
    "wide-k3s2": ((1, 2, 9, 109), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    # rows of 16+ outputs at stride 2 (AVX-512: sixteen from the even and odd lanes) with pads and ceil
    "wide-k3s2-pad-ceil": ((1, 2, 9, 77), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    "wide-k2s2-pad": ((1, 2, 6, 70), {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 1, 0, 1]}),
    "wide-k3s1-pad1": ((1, 2, 5, 71), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    # 3x3 / stride 1 / pad 1: the plane reduced flat, its border redone (Inception's pools; 2 rows, 2 columns)
    "same3x3-14": ((2, 3, 14, 14), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "same3x3-2-rows": ((1, 2, 2, 9), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "same3x3-2-cols": ((1, 2, 7, 2), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "wide-k5s3-ceil": ((1, 2, 11, 67), {"kernel_shape": [5, 5], "strides": [3, 3], "pads": [2, 1, 0, 2], "ceil_mode": 1}),
    "1d-k3s2": ((2, 3, 17), {"kernel_shape": [3], "strides": [2]}),
    "1d-pad": ((1, 3, 7), {"kernel_shape": [3], "pads": [2, 1]}),
    "1d-ceil": ((1, 3, 1031), {"kernel_shape": [4], "strides": [3], "ceil_mode": 1}),
    "1d-same-lower": ((1, 3, 7), {"kernel_shape": [2], "auto_pad": "SAME_LOWER"}),
}

# dilations: MaxPool at opset 18, AveragePool from opset 19
DILATED = {
    "dil2": ((1, 3, 17, 17), {"kernel_shape": [3, 3], "dilations": [2, 2]}),
    "dil2-pad-s2": ((1, 3, 17, 17), {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 2, 2, 2], "strides": [2, 2]}),
    "dil-mixed": ((1, 3, 17, 7), {"kernel_shape": [2, 3], "dilations": [3, 1], "pads": [1, 0, 0, 1]}),
    "dil-ceil": ((1, 3, 10, 10), {"kernel_shape": [2, 2], "dilations": [2, 2], "strides": [3, 3], "ceil_mode": 1}),
    "1d-dil3": ((1, 3, 17), {"kernel_shape": [3], "dilations": [3], "pads": [1, 1]}),
}


# -- oracles from the ONNX specification ----------------------------------------------------------


def pool_geometry(in_sizes: tuple[int, ...], attrs: dict) -> tuple[list[int], list[int], list[int], list[int]]:
    """Output sizes, leading pads, strides and dilations per spatial axis."""
    ks = attrs["kernel_shape"]
    n = len(ks)
    st = attrs.get("strides", [1] * n)
    dl = attrs.get("dilations", [1] * n)
    pads = attrs.get("pads", [0] * 2 * n)
    auto = attrs.get("auto_pad", "NOTSET")
    outs, p0s, p1s = [], [], []
    for i in range(n):
        ek = (ks[i] - 1) * dl[i] + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):  # output ceil(in / stride); the odd pad at the end (UPPER) or start (LOWER)
            out = -(-in_sizes[i] // st[i])
            total = max(0, (out - 1) * st[i] + ek - in_sizes[i])
            p0 = total // 2 if auto == "SAME_UPPER" else total - total // 2
            p1 = total - p0
        else:
            p0, p1 = (0, 0) if auto == "VALID" else (pads[i], pads[n + i])
            span = in_sizes[i] + p0 + p1 - ek
            if attrs.get("ceil_mode", 0):
                out = -(-span // st[i]) + 1
                if (out - 1) * st[i] >= in_sizes[i] + p0:  # the last window must start inside the input or the leading pad
                    out -= 1
            else:
                out = span // st[i] + 1
        outs.append(out)
        p0s.append(p0)
        p1s.append(p1)
    return outs, p0s, p1s, list(ks)


def pool_oracle(x: np.ndarray, op: str, attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(Y, Indices) of MaxPool, (Y, unused) of AveragePool, one window at a time."""
    N, C = x.shape[:2]
    sp = x.shape[2:]
    outs, p0s, p1s, ks = pool_geometry(sp, attrs)
    n = len(ks)
    st = attrs.get("strides", [1] * n)
    dl = attrs.get("dilations", [1] * n)
    y = np.zeros((N, C, *outs), np.float32)
    idx = np.zeros((N, C, *outs), np.int64)
    for b, c in itertools.product(range(N), range(C)):
        for o in itertools.product(*[range(v) for v in outs]):
            taps, in_padded = [], 0
            for k in itertools.product(*[range(v) for v in ks]):
                pos = tuple(o[i] * st[i] - p0s[i] + k[i] * dl[i] for i in range(n))
                in_padded += all(-p0s[i] <= pos[i] < sp[i] + p1s[i] for i in range(n))
                if all(0 <= pos[i] < sp[i] for i in range(n)):
                    taps.append(pos)
            vals = [x[(b, c, *t)] for t in taps]
            if op == "MaxPool":
                best = int(np.argmax(vals))  # the first of equal maxima
                y[(b, c, *o)] = vals[best]
                t = taps[best]
                # storage_order 1: the index within the image is column-major
                flat = t[1] * sp[0] + t[0] if n == 2 and attrs.get("storage_order", 0) == 1 else int(np.ravel_multi_index(t, sp))
                idx[(b, c, *o)] = (b * C + c) * int(np.prod(sp)) + flat
            else:
                div = in_padded if attrs.get("count_include_pad", 0) else len(vals)
                y[(b, c, *o)] = np.float32(np.sum(np.asarray(vals, np.float64)) / div)
    return y, idx


def lrn_oracle(x: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0) -> np.ndarray:
    """y = x / (bias + alpha / size * sum of x^2 over channels [c - floor((size-1)/2), c + ceil((size-1)/2)])^beta"""
    C = x.shape[1]
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    x64 = x.astype(np.float64)
    sq = np.zeros_like(x64)
    for c in range(C):
        sq[:, c] = np.sum(x64[:, max(0, c - lo) : min(C - 1, c + hi) + 1] ** 2, axis=1)
    return (x64 / (bias + alpha / size * sq) ** beta).astype(np.float32)


@cache
def pool_case(op: str, case: str, extra: tuple = ()) -> tuple[np.ndarray, dict, np.ndarray, np.ndarray]:
    shape, attrs = {**WINDOWS, **DILATED}[case]
    attrs = {**attrs, **dict(extra)}
    x = rnd(shape, seed=len(case))
    y, idx = pool_oracle(x, op, attrs)
    return x, attrs, y, idx


# -- MaxPool ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [*WINDOWS, *DILATED])
def test_maxpool(case: str, isa: str) -> None:
    x, attrs, y, _ = pool_case("MaxPool", case)
    check_native("MaxPool", {"x": x}, [y], attrs, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("case", [*WINDOWS, *DILATED])
def test_maxpool_indices(case: str, storage_order: int, isa: str) -> None:
    x, attrs, y, idx = pool_case("MaxPool", case, (("storage_order", storage_order),))
    check_native("MaxPool", {"x": x}, [y, idx], attrs, isa=isa, rtol=0, atol=0)


def test_maxpool_negative_inputs_ignore_padding(isa: str) -> None:
    """Padding never wins: every value is negative, so a zero pad would show up as 0."""
    x = rnd((1, 3, 7, 7), seed=2, low=-3, high=-1)
    for attrs in ({"kernel_shape": [3, 3], "pads": [1, 2, 2, 1]}, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}):
        y, idx = pool_oracle(x, "MaxPool", attrs)
        check_native("MaxPool", {"x": x}, [y, idx], attrs, isa=isa, rtol=0, atol=0)


def test_maxpool_indices_pick_the_first_of_equal_values(isa: str) -> None:
    x = np.repeat(np.array([1.0, 2.0, 2.0, 0.5], np.float32), 4).reshape(1, 1, 4, 4)
    for attrs in (
        {"kernel_shape": [2, 2]},
        {"kernel_shape": [2, 2], "storage_order": 1},
        {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]},
    ):
        y, idx = pool_oracle(x, "MaxPool", attrs)
        check_native("MaxPool", {"x": x}, [y, idx], attrs, isa=isa, rtol=0, atol=0)


def test_maxpool_special_values(isa: str) -> None:
    x = np.array([[-np.inf, -np.inf, 1.0, np.inf], [2.0, -1.0, -0.0, 0.0], [np.inf, 3.0, -5.0, -np.inf], [0.0, 1.0, 2.0, 3.0]], np.float32)
    x = x.reshape(1, 1, 4, 4)
    y, idx = pool_oracle(x, "MaxPool", {"kernel_shape": [2, 2]})
    check_native("MaxPool", {"x": x}, [y, idx], {"kernel_shape": [2, 2]}, isa=isa, rtol=0, atol=0)
    check_op("MaxPool", {"x": x}, {"kernel_shape": [2, 2], "strides": [2, 2]}, isa=isa, rtol=0, atol=0)


# -- AveragePool --------------------------------------------------------------------------------


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", [*WINDOWS, *DILATED])
def test_averagepool(case: str, count_include_pad: int, isa: str) -> None:
    x, attrs, y, _ = pool_case("AveragePool", case, (("count_include_pad", count_include_pad),))
    opset = 19 if "dilations" in attrs else 18  # AveragePool has dilations from opset 19
    check_native("AveragePool", {"x": x}, [y], attrs, isa=isa, opset=opset, rtol=2e-6, atol=1e-6)


# -- against onnx.reference, where it is right ------------------------------------------------------

REFERENCE_CASES = {
    "MaxPool": [
        "k2s2",
        "k2s2-odd",
        "k3s2-pad1",
        "k3s2-asym",
        "k1-s2",
        "rect",
        "ceil-k3s2",
        "ceil-k3s3-asym",
        "same-upper-s2",
        "valid",
        "batch3-c17",
        "1d-k3s2",
        "dil2-pad-s2",
        "dil-ceil",
    ],
    "AveragePool": [
        "k2s2",
        "k3s1-pad1",
        "k3s2-pad1",
        "k3s2-asym",
        "k1",
        "spatial1-pad",
        "rect",
        "ceil-k3s2",
        "ceil-k3s2-pad",
        "same-upper",
        "same-lower-s2",
        "valid",
        "1d-pad",
        "dil2-pad-s2",
    ],
}


@pytest.mark.parametrize(("op", "case"), [(op, c) for op, cases in REFERENCE_CASES.items() for c in cases], ids=lambda v: v)
def test_agrees_with_onnx_reference(op: str, case: str, isa: str) -> None:
    shape, attrs = {**WINDOWS, **DILATED}[case]
    x = rnd(shape, seed=9)
    n_out = 2 if op == "MaxPool" else 1
    opset = 19 if "dilations" in attrs else 18
    for cip in [0, 1] if op == "AveragePool" else [None]:
        a = attrs if cip is None else {**attrs, "count_include_pad": cip}
        check_op(op, {"x": x}, a, isa=isa, num_outputs=n_out, opset=opset, rtol=2e-6, atol=1e-6)


# -- global pooling -------------------------------------------------------------------------------

GLOBAL_SHAPES = [
    (1, 3, 7, 7),
    (2, 17, 1, 1),
    (1, 64, 17, 17),
    (3, 5, 1031),
    (1, 1, 1),
    (1, 2, 3, 4, 5),
    (2, 3, 33, 1),
    (0, 3, 4, 4),
    (2, 0, 4, 4),
]


@pytest.mark.parametrize("shape", GLOBAL_SHAPES, ids=str)
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(op: str, shape: tuple[int, ...], isa: str) -> None:
    x = rnd(shape, seed=7, low=-3, high=-1) if op == "GlobalMaxPool" else rnd(shape, seed=7)
    axes = tuple(range(2, len(shape)))
    x64 = x.astype(np.float64)
    y = (
        x64.max(axis=axes, keepdims=True, initial=-np.inf)
        if op == "GlobalMaxPool"
        else x64.sum(axis=axes, keepdims=True) / max(1, int(np.prod(shape[2:])))
    )
    check_native(op, {"x": x}, [y.astype(np.float32)], isa=isa, rtol=2e-6, atol=1e-6)
    if len(shape) == 4 and x.size:
        check_op(op, {"x": x}, isa=isa, rtol=2e-6, atol=1e-6)


def test_global_max_pool_special_values(isa: str) -> None:
    x = np.array([[-np.inf] * 20, [np.inf] + [1.0] * 19, [-1.0] * 19 + [np.inf], [-3.0] * 17 + [-2.0, -4.0, -3.5]], np.float32)
    check_native("GlobalMaxPool", {"x": x.reshape(1, 4, 20)}, [x.max(axis=1).reshape(1, 4, 1)], isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool_over_an_empty_window_is_a_clear_error(op: str, isa: str) -> None:
    x = np.zeros((2, 3, 0), np.float32)
    model = single_op_model(op, {"x": x}, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(model, 0, isa=isa)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.ExecutionError, match="empty window"):
        mopt.Session(cm, isa=isa).run(None, {"x": x})


# -- LRN ------------------------------------------------------------------------------------------

LRN_CASES = {
    "size1": ((1, 5, 7, 7), {"size": 1}),
    "size3": ((1, 17, 7, 7), {"size": 3, "alpha": 1e-3}),
    "size4-even": ((2, 7, 3, 5), {"size": 4, "alpha": 0.01, "beta": 0.5, "bias": 2.0}),
    "size5-alexnet": ((1, 17, 5, 5), {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}),
    "size-wider-than-c": ((1, 3, 4, 4), {"size": 7, "alpha": 0.1, "beta": 1.0}),
    "c1": ((2, 1, 7, 7), {"size": 3, "alpha": 0.5, "beta": 0.3, "bias": 0.5}),
    "batch3": ((3, 5, 2, 9), {"size": 3, "alpha": 0.3, "beta": 0.75, "bias": 1.0}),
    "3d-input": ((2, 9, 17), {"size": 3, "alpha": 0.2, "beta": 0.9, "bias": 1.5}),
    "5d-input": ((1, 6, 2, 3, 4), {"size": 5, "alpha": 0.05}),
    "big-alpha": ((1, 9, 7, 7), {"size": 3, "alpha": 2.0, "beta": 0.75, "bias": 3.0}),
    "long-inner": ((1, 4, 1031), {"size": 2, "alpha": 0.5, "beta": 0.6, "bias": 1.0}),
}


@pytest.mark.parametrize("case", list(LRN_CASES))
def test_lrn(case: str, isa: str) -> None:
    shape, attrs = LRN_CASES[case]
    x = rnd(shape, seed=8, low=-3, high=3)
    check_native("LRN", {"x": x}, [lrn_oracle(x, **attrs)], attrs, isa=isa, rtol=1e-5, atol=1e-6)
