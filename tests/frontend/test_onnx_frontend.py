"""ONNX import (old opsets, old IR, external data, nested graphs) and export back to ONNX."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.frontend.onnx_export import export_onnx
from mopt.frontend.onnx_import import import_onnx
from mopt.frontend.opset import CANONICAL_OPSET
from mopt.passes.manager import PassManager
from mopt.passes.pipelines import pipeline
from mopt.testing.assert_close import assert_model_close
from mopt.testing.models import arange_input, expose_logits, light_path, randomize_weights

ort = pytest.importorskip("onnxruntime")


def _ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _opset7_model() -> onnx.ModelProto:
    """Ops whose definitions changed since opset 7: BatchNormalization, Reshape, Softmax (2-D coercion), Clip, Dropout."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    bn = [rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.1, 8), rng.normal(0, 0.1, 8), rng.uniform(0.5, 1.5, 8)]
    inits = [numpy_helper.from_array(w, "w")] + [numpy_helper.from_array(a.astype(np.float32), n) for a, n in zip(bn, "sbmv", strict=True)]
    inits.append(numpy_helper.from_array(np.array([1, 8, -1], np.int64), "shape"))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], epsilon=1e-3),
        helper.make_node("Clip", ["n"], ["k"], min=-1.0, max=2.0),
        helper.make_node("Dropout", ["k"], ["d"], ratio=0.3),
        helper.make_node("Reshape", ["d", "shape"], ["r"]),
        helper.make_node("Softmax", ["r"], ["y"], axis=1),  # opset < 13: softmax over axes 1.. flattened
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]  # IR 3 lists them
    g = helper.make_graph(nodes, "old", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)])
    m.ir_version = 3
    return m


@pytest.mark.parametrize("level", [0, 2])
def test_opset7_model_is_upgraded_and_runs_like_onnxruntime(level: int) -> None:
    model = _opset7_model()
    x = np.random.default_rng(1).standard_normal((1, 3, 9, 9)).astype(np.float32)
    (want,) = _ort_run(model, {"x": x})
    cm = mopt.compile(model, level, log=lambda _: None)
    assert cm.program["opset"][""] == CANONICAL_OPSET
    (got,) = mopt.Session(cm).run(None, {"x": x})
    assert_model_close(got, want, context=f"opset 7 -O{level}")
    np.testing.assert_allclose(got.sum(axis=(1, 2)), 1.0, rtol=1e-5)  # softmax over the flattened axes


def test_external_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((64, 300)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 300])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").stat().st_size == w.nbytes
    x = rng.standard_normal((2, 300)).astype(np.float32)
    (got,) = mopt.Session(str(path)).run(None, {"x": x})
    assert_model_close(got, x @ w.T)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(mopt.MoptError, match=r"weights\.bin"):
        mopt.compile(str(path))


def test_if_subgraphs_are_imported_and_run() -> None:
    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node(op, ["x"], [f"{name}_y"])], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [3])]
        )

    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch("then", "Relu"), else_branch=branch("else", "Neg"))],
        "if",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    graph = import_onnx(model)
    (if_node,) = graph.nodes
    assert sorted(if_node.attrs) == ["else_branch", "then_branch"]
    assert [len(sub.nodes) for sub in if_node.subgraphs()] == [1, 1]
    sess = mopt.Session(model)
    x = np.array([-1, 0, 2], np.float32)
    np.testing.assert_array_equal(sess.run(None, {"c": np.array(True), "x": x})[0], np.maximum(x, 0))
    np.testing.assert_array_equal(sess.run(None, {"c": np.array(False), "x": x})[0], -x)


def test_symbolic_dims_survive_import() -> None:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "sym",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    sess = mopt.Session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    shape = sess.get_inputs()[0].shape
    assert shape[0] == "batch"
    assert shape[1] == 4
    assert not isinstance(shape[2], int)
    assert sess.run(None, {"x": np.ones((5, 4, 2), np.float32)})[0].shape == (5, 4, 2)


@cache
def _light_random(name: str) -> onnx.ModelProto:
    return expose_logits(randomize_weights(onnx.load(str(light_path(name))), seed=3))


@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("name", ["light_resnet50", "light_inception_v1", "light_squeezenet"])
def test_export_passes_checker_and_runs_like_the_original_in_onnxruntime(name: str, level: int) -> None:
    model = _light_random(name)
    graph = import_onnx(model)
    PassManager(pipeline(level)).run(graph)
    exported = export_onnx(graph)
    onnx.checker.check_model(exported, full_check=True)
    x_name, x = arange_input(model)
    feeds = {x_name: np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)}
    want, got = _ort_run(model, feeds), _ort_run(exported, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_model_close(g, w, context=f"{name} exported after -O{level}")
    if level == 2:
        assert any(n.op_type == "Conv" for n in exported.graph.node)
        assert not any(n.op_type == "BatchNormalization" for n in exported.graph.node)
