"""Einsum (einsum_ops.cc) against onnx.reference: explicit and implicit outputs, transposes, sums,
inner/outer/batched products, diagonals, ellipses with broadcasting, three operands, float32/64 and
int32/64; a malformed equation is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op

OPS_COVERED = ["Einsum"]

CASES = [
    ("ij->ji", [(3, 5)]),
    ("ij->", [(3, 5)]),
    ("ij", [(4, 2)]),
    ("i,i", [(7,), (7,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ii->i", [(5, 5)]),
    ("...ii->...i", [(2, 3, 4, 4)]),
    ("...ij,...jk->...ik", [(2, 5, 3, 4), (2, 5, 4, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("iij->j", [(3, 3, 2)]),
    ("ab,ab->", [(17, 1), (17, 9)]),
    ("->", [()]),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32, np.int64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("eq", "shapes"), CASES, ids=[c[0] for c in CASES])
def test_einsum(eq: str, shapes: list, dtype: type, isa: str) -> None:
    ins = {f"x{i}": random_input(s, np.dtype(dtype), seed=i, low=-4, high=4) for i, s in enumerate(shapes)}
    tol = 1e-2 if dtype == np.float16 else 1e-5  # float16: the reference's summation order, then one rounding
    check_op("Einsum", ins, {"equation": eq}, isa=isa, rtol=tol, atol=tol)


def test_einsum_label_size_mismatch_is_an_error() -> None:
    ins = {"a": np.ones((2, 3), np.float32), "b": np.ones((4, 2), np.float32)}
    m = single_op_model("Einsum", ins, {"equation": "ij,jk->ik"}, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="disagree"):
        mopt.Session(cm, fallback=False).run(None, ins)


def test_einsum_ellipsis_broadcasts(isa: str) -> None:
    # ONNX shape inference cannot type this one, so numpy.einsum is the oracle
    from .native import check_native

    a, b = random_input((2, 1, 3, 4), np.float32, seed=1), random_input((5, 4, 2), np.float32, seed=2)
    want = np.einsum("...ij,...jk->...ik", a, b)
    check_native("Einsum", {"a": a, "b": b}, [want], {"equation": "...ij,...jk->...ik"}, isa=isa, output_dtypes=[TensorProto.FLOAT], rtol=1e-5, atol=1e-5)
