"""ConvTranspose (convt_ops.cc) against onnx.reference: 1-D, 2-D and 3-D, strides, dilations, pads,
output_padding, output_shape, SAME_UPPER/SAME_LOWER, bias, float32/64/16; groups against the
reference run per group (its own grouped path is not general); bad shapes as clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import run_reference, single_op_model

from .helpers import check_op
from .native import check_native

OPS_COVERED = ["ConvTranspose"]

CASES = [  # x shape, w shape, attrs
    ((1, 2, 5), (2, 3, 3), {}),
    ((2, 3, 4, 5), (3, 2, 3, 2), {"strides": [2, 3]}),
    ((1, 2, 4, 4), (2, 2, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 2], "output_padding": [1, 1]}),
    ((1, 1, 3, 3), (1, 2, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
    ((1, 2, 3, 4), (2, 2, 2, 3), {"dilations": [2, 1], "strides": [1, 2]}),
    ((1, 1, 3, 3), (1, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 1, 3, 3), (1, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 2, 3, 2), (2, 1, 2, 2, 2), {"strides": [1, 2, 1]}),
    ((1, 3, 17), (3, 2, 4), {"strides": [3], "pads": [2, 1]}),
]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("xs", "ws", "attrs"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_conv_transpose(xs: tuple, ws: tuple, attrs: dict, bias: bool, isa: str) -> None:
    ins = {"x": random_input(xs, np.float32, seed=1), "w": random_input(ws, np.float32, seed=2)}
    ins["b"] = random_input((ws[1],), np.float32, seed=3) if bias else None
    check_op("ConvTranspose", ins, attrs, isa=isa, consts=["w", "b"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_conv_transpose_dtypes(dtype: type, isa: str) -> None:
    ins = {"x": random_input((1, 2, 4, 3), np.dtype(dtype), seed=1), "w": random_input((2, 3, 2, 2), np.dtype(dtype), seed=2)}
    tol = 3e-3 if dtype == np.float16 else 1e-9
    check_op("ConvTranspose", ins, {"strides": [2, 1]}, isa=isa, rtol=tol, atol=tol)


@pytest.mark.parametrize(("group", "mg"), [(2, 1), (2, 3), (3, 2)])
def test_conv_transpose_groups(group: int, mg: int, isa: str) -> None:
    cg = 2
    x = random_input((2, group * cg, 4, 5), np.float32, seed=4)
    w = random_input((group * cg, mg, 3, 2), np.float32, seed=5)
    b = random_input((group * mg,), np.float32, seed=6)
    attrs = {"strides": [2, 1], "pads": [1, 0, 0, 1]}
    parts = []
    for g in range(group):  # the reference, one group at a time
        ins = {"x": x[:, g * cg : (g + 1) * cg], "w": w[g * cg : (g + 1) * cg], "b": b[g * mg : (g + 1) * mg]}
        parts.append(run_reference(single_op_model("ConvTranspose", ins, attrs), ins)[0])
    want = np.concatenate(parts, axis=1)
    check_native("ConvTranspose", {"x": x, "w": w, "b": b}, [want], {**attrs, "group": group}, isa=isa, rtol=1e-5, atol=1e-5)


def test_conv_transpose_channel_mismatch_is_an_error() -> None:
    ins = {"x": np.ones((1, 3, 4, 4), np.float32), "w": np.ones((2, 1, 3, 3), np.float32)}
    m = single_op_model("ConvTranspose", ins, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="input channels"):
        mopt.Session(cm, fallback=False).run(None, ins)
