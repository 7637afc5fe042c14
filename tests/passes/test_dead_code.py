"""EliminateDeadCode: what reaches no graph output goes; outputs, and what subgraphs read, stay."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from mopt.passes.cleanup.dead_code import EliminateDeadCode

from .helpers import Weights, assert_outputs_unchanged, imported_ops, make_model, node, ops, optimize


def dce(model: onnx.ModelProto):
    return optimize(model, EliminateDeadCode())


def test_unused_branches_and_their_constants_are_removed() -> None:
    w = Weights(0)
    model = make_model(
        [
            node("Relu", ["x"], ["r"]),
            node("Sigmoid", ["x"], ["dead1"]),
            node("Mul", ["dead1", "dead_w"], ["dead2"]),
            node("Tanh", ["dead2"], ["dead3"]),
            node("Add", ["r", "w"], ["y"]),
        ],
        {"x": [2, 4]},
        ["y"],
        {"w": w.normal(4), "dead_w": w.normal(4), "never_read": w.normal(3)},
    )
    graph, records = dce(model)
    assert imported_ops(model) == {"Add": 1, "Mul": 1, "Relu": 1, "Sigmoid": 1, "Tanh": 1}
    assert ops(graph) == {"Add": 1, "Relu": 1}
    assert sorted(graph.constants) == ["w"]
    assert records[0].changed
    assert (records[0].added, records[0].removed) == (0, 3)
    _, again = dce(model)  # a second run on the result finds nothing
    assert EliminateDeadCode().run(graph) is False
    assert again[0].removed == 3
    assert_outputs_unchanged(model, graph, level=1)


def test_graph_outputs_are_kept_even_without_readers() -> None:
    """Every graph output stays: a node output nobody else reads, a graph input passed through,
    and an intermediate value that is also read further on."""
    model = make_model(
        [node("Relu", ["x"], ["r"]), node("Neg", ["r"], ["y"]), node("Exp", ["x"], ["unused"])],
        {"x": [3]},
        ["y", "r", "x"],
    )
    graph, _ = dce(model)
    assert ops(graph) == {"Neg": 1, "Relu": 1}
    assert [v.name for v in graph.outputs] == ["y", "r", "x"]
    assert_outputs_unchanged(model, graph, level=1)


def test_node_with_one_used_output_of_several_is_kept() -> None:
    model = make_model(
        [
            node("Split", ["x", "split"], ["a", "b", "c"], axis=1),
            node("Relu", ["b"], ["y"]),
            node("TopK", ["x", "k"], ["top_values", "top_indices"], axis=1),
            node("Cast", ["top_indices"], ["y2"], to=TensorProto.FLOAT),
        ],
        {"x": [2, 6]},
        ["y", "y2"],
        {"split": np.array([1, 2, 3], np.int64), "k": np.array([2], np.int64)},
    )
    graph, records = dce(model)
    assert ops(graph) == {"Cast": 1, "Relu": 1, "Split": 1, "TopK": 1}
    assert not records[0].changed
    split = next(n for n in graph.nodes if n.op_type == "Split")
    assert len(split.outputs) == 3, "unused outputs of a live node stay (the node computes them anyway)"
    assert_outputs_unchanged(model, graph, level=1)


def if_model() -> onnx.ModelProto:
    """y = If(sum(x) > 0, then: x * outer, else: Neg(x)); `outer` is read only inside the branch,
    and a value read only inside a branch of a dead If goes with it."""
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["x", "outer"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)]
    )
    dead_then = helper.make_graph(
        [helper.make_node("Mul", ["x", "only_for_dead"], ["dt"])],
        "dead_then",
        [],
        [helper.make_tensor_value_info("dt", TensorProto.FLOAT, None)],
    )
    return make_model(
        [
            node("Exp", ["x"], ["outer"]),
            node("Sigmoid", ["x"], ["only_for_dead"]),
            node("ReduceSum", ["x"], ["s"], keepdims=0),
            node("Greater", ["s", "zero"], ["cond"]),
            node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch),
            node("If", ["cond"], ["dead_if"], then_branch=dead_then, else_branch=else_branch),
        ],
        {"x": [4]},
        ["y"],
        {"zero": np.array(0.0, np.float32)},
    )


def test_values_read_only_inside_a_subgraph_are_live() -> None:
    model = if_model()
    graph, _ = dce(model)
    top = sorted(n.op_type for n in graph.nodes)
    assert top == ["Exp", "Greater", "If", "ReduceSum"], "Exp feeds the branch; the dead If and its Sigmoid go"
    for sign in (1.0, -1.0):  # both branches
        feeds = {"x": sign * np.array([0.5, 1.0, 1.5, 2.0], np.float32)}
        assert_outputs_unchanged(model, graph, level=1, feeds=feeds)


def test_unread_constants_are_pruned_and_count_as_a_change() -> None:
    model = make_model([node("Relu", ["x"], ["y"])], {"x": [2]}, ["y"], {"never_read": np.ones(3, np.float32)})
    graph, records = dce(model)
    assert graph.constants == {}
    assert records[0].changed
    assert records[0].removed == 0
