"""Elementwise unary kernels against onnx.reference, every ISA, odd shapes and special values."""

from __future__ import annotations

import numpy as np
import pytest

from mopt.testing.random_inputs import random_input

from .helpers import check_op

SHAPES = [(), (0,), (1,), (7,), (17,), (1031,), (3, 5, 33)]

# op -> (attributes, input range, tolerance)
UNARY = {
    "Relu": ({}, (-3, 3), 1e-6),
    "LeakyRelu": ({"alpha": 0.07}, (-3, 3), 1e-6),
    "Sigmoid": ({}, (-12, 12), 2e-6),
    "Tanh": ({}, (-6, 6), 2e-6),
    "Exp": ({}, (-20, 20), 2e-6),
    "Erf": ({}, (-4, 4), 2e-6),
    "Neg": ({}, (-3, 3), 0),
    "Abs": ({}, (-3, 3), 0),
    "Sqrt": ({}, (0, 9), 1e-6),
    "Reciprocal": ({}, (0.5, 4), 1e-6),
    "Floor": ({}, (-5, 5), 0),
    "Ceil": ({}, (-5, 5), 0),
    "HardSigmoid": ({"alpha": 0.3, "beta": 0.4}, (-5, 5), 1e-6),
    "HardSwish": ({}, (-5, 5), 1e-6),
    "Elu": ({"alpha": 0.8}, (-5, 5), 2e-6),
    "Selu": ({}, (-5, 5), 2e-6),
    "Softplus": ({}, (-20, 20), 2e-6),
}
OPS_COVERED = [*UNARY, "Gelu", "Clip", "Identity", "Dropout"]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", list(UNARY))
def test_unary_matches_reference(op: str, shape: tuple[int, ...], isa: str) -> None:
    attrs, (lo, hi), tol = UNARY[op]
    x = random_input(shape, np.float32, seed=1, low=lo, high=hi)
    check_op(op, {"x": x}, attrs, isa=isa, rtol=tol, atol=tol)


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "Exp", "Erf", "Abs", "Neg", "Softplus"])
def test_unary_special_values(op: str, isa: str) -> None:
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30, 88.0, 89.0, -87.0, -104.0, 30.0, -30.0] * 3, np.float32)
    check_op(op, {"x": x}, UNARY[op][0], isa=isa, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", [(1,), (17,), (2, 513)], ids=str)
def test_gelu(approximate: str, shape: tuple[int, ...], isa: str) -> None:
    x = random_input(shape, np.float32, seed=2, low=-6, high=6)
    check_op("Gelu", {"x": x}, {"approximate": approximate}, isa=isa, opset=20, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(None, None), (-1.0, None), (None, 0.5), (-0.25, 0.75), (0.0, 6.0)],
)
def test_clip(lo: float | None, hi: float | None, isa: str) -> None:
    x = random_input((4, 37), np.float32, seed=3, low=-3, high=8)
    inputs: dict = {"x": x, "lo": None if lo is None else np.array(lo, np.float32), "hi": None if hi is None else np.array(hi, np.float32)}
    check_op("Clip", inputs, isa=isa, rtol=0, atol=0)


def test_clip_bounds_as_run_time_inputs(isa: str) -> None:
    x = random_input((33,), np.float32, seed=4)
    check_op("Clip", {"x": x, "lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)}, isa=isa, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(0,), (5, 7)], ids=str)
def test_identity_and_dropout_pass_data_through(shape: tuple[int, ...], isa: str) -> None:
    x = random_input(shape, np.float32, seed=5)
    check_op("Identity", {"x": x}, isa=isa, rtol=0, atol=0)
    check_op("Dropout", {"x": x}, isa=isa, rtol=0, atol=0)
    check_op("Dropout", {"x": x}, {"seed": 1}, isa=isa, rtol=0, atol=0, num_outputs=2)
