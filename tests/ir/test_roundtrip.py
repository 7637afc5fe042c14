"""ONNX -> IR -> ONNX: a small model with symbolic dims, constants, attributes of several kinds
and If/Loop bodies reading outer values comes back valid (onnx.checker), computing the same thing
(ONNX Runtime), and the IR in between has the shapes, dtypes and nesting the model says."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mopt.frontend import export_onnx, import_onnx
from mopt.ir import DType, format_graph, verify

F = TensorProto.FLOAT


def small_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    then_g = helper.make_graph(
        [helper.make_node("Neg", ["pooled"], ["t"], name="neg")], "then", [], [helper.make_tensor_value_info("t", F, None)]
    )
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["pooled", "scale"], ["e"], name="mul")], "else", [], [helper.make_tensor_value_info("e", F, None)]
    )
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "pooled"], ["acc_out"], name="acc"),  # reads the main graph's value
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", F, None),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", F, None)],
    )
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("LeakyRelu", ["c"], ["r"], name="lrelu", alpha=0.1),
        helper.make_node("Constant", [], ["axes"], name="axes_const", value_ints=[2, 3]),
        helper.make_node("ReduceMean", ["r", "axes"], ["pooled"], name="pool", keepdims=0),
        helper.make_node("If", ["flag"], ["branch"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["trips", "", "branch"], ["looped"], name="loop", body=body),
        helper.make_node("Gemm", ["looped", "gw"], ["y"], name="gemm", transB=1, alpha=0.5),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", F, ["N", 3, 6, 6]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", F, ["N", 5])],
        initializer=[
            numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
            numpy_helper.from_array(np.array(1.5, np.float32), "scale"),
            numpy_helper.from_array(np.array(3, np.int64), "trips"),
            numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "gw"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="test")
    model.ir_version = 8
    model.metadata_props.add(key="author", value="tests")
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return list(sess.run(None, feeds))


def test_import_builds_the_ir_the_model_describes() -> None:
    g = import_onnx(small_model())
    verify(g)
    assert g.opset == {"": 18}
    assert g.metadata["author"] == "tests"
    assert [v.name for v in g.inputs] == ["x", "flag"]
    assert g.inputs[0].shape == ("N", 3, 6, 6)
    assert g.inputs[0].dtype == DType.FLOAT
    assert g.inputs[1].dtype == DType.BOOL
    assert g.outputs[0].shape == ("N", 5)
    assert sorted(g.constants) == ["axes", "b", "gw", "scale", "trips", "w"], "Constant nodes are constants"
    assert g.constants["axes"].const.tolist() == [2, 3]
    assert [n.op_type for n in g.nodes] == ["Conv", "LeakyRelu", "ReduceMean", "If", "Loop", "Gemm"]
    assert g.op_histogram() == {
        "Add": 1,
        "Conv": 1,
        "Gemm": 1,
        "Identity": 1,
        "If": 1,
        "LeakyRelu": 1,
        "Loop": 1,
        "Mul": 1,
        "Neg": 1,
        "ReduceMean": 1,
    }
    conv = g.nodes[0]
    assert conv.outputs[0].shape == ("N", 4, 6, 6), "shape inference keeps the symbolic batch"
    assert conv.attrs["pads"].kind == "ints"
    assert g.nodes[1].attrs["alpha"].kind == "float"
    pooled = g.nodes[2].outputs[0]
    if_node, loop = g.nodes[3], g.nodes[4]
    then_g, else_g, body = if_node.attr("then_branch"), if_node.attr("else_branch"), loop.attr("body")
    assert then_g.parent is g
    assert body.parent is g
    assert then_g.nodes[0].inputs[0] is pooled, "the branch reads the outer value itself"
    assert else_g.nodes[0].inputs[1] is g.constants["scale"]
    assert body.captured_values() == [pooled]
    assert else_g.captured_values() == [pooled, g.constants["scale"]]
    assert [v.name for v in body.values()] == ["i", "cond_in", "acc_in", "acc_out", "cond_out"]
    assert loop.inputs[1] is None, "the absent loop condition"
    assert {(u.name, k) for u, k in pooled.uses} == {("neg", 0), ("mul", 0), ("acc", 1)}


def test_printed_ir_names_ops_and_shapes() -> None:
    text = format_graph(import_onnx(small_model()))
    assert "graph small(%x: float32[N, 3, 6, 6], %flag: bool[]) -> (%y) {" in text
    assert "%c = Conv(%x, %w, %b) {pads=[1, 1, 1, 1], strides=[1, 1]}" in text
    assert "%r = LeakyRelu(%c) {alpha=0.1}" in text
    assert "%axes = const int64[2] [2, 3]" in text
    assert "%looped = Loop(%trips, _, %branch) {body=" in text
    assert "      %acc_out = Add(%acc_in, %pooled)" in text
    assert "%y = Gemm(%looped, %gw) {alpha=0.5, transB=1}" in text


def test_round_trip_is_valid_and_computes_the_same() -> None:
    model = small_model()
    exported = export_onnx(import_onnx(model))
    onnx.checker.check_model(exported, full_check=True)
    assert exported.metadata_props[0].key == "author"
    assert [n.op_type for n in exported.graph.node] == ["Conv", "LeakyRelu", "ReduceMean", "If", "Loop", "Gemm"]
    assert [i.name for i in exported.graph.input] == ["x", "flag"]
    assert [o.name for o in exported.graph.output] == ["y"]
    dims = exported.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, 6, 6]
    rng = np.random.default_rng(1)
    for batch, flag in [(2, True), (1, False)]:
        feeds = {"x": rng.standard_normal((batch, 3, 6, 6)).astype(np.float32), "flag": np.array(flag)}
        for got, want in zip(run(exported, feeds), run(model, feeds), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_round_trip_twice_is_stable() -> None:
    once = export_onnx(import_onnx(small_model()))
    twice = export_onnx(import_onnx(once))
    assert onnx.printer.to_text(twice.graph) == onnx.printer.to_text(once.graph)
