"""DFT (dft_ops.cc) against onnx.reference: real and complex signals, onesided, dft_length padding and
truncation, axis as attribute (opset 17) and input (opset 20) and their defaults, the one-sided
inverse (irfft); the complex inverse stays on the reference on purpose; bad axes are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

OPS_COVERED = ["DFT"]


def check_op(op: str, inputs: dict, attrs: dict | None = None, *, isa: str, opset: int, consts: tuple = (), rtol: float, atol: float) -> None:
    """DFT against onnx.reference, the output typed by hand (ONNX shape inference leaves it untyped)."""
    from mopt.ir.dtypes import from_numpy
    from mopt.testing.assert_close import assert_close
    from mopt.testing.reference import feeds_of, run_mopt, run_reference

    t = int(from_numpy(inputs["x"].dtype))
    model = single_op_model(op, inputs, attrs, opset=opset, consts=consts, output_dtypes=[t])
    feeds = feeds_of(model, inputs)
    want = run_reference(model, feeds)
    cm = mopt.compile(model, 0, isa=isa)
    assert not cm.fallback_nodes, cm.fallback_nodes[0].reason
    got = run_mopt(model, feeds, isa=isa, fallback=False)
    assert_close(got[0], want[0], rtol=rtol, atol=atol, context=f"DFT attrs={attrs}")


@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("length", [None, 6, 13])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("axis", [1, 2, -2])
def test_dft_forward_opset20(axis: int, complex_: bool, length: int | None, onesided: int, isa: str) -> None:
    x = random_input((2, 9, 7, 2 if complex_ else 1), np.float32, seed=1)
    ins = {"x": x, "n": None if length is None else np.array(length, np.int64), "axis": np.array(axis, np.int64)}
    check_op("DFT", ins, {"onesided": onesided}, isa=isa, opset=20, consts=["n", "axis"], rtol=1e-4, atol=1e-4)


def test_dft_default_axes(isa: str) -> None:
    x = random_input((3, 8, 5, 2), np.float32, seed=2)
    check_op("DFT", {"x": x}, isa=isa, opset=20, rtol=1e-4, atol=1e-4)  # axis -2
    check_op("DFT", {"x": x}, isa=isa, opset=19, rtol=1e-4, atol=1e-4)  # axis 1
    check_op("DFT", {"x": x}, {"axis": 2}, isa=isa, opset=19, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("length", [None, 8, 9])
def test_dft_irfft(length: int | None, isa: str) -> None:
    x = random_input((2, 5, 3, 2), np.float64, seed=3)
    ins = {"x": x, "n": None if length is None else np.array(length, np.int64), "axis": np.array(1, np.int64)}
    check_op("DFT", ins, {"inverse": 1, "onesided": 1}, isa=isa, opset=20, consts=["n", "axis"], rtol=1e-9, atol=1e-9)


def test_dft_complex_inverse_stays_on_the_reference() -> None:
    m = single_op_model("DFT", {"x": np.zeros((1, 4, 2), np.float32)}, {"inverse": 1}, opset=20)
    cm = mopt.compile(m, 0)
    assert [p.op for p in cm.fallback_nodes] == ["DFT"]


def test_dft_on_the_complex_axis_is_an_error() -> None:
    ins = {"x": np.zeros((2, 4, 2), np.float32), "n": None, "axis": np.array(2, np.int64)}
    m = single_op_model("DFT", ins, opset=20, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="last"):
        mopt.Session(cm, fallback=False).run(None, {"x": ins["x"], "axis": ins["axis"]})
