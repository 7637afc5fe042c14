"""format_graph: the text form of a graph names every value with its type and shape, every node
with its op and attributes, shows small constants' data, and indents nested graphs."""

from __future__ import annotations

import numpy as np

from mopt.ir import DType, Graph, format_graph

from .helpers import conv_relu, with_if


def test_the_documented_example() -> None:
    g = Graph("main")
    x = g.add_input("x", DType.FLOAT, (1, 3, 8, 8))
    w = g.add_const(np.zeros((4, 3, 3, 3), np.float32), "w", exact_name=True)
    g.outputs.append(g.make_node("Conv", [x, w], {"pads": [1, 1, 1, 1]}, name="y").outputs[0])
    assert format_graph(g) == (
        "graph main(%x: float32[1, 3, 8, 8]) -> (%y) {\n  %w = const float32[4, 3, 3, 3]\n  %y = Conv(%x, %w) {pads=[1, 1, 1, 1]}\n}"
    )


def test_ops_types_symbolic_dims_and_small_constants() -> None:
    g, v, _ = conv_relu()
    g.add_const(np.array([0.5, 2.0], np.float32), "scale", exact_name=True)
    g.add_const(np.arange(5, dtype=np.int64), "big", exact_name=True)
    u = g.add_input("u", None, None)
    g.add_input("partial", DType.INT64, ("B", None))
    clip = g.make_node("Clip", [u, None, v["b"]], {"note": "hi", "alpha": 0.25, "t": np.array([1, 2], np.int32)}, name="clip")
    g.outputs.append(clip.outputs[0])
    text = format_graph(g)
    lines = text.splitlines()
    assert lines[0] == "graph main(%x: float32[N, 3, 8, 8], %u: ?, %partial: int64[B, ?]) -> (%relu, %clip) {"
    assert "  %w = const float32[4, 3, 3, 3]" in lines
    assert "  %b = const float32[4] [0.0, 0.0, 0.0, 0.0]" in lines
    assert "  %scale = const float32[2] [0.5, 2.0]" in lines
    assert "  %big = const int64[5]" in lines, "larger constants show no data"
    assert "  %conv = Conv(%x, %w, %b) {pads=[1, 1, 1, 1]}" in lines
    assert "  %relu = Relu(%conv)" in lines
    assert "  %clip = Clip(%u, _, %b) {alpha=0.25, note='hi', t=tensor<int32[2]>[1, 2]}" in lines, "absent inputs show as _"
    assert lines[-1] == "}"
    assert "big = const int64[5] [0, 1, 2, 3, 4]" in format_graph(g, max_const_elems=5)


def test_nested_graphs_are_indented() -> None:
    g, v, _ = conv_relu()
    cond = g.add_input("cond", DType.BOOL, ())
    node, _, _ = with_if(g, cond, v["c"], v["x"])
    g.outputs.append(node.outputs[0])
    text = format_graph(g)
    assert "%cond: bool[]" in text
    assert "  %if = If(%cond) {else_branch=\n    graph else() -> (%abs) {\n      %abs = Abs(%x)\n    }" in text
    assert "then_branch=\n    graph then() -> (%neg) {\n      %neg = Neg(%conv)\n    }}" in text


def test_graphs_attribute_and_big_tensor_attribute() -> None:
    g = Graph("main")
    x = g.add_input("x", DType.FLOAT, (2,))
    a, b = Graph("a", parent=g), Graph("b", parent=g)
    a.outputs.append(a.make_node("Neg", [x], name="na").outputs[0])
    b.outputs.append(b.make_node("Abs", [x], name="nb").outputs[0])
    n = g.make_node("Custom", [x], {"branches": [a, b], "table": np.zeros((3, 3), np.float32)}, domain="com.example", name="c")
    g.outputs.append(n.outputs[0])
    text = format_graph(g)
    assert "%c = com.example.Custom(%x) {branches=[" in text
    assert "graph a() -> (%na) {" in text
    assert "graph b() -> (%nb) {" in text
    assert "table=tensor<float32[3, 3]>}" in text
