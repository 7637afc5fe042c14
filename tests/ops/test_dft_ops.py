"""DFT (dft_ops.cc) against onnx.reference: real and complex signals, onesided, dft_length padding and
truncation, axis as attribute (opset 17) and input (opset 20) and their defaults, the one-sided
inverse (irfft); the complex inverse stays on the reference on purpose; bad axes are clear errors.
STFT (the same file) against onnx.reference and numpy.fft: real and complex signals, windows,
frame_length, one- and two-sided, frames that leave a tail, and a frame longer than the signal."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.assert_close import assert_close
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import feeds_of, run_mopt, single_op_model

OPS_COVERED = ["DFT", "STFT"]


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


def stft_oracle(x: np.ndarray, step: int, window: np.ndarray | None, length: int, onesided: int) -> np.ndarray:
    sig = x[..., 0] + (1j * x[..., 1] if x.shape[-1] == 2 else 0)
    w = np.ones(length) if window is None else window.astype(np.float64)
    frames = (x.shape[1] - length) // step + 1
    spec = np.stack([np.fft.fft(sig[:, f * step : f * step + length] * w, axis=-1) for f in range(frames)], 1)
    if onesided:
        spec = spec[..., : length // 2 + 1]
    return np.stack([spec.real, spec.imag], -1).astype(x.dtype)


@pytest.mark.parametrize(("complex_", "onesided"), [(False, 0), (False, 1), (True, 0)])  # no one-sided complex STFT
@pytest.mark.parametrize(
    ("n", "step", "length", "win"), [(17, 3, 7, True), (64, 16, 16, True), (9, 2, None, False), (1, 1, 1, True), (33, 5, 8, False)], ids=str
)
def test_stft(n: int, step: int, length: int | None, win: bool, complex_: bool, onesided: int, isa: str) -> None:
    x = random_input((2, n, 2 if complex_ else 1), np.float32, seed=3)
    frame = n if length is None else length
    window = np.hanning(frame).astype(np.float32) if win else None
    ins = {"x": x, "step": np.array(step, np.int64), "w": window, "len": None if length is None else np.array(length, np.int64)}
    want = stft_oracle(x, step, window, frame, onesided)
    model = single_op_model("STFT", ins, {"onesided": onesided}, opset=17, consts=("step", "len"), output_dtypes=[TensorProto.FLOAT])
    assert not mopt.compile(model, 0, isa=isa).fallback_nodes
    got = run_mopt(model, feeds_of(model, ins), isa=isa, fallback=False)
    assert_close(got[0], want, rtol=1e-4, atol=1e-4, context=f"STFT n={n} step={step} len={length}")
    if not complex_ and win:
        check_op("STFT", ins, {"onesided": onesided}, isa=isa, opset=17, consts=("step", "len"), rtol=1e-4, atol=1e-4)


def test_stft_float64(isa: str) -> None:
    x = random_input((1, 40, 1), np.float64, seed=4)
    w = np.hamming(12)
    ins = {"x": x, "step": np.array(5, np.int64), "w": w}
    check_op("STFT", ins, isa=isa, opset=17, consts=("step",), rtol=1e-10, atol=1e-10)


def test_stft_frame_longer_than_signal_is_an_error() -> None:
    ins = {"x": np.ones((1, 8, 1), np.float32), "step": np.array(2, np.int64), "w": np.ones(9, np.float32)}
    m = single_op_model("STFT", ins, opset=17, consts=("step",), output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="STFT.*frame_length"):
        mopt.Session(cm, fallback=False).run(None, {"x": ins["x"], "w": ins["w"]})
