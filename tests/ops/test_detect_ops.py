"""NonMaxSuppression and the window functions (detect_ops.cc) against onnx.reference: both box
encodings, flipped corners, thresholds present or absent, several batches and classes, ties, and
every window with periodic on/off and several output types; bad shapes as clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op

OPS_COVERED = ["NonMaxSuppression", "HannWindow", "HammingWindow", "BlackmanWindow"]


def boxes(b: int, n: int, center: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if center:
        xy = rng.uniform(0, 10, (b, n, 2))
        wh = rng.uniform(0.5, 4, (b, n, 2))
        return np.concatenate([xy, wh], axis=2).astype(np.float32)
    a, c = rng.uniform(0, 10, (b, n, 2)), rng.uniform(0, 10, (b, n, 2))  # corners in any order
    return np.concatenate([a, c], axis=2).astype(np.float32)


@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize(("max_out", "iou", "score"), [(3, 0.5, None), (10, 0.3, 0.4), (0, 0.5, 0.0), (5, 0.0, None), (100, 1.0, 0.2)])
def test_nms(center: int, max_out: int, iou: float, score: float | None, isa: str) -> None:
    ins = {"boxes": boxes(2, 17, center, 1), "scores": random_input((2, 3, 17), np.float32, seed=2, low=0, high=1)}
    ins["scores"][0, 0, 5] = ins["scores"][0, 0, 9]  # a tie
    ins["m"] = np.array([max_out], np.int64)
    ins["iou"] = np.array([iou], np.float32)
    ins["score"] = None if score is None else np.array([score], np.float32)
    check_op("NonMaxSuppression", ins, {"center_point_box": center}, isa=isa, consts=["m", "iou", "score"], rtol=0, atol=0)


def test_nms_without_optional_inputs_selects_nothing(isa: str) -> None:
    # max_output_boxes_per_class defaults to 0 (onnx.reference cannot run without the input)
    from .native import check_native

    ins = {"boxes": boxes(1, 4, 0, 3), "scores": random_input((1, 1, 4), np.float32, seed=4)}
    check_native("NonMaxSuppression", ins, [np.zeros((0, 3), np.int64)], isa=isa, output_dtypes=[TensorProto.INT64])


def test_nms_mismatched_scores_is_an_error() -> None:
    ins = {"boxes": np.ones((1, 4, 4), np.float32), "scores": np.ones((1, 2, 5), np.float32)}
    m = single_op_model("NonMaxSuppression", ins, output_dtypes=[TensorProto.INT64])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match="scores must be"):
        mopt.Session(cm, fallback=False).run(None, ins)


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("size", [1, 7, 32])
@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
def test_windows(op: str, size: int, periodic: int, dtype: int, isa: str) -> None:
    if size == 1 and not periodic:
        pytest.skip("N - 1 = 0: the reference divides by zero")
    tol = 2e-3 if dtype == TensorProto.FLOAT16 else 1e-6
    check_op(op, {"n": np.array(size, np.int64)}, {"periodic": periodic, "output_datatype": dtype}, isa=isa, opset=17, rtol=tol, atol=tol)
