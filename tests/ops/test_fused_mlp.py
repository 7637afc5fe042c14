"""com.mopt.FusedMLP (a transformer's feed-forward block, y = act(x W1 + b1) W2 + b2 + residual)
against numpy in float64: every ISA, both of the kernel's schedules (few rows: the two products
one after the other over all rows; many rows: blocks of rows whose hidden activation stays in
cache), odd sizes, a hidden width of 1024 (rows 4 KB apart), optional operands, bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from mopt.errors import MoptError
from mopt.testing.assert_close import assert_close

from .native import run_native

OPS_COVERED = ["com.mopt.FusedMLP"]

RNG = np.random.default_rng(11)


def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def np_mlp(x, w1, b1, w2, b2, res, act):
    h = x.astype(np.float64) @ w1.astype(np.float64)
    if b1 is not None:
        h = h + b1
    if act == "Relu":
        h = np.maximum(h, 0.0)
    elif act == "Gelu":
        from math import erf

        h = 0.5 * h * (1.0 + np.vectorize(erf)(h / np.sqrt(2.0)))
    elif act == "GeluTanh":
        h = 0.5 * h * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (h + 0.044715 * h**3)))
    y = h @ w2.astype(np.float64)
    if b2 is not None:
        y = y + b2
    if res is not None:
        y = y + res
    return y.astype(np.float32)


def run_mlp(x, w1, b1, w2, b2, res, act, isa):
    inputs = {"x": x, "w1": w1, "b1": b1, "w2": w2, "b2": b2, "res": res}
    attrs = {"activation": act} if act else {}
    (y,) = run_native(
        "FusedMLP", inputs, attrs, isa=isa, consts=["w1", "w2"], domain="com.mopt", output_dtypes=[TensorProto.FLOAT]
    )
    return y


# (leading shape of x, K1, N1, N2): 1 and 7 rows, 17 rows over odd widths, then enough rows (at
# least 12 micro-kernel panels per thread) for the blocked schedule, with a last partial panel
@pytest.mark.parametrize(
    ("lead", "k1", "n1", "n2"),
    [((1,), 8, 16, 8), ((7,), 33, 70, 17), ((1, 17), 64, 130, 50), ((3, 131), 64, 1024, 96), ((2, 200), 40, 300, 33)],
    ids=str,
)
@pytest.mark.parametrize("act", ["GeluTanh", "Relu", None])
def test_fused_mlp(lead, k1, n1, n2, act, isa):
    x, w1, w2 = rand(*lead, k1), rand(k1, n1, scale=k1**-0.5), rand(n1, n2, scale=n1**-0.5)
    b1, b2, res = rand(n1), rand(n2), rand(*lead, n2)
    got = run_mlp(x, w1, b1, w2, b2, res, act, isa)
    assert_close(got, np_mlp(x, w1, b1, w2, b2, res, act), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows", [5, 400], ids=str)
def test_fused_mlp_without_biases_or_residual(rows, isa):
    x, w1, w2 = rand(rows, 24), rand(24, 40, scale=0.2), rand(40, 9, scale=0.2)
    got = run_mlp(x, w1, None, w2, None, None, "Gelu", isa)
    assert_close(got, np_mlp(x, w1, None, w2, None, None, "Gelu"), rtol=1e-4, atol=1e-5)


def test_fused_mlp_empty_batch(isa):
    x, w1, w2 = np.zeros((0, 6), np.float32), rand(6, 10), rand(10, 4)
    got = run_mlp(x, w1, rand(10), w2, rand(4), None, "Relu", isa)
    assert got.shape == (0, 4)


def test_fused_mlp_bad_shapes(isa):
    w1, w2 = rand(6, 10), rand(10, 4)
    with pytest.raises(MoptError, match="FusedMLP: x must be float32"):
        run_mlp(rand(3, 5), w1, None, w2, None, None, None, isa)
    with pytest.raises(MoptError, match="FusedMLP: the residual must be float32"):
        run_mlp(rand(3, 6), w1, None, w2, None, rand(3, 5), None, isa)
    with pytest.raises(MoptError, match="FusedMLP: W1 gives 10 hidden features but W2 takes 9"):
        run_mlp(rand(3, 6), w1, None, rand(9, 4), None, None, None, isa)


def test_fused_mlp_large_weights_run_the_products_in_turn(isa):
    """Weights past 4 MB are not re-read block by block: many rows then take the two-phase schedule."""
    x, w1, w2 = rand(400, 512), rand(512, 2048, scale=512**-0.5), rand(2048, 64, scale=2048**-0.5)
    b1, b2, res = rand(2048), rand(64), rand(400, 64)
    got = run_mlp(x, w1, b1, w2, b2, res, "Relu", isa)
    assert_close(got, np_mlp(x, w1, b1, w2, b2, res, "Relu"), rtol=1e-4, atol=1e-5)
