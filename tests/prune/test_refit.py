"""Least-squares refit: im2col matches Conv, and refitting never fits the calibration data worse
than the mean-compensated weights it starts from."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from mopt.prune import analyze, apply_pruning
from mopt.prune.refit import _im2col, refit
from mopt.prune.search import _rel_error, activation_means
from . import models
from .test_structured import SHAPES, random_removal, run


@pytest.mark.parametrize(("pads", "strides", "dilations"), [([1, 1, 1, 1], [1, 1], [1, 1]), ([0, 2, 1, 0], [2, 1], [1, 2])])
def test_im2col_matches_conv(pads: list[int], strides: list[int], dilations: list[int]) -> None:
    b = models.Builder(0)
    w = (b.rng.standard_normal((5, 3, 3, 2)) * 0.5).astype(np.float32)
    y = b.op("Conv", "x", b.const(w), pads=pads, strides=strides, dilations=dilations, kernel_shape=[3, 2])
    m = b.model([("x", [2, 3, 7, 8])], [y])
    x = b.rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    want = run(m, x)
    cols = _im2col(x, m.graph.node[0], 3, 2)
    assert cols is not None
    got = (cols @ w.reshape(5, -1).T).reshape(want.shape[0], want.shape[2], want.shape[3], 5).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["gemm_relu_gemm", "cnn", "mlp", "residual"])
def test_refit_fits_calibration_at_least_as_well(name: str) -> None:
    model = models.ALL[name]()
    an = analyze(model)
    removed = random_removal(an, 0, 0.4)
    x = np.random.default_rng(0).standard_normal((64, *SHAPES[name][1:])).astype(np.float32)
    feeds = {"x": x}
    comp = apply_pruning(an, removed, activation_means(an, feeds)[0])
    fitted = refit(model, an, comp, removed, feeds)
    ref = [run(model, x)]
    e_comp, e_fit = _rel_error([run(comp, x)], ref), _rel_error([run(fitted, x)], ref)
    assert e_fit <= e_comp * 1.01 + 1e-6, (e_comp, e_fit)
    changed = [
        t.name
        for t, u in zip(comp.graph.initializer, fitted.graph.initializer, strict=True)
        if not np.array_equal(numpy_helper.to_array(t), numpy_helper.to_array(u))
    ]
    assert changed, "refit changed no weight"
    if name == "gemm_relu_gemm":  # one consumer writing the output: the fit is the optimum, clearly better
        assert e_fit < 0.9 * e_comp
