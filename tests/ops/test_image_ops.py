"""AffineGrid and Col2Im (image_ops.cc) against onnx.reference: 2-D and 3-D grids with and without
align_corners, sizes of 1 and odd sizes; Col2Im in 1-D to 3-D with strides, dilations and pads,
float64/16 and int32 data, an empty batch, and inconsistent shapes as clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op
from .native import check_native

OPS_COVERED = ["AffineGrid", "Col2Im"]


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [(1, 1, 1, 1), (2, 3, 7, 5), (3, 1, 17, 2), (1, 2, 1, 4, 7), (2, 1, 3, 5, 4)], ids=str)
def test_affine_grid(size: tuple, align: int, isa: str) -> None:
    r = len(size) - 2
    theta = random_input((size[0], r, r + 1), np.float32, seed=1)
    ins = {"theta": theta, "size": np.array(size, np.int64)}
    check_op("AffineGrid", ins, {"align_corners": align}, isa=isa, opset=20, consts=["size"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_affine_grid_dtypes(dtype: type, isa: str) -> None:
    theta = random_input((2, 2, 3), dtype, seed=2)
    size = np.array([2, 1, 4, 5], np.int64)
    base_y, base_x = np.meshgrid(-1 + (2 * np.arange(4) + 1) / 4, -1 + (2 * np.arange(5) + 1) / 5, indexing="ij")
    h = np.stack([base_x, base_y, np.ones_like(base_x)], -1)  # (H, W, 3)
    want = np.einsum("nij,hwj->nhwi", theta.astype(np.float64), h).astype(dtype)
    tol = 3e-3 if dtype == np.float16 else 1e-12
    check_native("AffineGrid", {"theta": theta, "size": size}, [want], isa=isa, opset=20, consts=["size"], rtol=tol, atol=tol)


def test_affine_grid_bad_theta_is_an_error() -> None:
    ins = {"theta": np.ones((2, 3, 4), np.float32), "size": np.array([2, 1, 4, 4], np.int64)}
    m = single_op_model("AffineGrid", ins, opset=20, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="AffineGrid.*theta"):
        mopt.Session(cm, fallback=False).run(None, ins)


# name -> (N, C, image_shape, block_shape, attributes)
COL2IM = {
    "2d": (1, 1, (5, 5), (3, 3), {}),
    "2d-stride-pad": (2, 2, (7, 9), (2, 3), {"strides": [2, 3], "pads": [1, 0, 0, 2]}),
    "2d-dil": (1, 3, (7, 6), (2, 2), {"dilations": [3, 2]}),
    "1d": (2, 3, (17,), (3,), {"strides": [2], "pads": [1, 2]}),
    "3d": (1, 2, (3, 4, 5), (2, 2, 2), {"strides": [1, 1, 2], "pads": [0, 1, 0, 1, 0, 1]}),
    "unit": (1, 1, (1, 1), (1, 1), {}),
}


def blocks(img: tuple, blk: tuple, attrs: dict) -> list[int]:
    n = len(img)
    st = attrs.get("strides", [1] * n)
    dl = attrs.get("dilations", [1] * n)
    pd = attrs.get("pads", [0] * 2 * n)
    return [(img[i] + pd[i] + pd[n + i] - dl[i] * (blk[i] - 1) - 1) // st[i] + 1 for i in range(n)]


def col_shape(case: str) -> tuple[int, int, int]:
    n, c, img, blk, attrs = COL2IM[case]
    return (n, c * int(np.prod(blk)), int(np.prod(blocks(img, blk, attrs))))


def col2im_oracle(x: np.ndarray, img: tuple, blk: tuple, attrs: dict) -> np.ndarray:
    n = len(img)
    st = attrs.get("strides", [1] * n)
    dl = attrs.get("dilations", [1] * n)
    pd = attrs.get("pads", [0] * 2 * n)
    nb = blocks(img, blk, attrs)
    N, CK, _ = x.shape
    C = CK // int(np.prod(blk))
    y = np.zeros((N, C, *img), np.float64)
    cols = x.reshape(N, C, *blk, *nb).astype(np.float64)
    for k in np.ndindex(*blk):
        for b in np.ndindex(*nb):
            pos = [b[i] * st[i] - pd[i] + k[i] * dl[i] for i in range(n)]
            if all(0 <= pos[i] < img[i] for i in range(n)):
                y[(slice(None), slice(None), *pos)] += cols[(slice(None), slice(None), *k, *b)]
    return y.astype(x.dtype)


@pytest.mark.parametrize("case", list(COL2IM))
def test_col2im(case: str, isa: str) -> None:
    _, _, img, blk, attrs = COL2IM[case]
    x = random_input(col_shape(case), np.float32, seed=3)
    ins = {"x": x, "img": np.array(img, np.int64), "blk": np.array(blk, np.int64)}
    check_native("Col2Im", ins, [col2im_oracle(x, img, blk, attrs)], attrs, isa=isa, consts=["img", "blk"], rtol=1e-5, atol=1e-5)
    if len(img) == 2:
        check_op("Col2Im", ins, attrs, isa=isa, consts=["img", "blk"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32], ids=lambda d: np.dtype(d).name)
def test_col2im_dtypes(dtype: type, isa: str) -> None:
    _, _, img, blk, attrs = COL2IM["2d-stride-pad"]
    x = random_input(col_shape("2d-stride-pad"), dtype, seed=4, low=-9, high=9)
    ins = {"x": x, "img": np.array(img, np.int64), "blk": np.array(blk, np.int64)}
    tol = 1e-2 if dtype == np.float16 else 0
    check_native("Col2Im", ins, [col2im_oracle(x, img, blk, attrs)], attrs, isa=isa, consts=["img", "blk"], rtol=tol, atol=tol)


def test_col2im_empty_batch(isa: str) -> None:
    ins = {"x": np.zeros((0, 9, 9), np.float32), "img": np.array([5, 5], np.int64), "blk": np.array([3, 3], np.int64)}
    m = single_op_model("Col2Im", ins, consts=["img", "blk"])
    got = mopt.Session(m, isa=isa, fallback=False).run(None, {"x": ins["x"]})
    assert got[0].shape == (0, 1, 5, 5)


def test_col2im_wrong_block_count_is_an_error() -> None:
    ins = {"x": np.ones((1, 9, 8), np.float32), "img": np.array([5, 5], np.int64), "blk": np.array([3, 3], np.int64)}
    m = single_op_model("Col2Im", ins, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="Col2Im.*blocks"):
        mopt.Session(cm, fallback=False).run(None, ins)
