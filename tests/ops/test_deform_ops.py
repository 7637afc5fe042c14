"""DeformConv (deform_ops.cc) against onnx.reference (2-D) and a numpy oracle (1-D to 3-D): zero
offsets (an ordinary convolution), offsets moving taps between and past the input's pixels, masks,
bias, groups, offset groups, pads, strides and dilations, float64/16, an empty batch, and an
offset of the wrong shape as a clear error."""

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

OPS_COVERED = ["DeformConv"]


def out_dims(xs: tuple, ws: tuple, attrs: dict) -> list[int]:
    r = len(xs) - 2
    st = attrs.get("strides", [1] * r)
    dl = attrs.get("dilations", [1] * r)
    pd = attrs.get("pads", [0] * 2 * r)
    return [(xs[2 + i] + pd[i] + pd[r + i] - (ws[2 + i] - 1) * dl[i] - 1) // st[i] + 1 for i in range(r)]


def deform_oracle(x, w, off, b, mask, attrs: dict) -> np.ndarray:
    """The definition, one output at a time: sum over channels and taps of W * mask * (the input
    interpolated multilinearly at the moved tap position, zero outside)."""
    r = x.ndim - 2
    st = attrs.get("strides", [1] * r)
    dl = attrs.get("dilations", [1] * r)
    pd = attrs.get("pads", [0] * 2 * r)
    g, og = attrs.get("group", 1), attrs.get("offset_group", 1)
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    ks = w.shape[2:]
    outs = out_dims(x.shape, w.shape, attrs)
    x64 = x.astype(np.float64)
    offr = off.astype(np.float64).reshape(n, og, *ks, r, *outs)
    maskr = np.ones((n, og, *ks, *outs)) if mask is None else mask.astype(np.float64).reshape(n, og, *ks, *outs)

    def sample(bi: int, ci: int, pos: np.ndarray) -> float:
        base = np.floor(pos).astype(int)
        frac = pos - base
        v = 0.0
        for corner in itertools.product((0, 1), repeat=r):
            at = base + np.array(corner)
            wt = np.prod([frac[i] if corner[i] else 1 - frac[i] for i in range(r)])
            if wt != 0 and all(0 <= at[i] < x.shape[2 + i] for i in range(r)):
                v += wt * x64[(bi, ci, *at)]
        return v

    y = np.zeros((n, m, *outs))
    for bi, mi in itertools.product(range(n), range(m)):
        gi = mi // (m // g)
        for o in itertools.product(*[range(v) for v in outs]):
            s = 0.0 if b is None else float(b[mi])
            for cgi in range(cg):
                ci = gi * cg + cgi
                ogi = ci // (c // og)
                for k in itertools.product(*[range(v) for v in ks]):
                    pos = np.array([o[i] * st[i] - pd[i] + k[i] * dl[i] for i in range(r)], np.float64)
                    pos += offr[(bi, ogi, *k, slice(None), *o)]
                    s += w[(mi, cgi, *k)] * maskr[(bi, ogi, *k, *o)] * sample(bi, ci, pos)
            y[(bi, mi, *o)] = s
    return y.astype(x.dtype)


CASES = {
    "2d": ((1, 2, 5, 6), (3, 2, 3, 3), {}),
    "2d-pad-stride": ((2, 4, 7, 7), (4, 2, 3, 2), {"pads": [1, 1, 1, 0], "strides": [2, 1], "group": 2, "offset_group": 2}),
    "2d-dil": ((1, 3, 9, 8), (2, 3, 2, 2), {"dilations": [2, 3], "offset_group": 3}),
    "2d-1x1": ((1, 5, 4, 4), (7, 5, 1, 1), {}),
    "1d": ((2, 3, 17), (4, 3, 3), {"pads": [1, 2]}),
    "3d": ((1, 2, 3, 4, 5), (2, 1, 2, 2, 3), {"group": 2, "pads": [0, 1, 1, 1, 0, 0]}),
}


def inputs(case: str, dtype: type = np.float32, with_mask: bool = True, scale: float = 1.5) -> tuple[dict, dict]:
    xs, ws, attrs = CASES[case]
    r = len(xs) - 2
    outs = out_dims(xs, ws, attrs)
    og = attrs.get("offset_group", 1)
    taps = int(np.prod(ws[2:]))
    ins = {
        "x": random_input(xs, dtype, seed=1),
        "w": random_input(ws, dtype, seed=2),
        "off": random_input((xs[0], og * taps * r, *outs), dtype, seed=3, low=-scale, high=scale),
        "b": random_input((ws[0],), dtype, seed=4),
        "mask": random_input((xs[0], og * taps, *outs), dtype, seed=5, low=0, high=1) if with_mask else None,
    }
    return ins, attrs


@pytest.mark.parametrize("case", [c for c in CASES if len(CASES[c][0]) == 4])
def test_deform_conv_vs_reference(case: str, isa: str) -> None:
    ins, attrs = inputs(case)
    check_op("DeformConv", ins, attrs, isa=isa, opset=19, rtol=1e-4, atol=1e-5)
    check_op("DeformConv", {**ins, "mask": None}, attrs, isa=isa, opset=19, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_deform_conv(case: str, isa: str) -> None:
    ins, attrs = inputs(case, scale=3.0)  # offsets reaching past the input
    want = deform_oracle(ins["x"], ins["w"], ins["off"], ins["b"], ins["mask"], attrs)
    check_native("DeformConv", ins, [want], attrs, isa=isa, opset=19, rtol=1e-4, atol=1e-5)


def test_deform_conv_zero_offsets_is_a_convolution(isa: str) -> None:
    ins, attrs = inputs("2d-pad-stride", with_mask=False)
    ins = {**ins, "off": np.zeros_like(ins["off"])}
    conv = {k: v for k, v in attrs.items() if k != "offset_group"}
    want = check_op("Conv", {"x": ins["x"], "w": ins["w"], "b": ins["b"]}, conv, isa=isa, expect_native=False)
    check_native("DeformConv", ins, want, attrs, isa=isa, opset=19, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_deform_conv_dtypes(dtype: type, isa: str) -> None:
    ins, attrs = inputs("2d", dtype)
    want = deform_oracle(ins["x"], ins["w"], ins["off"], ins["b"], ins["mask"], attrs)
    tol = 2e-2 if dtype == np.float16 else 1e-9
    check_native("DeformConv", ins, [want], attrs, isa=isa, opset=19, rtol=tol, atol=tol)


def test_deform_conv_empty_batch(isa: str) -> None:
    ins = {"x": np.zeros((0, 2, 5, 5), np.float32), "w": np.ones((3, 2, 3, 3), np.float32), "off": np.zeros((0, 18, 3, 3), np.float32)}
    m = single_op_model("DeformConv", ins, opset=19)
    got = mopt.Session(m, isa=isa, fallback=False).run(None, ins)
    assert got[0].shape == (0, 3, 3, 3)


def test_deform_conv_bad_offset_is_an_error() -> None:
    ins = {"x": np.ones((1, 2, 5, 5), np.float32), "w": np.ones((3, 2, 3, 3), np.float32), "off": np.zeros((1, 9, 3, 3), np.float32)}
    m = single_op_model("DeformConv", ins, opset=19, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="DeformConv.*offset"):
        mopt.Session(cm, fallback=False).run(None, ins)
