"""Resize (resize_ops.cc) against onnx.reference: nearest with its four rounding modes, linear and
cubic with and without antialiasing, every coordinate transformation mode, exclude_outside,
tf_crop_and_resize extrapolation, scales and sizes, axes, keep_aspect_ratio_policy, up and down
sampling, float and integer types, and bad inputs as clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op

OPS_COVERED = ["Resize"]
COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]


def resize(x: np.ndarray, attrs: dict, *, isa: str, scales: list | None = None, sizes: list | None = None, roi: list | None = None,
           tol: float = 1e-5) -> None:  # fmt: skip
    inputs = {
        "x": x,
        "roi": None if roi is None else np.array(roi, np.float32),
        "scales": None if scales is None else np.array(scales, np.float32),
        "sizes": None if sizes is None else np.array(sizes, np.int64),
    }
    check_op("Resize", inputs, attrs, isa=isa, consts=["roi", "scales", "sizes"], opset=19, rtol=tol, atol=tol)


X = random_input((2, 3, 5, 7), np.float32, seed=0, low=-4, high=4)


@pytest.mark.parametrize("scales", [[1, 1, 2.0, 1.5], [1, 1, 0.6, 0.45], [1, 1, 3.0, 0.8], [1, 1, 1.0, 2.2]], ids=str)
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_scales(mode: str, coord: str, scales: list, isa: str) -> None:
    resize(X, {"mode": mode, "coordinate_transformation_mode": coord}, scales=scales, isa=isa)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("coord", COORDS)
def test_resize_nearest_modes(nearest_mode: str, coord: str, isa: str) -> None:
    resize(X, {"mode": "nearest", "nearest_mode": nearest_mode, "coordinate_transformation_mode": coord}, sizes=[2, 3, 9, 4], isa=isa)


@pytest.mark.parametrize("sizes", [[2, 3, 3, 4], [2, 3, 12, 17], [2, 3, 1, 1]], ids=str)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_antialias(mode: str, sizes: list, isa: str) -> None:
    resize(X, {"mode": mode, "antialias": 1}, sizes=sizes, isa=isa)
    resize(X, {"mode": mode, "antialias": 1, "exclude_outside": 1, "cubic_coeff_a": -0.5}, sizes=sizes, isa=isa)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_tf_crop_and_resize(mode: str, isa: str) -> None:
    attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 9.5}
    resize(X, attrs, sizes=[2, 3, 6, 6], roi=[0, 0, 0.2, -0.3, 1, 1, 1.4, 0.9], isa=isa)
    resize(X, {**attrs, "axes": [3, 2]}, sizes=[1, 4], roi=[0.1, 0.2, 0.7, 0.8], isa=isa)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_axes_and_aspect_policy(policy: str, isa: str) -> None:
    attrs = {"mode": "linear", "axes": [3, 2], "keep_aspect_ratio_policy": policy}
    resize(X, attrs, sizes=[9, 8], isa=isa)
    # onnx.reference cannot take negative axes: they must agree with the positive ones
    from .native import run_native

    ins = {"x": X, "roi": None, "scales": None, "sizes": np.array([8, 9], np.int64)}
    neg = run_native("Resize", ins, {**attrs, "axes": [2, -1]}, isa=isa, consts=["sizes"], opset=19)
    pos = run_native("Resize", ins, {**attrs, "axes": [2, 3]}, isa=isa, consts=["sizes"], opset=19)
    np.testing.assert_array_equal(neg[0], pos[0])
    resize(X, {"mode": "nearest", "axes": [1]}, scales=[2.0], isa=isa)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.uint8, np.int8, np.int32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_dtypes(mode: str, dtype: type, isa: str) -> None:
    low, high = (0, 255) if dtype == np.uint8 else (-100, 100)
    x = random_input((1, 2, 4, 6), np.dtype(dtype), seed=3, low=low, high=high)
    resize(x, {"mode": mode}, scales=[1, 1, 1.7, 0.7], isa=isa, tol=2e-3 if dtype == np.float16 else 1e-5)


def test_resize_odd_shapes(isa: str) -> None:
    resize(random_input((1031,), np.float32, seed=4), {"mode": "linear"}, sizes=[17], isa=isa)
    resize(random_input((1, 1), np.float32, seed=5), {"mode": "cubic"}, sizes=[7, 3], isa=isa)
    resize(random_input((2, 3, 4), np.float32, seed=6), {"mode": "linear"}, sizes=[2, 0, 4], isa=isa)


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"x": np.ones((2, 3), np.float32), "roi": None, "scales": np.array([1, 1, 1], np.float32)}, "scales has 3 values"),
        ({"x": np.ones((2, 3), np.float32), "roi": None, "scales": np.array([1, -2], np.float32)}, "must be positive"),
        ({"x": np.ones((2, 3), np.float32), "roi": None, "scales": None, "sizes": np.array([2, -1], np.int64)}, "negative"),
    ],
)
def test_resize_bad_inputs_are_errors(inputs: dict, match: str) -> None:
    m = single_op_model("Resize", inputs, {"mode": "linear"}, opset=19, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match=match):
        mopt.Session(cm, fallback=False).run(None, {k: v for k, v in inputs.items() if v is not None})
