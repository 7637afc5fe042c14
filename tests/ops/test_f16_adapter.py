"""float16 tensors on the float32 kernels (runtime/f16_adapter.cc): float16 inputs and constants
are widened, the float32 kernel computes, float16 outputs are rounded to nearest even. Checked
against onnx.reference on the same operands in float32, rounded once to float16 (so the only
difference allowed is the float32 kernel's own rounding, then one float16 rounding step), on
every ISA; and the float32 <-> float16 Cast, bit for bit against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from mopt.testing.reference import run_reference, single_op_model

from .native import run_native

F16 = TensorProto.FLOAT16
OPS_COVERED = ["Conv", "Gemm", "MatMul", "Gelu", "LayerNormalization", "BatchNormalization", "GlobalAveragePool", "LRN",
               "GlobalMaxPool", "MaxPool", "AveragePool", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Erf", "Clip", "Add",
               "Sub", "Mul", "Div", "Cast"]


def _f32_reference(op: str, inputs: dict, attrs: dict, consts: list[str], opset: int = 18) -> list[np.ndarray]:
    wide = {k: (v.astype(np.float32) if v is not None and v.dtype == np.float16 else v) for k, v in inputs.items()}
    model = single_op_model(op, wide, attrs, consts=consts, opset=opset)
    return run_reference(model, wide)


def _check(op: str, inputs: dict, attrs: dict, consts: list[str], isa: str, opset: int = 18) -> None:
    got = run_native(op, inputs, attrs, isa=isa, consts=consts, opset=opset, output_dtypes=[F16])[0]
    want = _f32_reference(op, inputs, attrs, consts, opset)[0]
    assert got.dtype == np.float16 and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    # the float32 result rounded to float16 is within half a float16 step; allow one step of each
    # value's own magnitude and a small absolute floor for cancellation
    w = want.astype(np.float32)
    step = np.maximum(np.abs(w), 1e-3) * 2.0**-10
    err = np.abs(got.astype(np.float32) - w)
    assert np.all(err <= 2 * step + 1e-3 * max(1.0, float(np.abs(w).max(initial=0)))), f"{op} {isa}: max err {err.max()}"


def _r(rng, *shape, scale=1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float16)


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 5, 7, 9), (1, 16, 17, 3)])
def test_conv(shape, isa: str) -> None:
    rng = np.random.default_rng(sum(shape))
    c = shape[1]
    inputs = {"x": _r(rng, *shape), "w": _r(rng, 6, c, 3, 3, scale=0.3), "b": _r(rng, 6)}
    _check("Conv", inputs, {"pads": [1, 1, 1, 1]}, ["w", "b"], isa)


def test_depthwise_conv_with_stride(isa: str) -> None:
    rng = np.random.default_rng(2)
    inputs = {"x": _r(rng, 2, 8, 11, 11), "w": _r(rng, 8, 1, 3, 3, scale=0.3)}
    _check("Conv", inputs, {"pads": [1, 1, 1, 1], "strides": [2, 2], "group": 8}, ["w"], isa)


@pytest.mark.parametrize("mkn", [(1, 7, 5), (17, 64, 33), (130, 300, 70)])
def test_gemm(mkn, isa: str) -> None:
    m, k, n = mkn
    rng = np.random.default_rng(m + k + n)
    inputs = {"a": _r(rng, m, k), "b": _r(rng, n, k, scale=0.2), "c": _r(rng, n)}
    _check("Gemm", inputs, {"transB": 1}, ["b", "c"], isa)


@pytest.mark.parametrize("shapes", [((7, 17), (17, 5)), ((2, 3, 9, 16), (16, 40)), ((4, 1, 6, 8), (3, 8, 5)), ((0, 8), (8, 3))])
def test_matmul(shapes, isa: str) -> None:
    rng = np.random.default_rng(len(shapes[0]))
    _check("MatMul", {"a": _r(rng, *shapes[0]), "b": _r(rng, *shapes[1], scale=0.3)}, {}, [], isa)


def test_gelu_layernorm_batchnorm_pools(isa: str) -> None:
    rng = np.random.default_rng(9)
    x = _r(rng, 2, 6, 5, 7)
    _check("Gelu", {"x": x}, {}, [], isa, opset=20)
    _check("LayerNormalization", {"x": x, "s": _r(rng, 7), "b": _r(rng, 7)}, {"axis": -1}, ["s", "b"], isa)
    bn = {"x": x, "s": _r(rng, 6), "b": _r(rng, 6), "m": _r(rng, 6), "v": np.abs(_r(rng, 6)) + np.float16(0.5)}
    _check("BatchNormalization", bn, {}, ["s", "b", "m", "v"], isa)
    _check("GlobalAveragePool", {"x": x}, {}, [], isa)
    # LRN against numpy (onnx.reference's LRN disagrees with the spec's formula for these attributes)
    got = run_native("LRN", {"x": x}, {"size": 3, "alpha": 1e-2, "beta": 0.75, "bias": 1.0}, isa=isa,
                     output_dtypes=[F16])[0]
    xf = x.astype(np.float64)
    sq = np.stack([(xf[:, max(0, c - 1) : c + 2] ** 2).sum(1) for c in range(x.shape[1])], axis=1)
    want = (xf / (1.0 + 1e-2 / 3 * sq) ** 0.75).astype(np.float16)
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)
    _check("GlobalMaxPool", {"x": x}, {}, [], isa)


def test_pools_and_activations(isa: str) -> None:
    rng = np.random.default_rng(12)
    x = _r(rng, 2, 3, 9, 10)
    _check("MaxPool", {"x": x}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, [], isa)
    _check("AveragePool", {"x": x}, {"kernel_shape": [2, 2], "strides": [2, 2]}, [], isa)
    for op, attrs in (("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("Sigmoid", {}), ("Tanh", {}), ("Erf", {})):
        _check(op, {"x": x}, attrs, [], isa)
    _check("Clip", {"x": x, "lo": np.float16(-0.5), "hi": np.float16(0.7)}, {}, ["lo", "hi"], isa)
    _check("Relu", {"x": np.zeros((0, 4), np.float16)}, {}, [], isa)  # empty


def test_binary_ops_round_like_the_float16_kernels(isa: str) -> None:
    """Add/Sub/Mul/Div through float32 give, bit for bit, each element computed in float and rounded
    once (what the plain-C++ float16 kernels and numpy give), broadcasting included."""
    rng = np.random.default_rng(13)
    a, b = _r(rng, 2, 3, 9, 10, scale=100.0), _r(rng, 1, 3, 1, 10)
    b[np.abs(b) < 1e-3] = np.float16(1.0)
    for op, fn in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)):
        got = run_native(op, {"a": a, "b": b}, {}, isa=isa, output_dtypes=[F16])[0]
        with np.errstate(over="ignore"):
            want = fn(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
        np.testing.assert_array_equal(got, want, err_msg=f"{op} {isa}")


def test_cast_float32_float16_bit_for_bit(isa: str) -> None:
    rng = np.random.default_rng(4)
    special = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, -70000.0, 6e-8, 2.9e-8, 3e-8, 1e-40, np.inf,
                        -np.inf, 2.0**-14, 2.0**-14 * 0.999, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11], np.float32)
    x = np.concatenate([special, (rng.standard_normal(1000) * 1000).astype(np.float32),
                        rng.standard_normal(37).astype(np.float32) * 1e-6])
    got = run_native("Cast", {"x": x}, {"to": F16}, isa=isa, output_dtypes=[F16])[0]
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    back = run_native("Cast", {"x": got}, {"to": TensorProto.FLOAT}, isa=isa)[0]
    np.testing.assert_array_equal(back, got.astype(np.float32))
    nan = run_native("Cast", {"x": np.array([np.nan] * 20, np.float32)}, {"to": F16}, isa=isa, output_dtypes=[F16])[0]
    assert np.isnan(nan).all()
