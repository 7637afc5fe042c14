"""Small graphs built directly in the IR (no ONNX import), shared by the IR tests."""

from __future__ import annotations

import numpy as np

from mopt.ir import DType, Graph, Node, Value


def conv_relu() -> tuple[Graph, dict[str, Value], dict[str, Node]]:
    """x -> Conv(w, b) -> Relu -> y, with named values and nodes for the tests to poke at."""
    g = Graph("main")
    g.opset = {"": 18}
    x = g.add_input("x", DType.FLOAT, ("N", 3, 8, 8))
    w = g.add_const(np.ones((4, 3, 3, 3), np.float32), "w", exact_name=True)
    b = g.add_const(np.zeros(4, np.float32), "b", exact_name=True)
    conv = g.make_node("Conv", [x, w, b], {"pads": [1, 1, 1, 1]}, name="conv")
    c = conv.outputs[0]
    c.dtype, c.shape = DType.FLOAT, ("N", 4, 8, 8)
    relu = g.make_node("Relu", [c], name="relu")
    y = relu.outputs[0]
    y.dtype, y.shape = DType.FLOAT, ("N", 4, 8, 8)
    g.outputs.append(y)
    return g, {"x": x, "w": w, "b": b, "c": c, "y": y}, {"conv": conv, "relu": relu}


def with_if(g: Graph, cond: Value, then_reads: Value, else_reads: Value) -> tuple[Node, Graph, Graph]:
    """Appends If(cond) whose branches compute Neg(then_reads) / Abs(else_reads), read from the outer graph."""
    then_g = Graph("then", parent=g)
    t = then_g.make_node("Neg", [then_reads], name="neg")
    then_g.outputs.append(t.outputs[0])
    else_g = Graph("else", parent=g)
    e = else_g.make_node("Abs", [else_reads], name="abs")
    else_g.outputs.append(e.outputs[0])
    node = g.make_node("If", [cond], {"then_branch": then_g, "else_branch": else_g}, name="if")
    return node, then_g, else_g
