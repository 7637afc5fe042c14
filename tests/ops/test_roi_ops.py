"""RoiAlign (roi_ops.cc) against onnx.reference: avg and max, half_pixel and output_half_pixel,
sampling_ratio 0 (adaptive) and fixed, spatial_scale, ROIs partly outside the map and degenerate
ones, float64/16, no ROIs at all, and a batch index out of range as a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op

OPS_COVERED = ["RoiAlign"]


def rois(n: int, h: int, w: int, seed: int, dtype: type = np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-2, w, n)
    y0 = rng.uniform(-2, h, n)
    return np.stack([x0, y0, x0 + rng.uniform(0, w, n), y0 + rng.uniform(0, h, n)], 1).astype(dtype)


@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize(("xshape", "n_rois", "out", "ratio", "scale"), [
    ((1, 1, 7, 7), 1, (1, 1), 0, 1.0),
    ((2, 3, 17, 13), 7, (3, 5), 2, 1.0),
    ((3, 5, 20, 24), 17, (7, 7), 0, 0.5),
], ids=str)
def test_roi_align(xshape: tuple, n_rois: int, out: tuple, ratio: int, scale: float, mode: str, ctm: str, isa: str) -> None:
    x = random_input(xshape, np.float32, seed=1)
    r = rois(n_rois, int(xshape[2] / scale), int(xshape[3] / scale), seed=2)
    bi = np.random.default_rng(3).integers(0, xshape[0], n_rois).astype(np.int64)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm, "output_height": out[0], "output_width": out[1],
             "sampling_ratio": ratio, "spatial_scale": scale}
    check_op("RoiAlign", {"x": x, "rois": r, "bi": bi}, attrs, isa=isa, opset=16, rtol=1e-4, atol=1e-5)


def test_roi_align_degenerate_rois(isa: str) -> None:
    x = random_input((1, 2, 6, 6), np.float32, seed=4)
    r = np.array([[2, 2, 2, 2], [5, 5, 1, 1], [-9, -9, -8, -8], [0, 0, 20, 3]], np.float32)
    bi = np.zeros(4, np.int64)
    for ctm in ("half_pixel", "output_half_pixel"):
        check_op("RoiAlign", {"x": x, "rois": r, "bi": bi}, {"output_height": 2, "output_width": 3, "coordinate_transformation_mode": ctm},
                 isa=isa, opset=16, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_roi_align_dtypes(dtype: type, isa: str) -> None:
    x = random_input((2, 3, 9, 8), np.dtype(dtype), seed=5)
    r = rois(5, 9, 8, seed=6, dtype=dtype)
    bi = np.array([0, 1, 1, 0, 1], np.int64)
    tol = 1e-2 if dtype == np.float16 else 1e-9
    check_op("RoiAlign", {"x": x, "rois": r, "bi": bi}, {"output_height": 2, "output_width": 2, "sampling_ratio": 2},
             isa=isa, opset=16, rtol=tol, atol=tol)


def test_roi_align_no_rois(isa: str) -> None:
    ins = {"x": random_input((1, 3, 5, 5), np.float32), "rois": np.zeros((0, 4), np.float32), "bi": np.zeros(0, np.int64)}
    m = single_op_model("RoiAlign", ins, {"output_height": 2, "output_width": 2}, opset=16)
    got = mopt.Session(m, isa=isa, fallback=False).run(None, ins)
    assert got[0].shape == (0, 3, 2, 2)


def test_roi_align_bad_batch_index_is_an_error() -> None:
    ins = {"x": np.ones((2, 1, 4, 4), np.float32), "rois": np.ones((1, 4), np.float32), "bi": np.array([2], np.int64)}
    m = single_op_model("RoiAlign", ins, opset=16, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="batch_indices"):
        mopt.Session(cm, fallback=False).run(None, ins)
