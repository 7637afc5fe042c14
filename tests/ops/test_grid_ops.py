"""GridSample (grid_ops.cc) against onnx.reference: 1-D, 2-D and 3-D sampling, nearest / linear /
cubic, zeros / border / reflection padding, align_corners, grids reaching far outside the input,
float32/64/16, and mismatched grids as clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op

OPS_COVERED = ["GridSample"]


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize(("xshape", "gshape"), [((2, 3, 5, 7), (2, 4, 6, 2)), ((1, 2, 3, 4, 5), (1, 2, 3, 4, 3)), ((2, 2, 9), (2, 5, 1))], ids=str)
def test_grid_sample(xshape: tuple, gshape: tuple, mode: str, padding: str, align: int, isa: str) -> None:
    x = random_input(xshape, np.float32, seed=1, low=-2, high=2)
    grid = random_input(gshape, np.float32, seed=2, low=-1.6, high=1.6)  # partly outside [-1, 1]
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    check_op("GridSample", {"x": x, "g": grid}, attrs, isa=isa, opset=22, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padding", ["border", "reflection"])
def test_grid_sample_far_outside(padding: str, isa: str) -> None:
    x = random_input((1, 1, 4, 5), np.float32, seed=3)
    grid = np.array([[[[-7.3, 5.2], [3.9, -4.4], [11.0, 0.2]]]], np.float32)
    check_op("GridSample", {"x": x, "g": grid}, {"mode": "linear", "padding_mode": padding}, isa=isa, opset=22, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_grid_sample_dtypes(dtype: type, isa: str) -> None:
    x = random_input((1, 2, 4, 4), np.dtype(dtype), seed=4)
    grid = random_input((1, 3, 3, 2), np.dtype(dtype), seed=5, low=-1, high=1)
    tol = 3e-3 if dtype == np.float16 else 1e-6
    check_op("GridSample", {"x": x, "g": grid}, {"mode": "cubic"}, isa=isa, opset=22, rtol=tol, atol=tol)


def test_grid_sample_bad_grid_is_an_error() -> None:
    ins = {"x": np.ones((1, 1, 4, 4), np.float32), "g": np.ones((1, 2, 2, 3), np.float32)}
    m = single_op_model("GridSample", ins, opset=22, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="grid"):
        mopt.Session(cm, fallback=False).run(None, ins)
