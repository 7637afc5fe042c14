"""RemoveIdentity / RemoveDropout: the node goes, its readers read its input, output names stay."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from mopt.passes.cleanup.identity import RemoveDropout, RemoveIdentity, RemoveNoOpCast

from .helpers import Weights, apply, assert_outputs_unchanged, imported_ops, make_model, node, ops


def test_identity_between_nodes_is_removed() -> None:
    model = make_model(
        [node("Relu", ["x"], ["r"]), node("Identity", ["r"], ["i"]), node("Identity", ["i"], ["j"]), node("Sigmoid", ["j"], ["y"])],
        {"x": [2, 3]},
        ["y"],
    )
    graph, records = apply(model, RemoveIdentity())
    assert imported_ops(model) == {"Identity": 2, "Relu": 1, "Sigmoid": 1}
    assert ops(graph) == {"Relu": 1, "Sigmoid": 1}
    assert records[0].details == ["RemoveIdentity: 2x"]
    assert graph.nodes[1].inputs[0] is graph.nodes[0].outputs[0]
    assert_outputs_unchanged(model, graph, level=1)


def test_identity_feeding_a_graph_output_hands_over_the_name() -> None:
    """Relu -> Identity -> output 'y': the Relu's result becomes 'y' (and is still read by Neg)."""
    model = make_model(
        [node("Relu", ["x"], ["r"]), node("Identity", ["r"], ["y"]), node("Neg", ["r"], ["z"])],
        {"x": [2, 3]},
        ["y", "z"],
    )
    graph, _ = apply(model, RemoveIdentity())
    assert ops(graph) == {"Neg": 1, "Relu": 1}
    assert [v.name for v in graph.outputs] == ["y", "z"]
    relu = graph.nodes[0]
    assert relu.outputs[0] is graph.outputs[0]
    assert graph.nodes[1].inputs[0] is relu.outputs[0]
    assert_outputs_unchanged(model, graph, level=1)


@pytest.mark.parametrize(
    "source",
    ["graph-input", "constant", "other-graph-output"],
)
def test_identity_that_names_an_output_is_kept(source: str) -> None:
    """When the Identity's input cannot take the output's name (it has a name of its own that
    users see), the Identity stays, with the reason shown by --explain."""
    inputs = {"x": [2, 3]}
    outputs = ["y"]
    nodes = [node("Relu", ["x"], ["r"])]
    inits = {}
    if source == "graph-input":
        nodes.append(node("Identity", ["x"], ["i"]))
    elif source == "constant":
        inits["c"] = Weights(0).normal(2, 3)
        nodes.append(node("Identity", ["c"], ["i"]))
    else:
        nodes.append(node("Identity", ["r"], ["i"]))
        outputs.append("r")
    model = make_model([*nodes, node("Add", ["r", "x"], ["y"])], inputs, [*outputs, "i"], inits)
    graph, records = apply(model, RemoveIdentity(), explain=True)
    assert ops(graph) == {"Add": 1, "Identity": 1, "Relu": 1}
    assert [v.name for v in graph.outputs] == [*outputs, "i"]
    assert "RemoveIdentity at 'i': not applied: it gives a graph output its name" in records[0].details
    assert_outputs_unchanged(model, graph, level=1)


def test_dropout_in_inference_is_removed() -> None:
    model = make_model(
        [
            node("Relu", ["x"], ["r"]),
            node("Dropout", ["r", "ratio"], ["d"]),  # training_mode absent: inference
            node("Dropout", ["d", "ratio", "off"], ["d2", "unused_mask"]),  # mask produced, never read
            node("Sigmoid", ["d2"], ["s"]),
            node("Dropout", ["s"], ["y"]),  # feeds the graph output
        ],
        {"x": [2, 3]},
        ["y"],
        {"ratio": np.array(0.5, np.float32), "off": np.array(False)},
    )
    graph, records = apply(model, RemoveDropout())
    assert imported_ops(model)["Dropout"] == 3
    assert ops(graph) == {"Relu": 1, "Sigmoid": 1}
    assert records[0].details == ["RemoveDropout: 3x"]
    assert [v.name for v in graph.outputs] == ["y"]
    assert_outputs_unchanged(model, graph, level=1)


@pytest.mark.parametrize("mask_use", ["read-by-a-node", "graph-output"])
def test_dropout_whose_mask_is_used_is_kept(mask_use: str) -> None:
    nodes = [node("Relu", ["x"], ["r"]), node("Dropout", ["r"], ["d", "mask"])]
    if mask_use == "read-by-a-node":
        nodes += [node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT), node("Add", ["d", "mask_f"], ["y"])]
        outputs = ["y"]
    else:
        nodes += [node("Neg", ["d"], ["y"])]
        outputs = ["y", "mask"]
    model = make_model(nodes, {"x": [2, 3]}, outputs)
    graph, records = apply(model, RemoveDropout(), explain=True)
    assert ops(graph) == imported_ops(model)
    assert "RemoveDropout at 'd': not applied: its mask output is used" in records[0].details
    if mask_use == "read-by-a-node":
        assert_outputs_unchanged(model, graph, level=1)


def test_dropout_in_training_mode_is_kept() -> None:
    """training_mode=True is not an identity (mopt refuses to run it, so no numbers to compare)."""
    model = make_model(
        [node("Dropout", ["x", "ratio", "on"], ["d"]), node("Relu", ["d"], ["y"])],
        {"x": [2, 3]},
        ["y"],
        {"ratio": np.array(0.0, np.float32), "on": np.array(True)},
    )
    graph, records = apply(model, RemoveDropout(), explain=True)
    assert ops(graph) == {"Dropout": 1, "Relu": 1}
    assert "RemoveDropout at 'd': not applied: training_mode may be true" in records[0].details


def test_cast_to_the_type_it_has_is_removed() -> None:
    """Cast(float -> float) and CastLike(float, like float) go; Cast(float -> int64) and the Cast
    back (int64 -> float, which truncates) stay."""
    model = make_model(
        [
            node("Cast", ["x"], ["c1"], to=TensorProto.FLOAT),
            node("Relu", ["c1"], ["r"]),
            node("CastLike", ["r", "x"], ["c2"]),
            node("Cast", ["c2"], ["i"], to=TensorProto.INT64),
            node("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
            node("Add", ["f", "c2"], ["y"]),
        ],
        {"x": [3, 5]},
        ["y"],
    )
    graph, records = apply(model, RemoveNoOpCast(), explain=True)
    assert ops(graph) == {"Add": 1, "Cast": 2, "Relu": 1}
    assert "RemoveNoOpCast at 'i': not applied: it changes the type" in records[0].details
    assert graph.nodes[0].inputs[0] is graph.inputs[0]
    x = Weights(3).normal(3, 5, scale=4.0)
    assert_outputs_unchanged(model, graph, level=1, feeds={"x": x})


def test_cast_that_names_a_graph_output_from_an_input_is_kept() -> None:
    model = make_model([node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], {"x": [2]}, ["y"])
    graph, records = apply(model, RemoveNoOpCast(), explain=True)
    assert ops(graph) == {"Cast": 1}
    assert "RemoveNoOpCast at 'y': not applied: it gives a graph output its name" in records[0].details
