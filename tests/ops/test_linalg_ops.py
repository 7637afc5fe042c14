"""Det (linalg_ops.cc) against numpy.linalg.det: 1x1 to 17x17 matrices, batches of any rank,
singular and permutation matrices (the pivot's sign), float64/16, an empty batch, and a non-square
input as a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op
from .native import check_native

OPS_COVERED = ["Det"]


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (7, 7), (17, 17), (4, 3, 3), (2, 3, 5, 5), (0, 4, 4)], ids=str)
def test_det(shape: tuple, isa: str) -> None:
    x = random_input(shape, np.float32, seed=1)
    want = np.linalg.det(x.astype(np.float64)).astype(np.float32)
    check_native("Det", {"x": x}, [np.asarray(want)], isa=isa, rtol=1e-4, atol=1e-5)


def test_det_agrees_with_onnx_reference(isa: str) -> None:
    check_op("Det", {"x": random_input((3, 4, 4), np.float32, seed=2)}, isa=isa, rtol=1e-4, atol=1e-5)


def test_det_singular_and_permutations(isa: str) -> None:
    x = np.array([
        [[1, 2, 3], [2, 4, 6], [0, 1, 1]],   # singular
        [[0, 1, 0], [1, 0, 0], [0, 0, 1]],   # one swap: -1
        [[0, 0, 1], [1, 0, 0], [0, 1, 0]],   # a cycle: +1
        [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
    ], np.float32)
    check_native("Det", {"x": x}, [np.array([0, -1, 1, 0], np.float32)], isa=isa, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_det_dtypes(dtype: type, isa: str) -> None:
    x = random_input((5, 3, 3), dtype, seed=3)
    want = np.linalg.det(x.astype(np.float64)).astype(dtype)
    tol = 1e-2 if dtype == np.float16 else 1e-12
    check_native("Det", {"x": x}, [want], isa=isa, rtol=tol, atol=tol)


def test_det_not_square_is_an_error() -> None:
    x = np.ones((2, 3, 4), np.float32)
    m = single_op_model("Det", {"x": x}, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="Det.*square"):
        mopt.Session(cm, fallback=False).run(None, {"x": x})
