"""The small models that ship inside the onnx wheel beside the node tests (`pytorch-converted`,
`pytorch-operator`, `simple`: old PyTorch exporters, old opsets and IR versions, 1-D to 3-D
convolutions and pools) at -O0 and -O2 against the outputs stored with them. What mopt does not
run (ONNX sequences, string tensors, training-only Gradient) must fail with a clear error."""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import mopt
from mopt.errors import MoptError

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
SUITES = ("pytorch-converted", "pytorch-operator", "simple")
UNSUPPORTED = ("test_sequence_model", "test_strnorm_model", "test_gradient_of_")


def cases() -> list[str]:
    out = []
    for suite in SUITES:
        root = os.path.join(DATA, suite)
        if os.path.isdir(root):
            out += [os.path.join(suite, c) for c in sorted(os.listdir(root)) if os.path.exists(os.path.join(root, c, "model.onnx"))]
    return out


def load_sets(case_dir: str) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    sets = []
    for ts in sorted(glob.glob(os.path.join(case_dir, "test_data_set_*"))):
        ins = [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(os.path.join(ts, "input_*.pb")))]
        outs = [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(os.path.join(ts, "output_*.pb")))]
        sets.append((ins, outs))
    return sets


@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("case", cases())
def test_backend_model(case: str, level: int) -> None:
    case_dir = os.path.join(DATA, case)
    model = onnx.load(os.path.join(case_dir, "model.onnx"))
    if os.path.basename(case).startswith(UNSUPPORTED):
        with pytest.raises(MoptError):
            sess = mopt.Session(model, level=level)
            for ins, _ in load_sets(case_dir):
                sess.run(None, dict(zip([i.name for i in sess.get_inputs()], ins, strict=False)))
        return
    sess = mopt.Session(model, level=level, intra_op_threads=2)
    names = [i.name for i in sess.get_inputs()]
    for ins, want in load_sets(case_dir):
        got = sess.run(None, dict(zip(names, ins, strict=True)))
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape, f"{case}: shape {g.shape} != {w.shape}"
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=1e-3, atol=1e-5, err_msg=case)


def test_three_d_convolutions_and_pools_run_on_the_fallback_unfused() -> None:
    """3-D windows have no native kernel: they stay standard ops (no FusedConv the fallback cannot
    run) and are announced as fallback nodes."""
    model = onnx.load(os.path.join(DATA, "pytorch-converted", "test_Conv3d", "model.onnx"))
    cm = mopt.compile(model, 2)
    assert [p.op for p in cm.fallback_nodes] == ["Conv"]
    assert "3-D windows" in cm.fallback_nodes[0].reason


def test_three_d_conv_with_relu_and_residual_is_not_fused() -> None:
    from onnx import TensorProto, helper

    from mopt.testing.reference import run_reference

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 6),
        helper.make_node("Add", ["c", "r"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    shape = [1, 4, 5, 6, 7]
    g = helper.make_graph(
        nodes,
        "conv3d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 6, 7]), helper.make_tensor_value_info("r", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [w],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": rng.standard_normal((1, 2, 5, 6, 7)).astype(np.float32), "r": rng.standard_normal(shape).astype(np.float32)}
    cm = mopt.compile(model, 2)
    assert [p.op for p in cm.fallback_nodes] == ["Conv"]
    got = mopt.Session(cm).run(None, feeds)[0]
    np.testing.assert_allclose(got, run_reference(model, feeds)[0], rtol=1e-4, atol=1e-5)
