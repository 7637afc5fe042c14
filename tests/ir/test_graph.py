"""Graph, Node, Value, Attr: building graphs, use-lists kept right by set_input / replace_all_uses /
remove_node(s), unique names, symbolic dims, topological order, and nested graphs (If/Loop bodies
that read outer values; Graph.values() yields only a graph's own values)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mopt.ir import Attr, DType, Graph, Node, Value, verify
from mopt.ir.dtypes import from_numpy
from mopt.ir.graph import attr_kind
from mopt.passes.cleanup.dead_code import EliminateDeadCode

from .helpers import conv_relu, with_if


def uses(v: Value) -> list[tuple[str, int]]:
    return [(n.name, i) for n, i in v.uses]


# -- building --------------------------------------------------------------------------------------
def test_build_a_graph() -> None:
    g, v, n = conv_relu()
    verify(g)
    assert [x.name for x in g.inputs] == ["x"]
    assert list(g.constants) == ["w", "b"]
    assert [x.name for x in g.outputs] == ["relu"]
    assert [node.name for node in g.nodes] == ["conv", "relu"]
    conv, relu = n["conv"], n["relu"]
    assert conv.inputs == [v["x"], v["w"], v["b"]]
    assert conv.outputs == [v["c"]]
    assert (v["c"].producer, v["c"].index) == (conv, 0)
    assert v["x"].producer is None
    assert uses(v["x"]) == [("conv", 0)]
    assert uses(v["b"]) == [("conv", 2)]
    assert uses(v["c"]) == [("relu", 0)]
    assert v["c"].consumers() == [relu]
    assert v["x"].is_graph_input
    assert not v["x"].is_graph_output
    assert v["y"].is_graph_output
    assert not v["y"].is_const
    assert v["w"].is_const
    assert conv.attr("pads") == [1, 1, 1, 1]
    assert conv.attrs["pads"] == Attr("ints", [1, 1, 1, 1])
    assert conv.attr("strides") is None
    assert conv.attr("group", 1) == 1
    assert g.op_histogram() == {"Conv": 1, "Relu": 1}
    assert repr(conv) == "Node(Conv 'conv': (x, w, b) -> (conv))"
    assert repr(g) == "Graph('main', 2 nodes, 1 inputs, 1 outputs)"
    assert repr(v["w"]) == "Value(const 'w', FLOAT, (4, 3, 3, 3))"
    assert repr(v["x"]) == "Value('x', FLOAT, ('N', 3, 8, 8))"


def test_constants_take_dtype_and_shape_from_their_data() -> None:
    g = Graph()
    k = g.add_const(np.arange(6, dtype=np.int64).reshape(2, 3), "k")
    assert (k.dtype, k.shape, k.rank) == (DType.INT64, (2, 3), 2)
    k.const = np.array(1.5, np.float16)
    assert (k.dtype, k.shape, k.rank) == (DType.FLOAT16, (), 0)
    k.const = None
    assert not k.is_const
    assert k.dtype == DType.FLOAT16, "dropping the data keeps the type"
    v = Value(g, "s", const=[1, 2, 3])  # anything numpy can read
    assert v.const is not None
    assert (v.dtype, v.shape) == (from_numpy(np.asarray([1, 2, 3]).dtype), (3,))


def test_names_are_unique_across_a_graph_and_its_subgraphs() -> None:
    g = Graph()
    a = g.new_value("t")
    b = g.new_value("t")
    assert (a.name, b.name) == ("t", "t__0")
    sub = Graph("body", parent=g)
    assert sub.names is g.names
    assert sub.node_names is g.node_names
    assert sub.opset is g.opset
    assert sub.new_value("t").name == "t__1"
    n1 = g.make_node("Relu", [a])
    n2 = sub.make_node("Relu", [a])
    assert (n1.name, n2.name) == ("Relu", "Relu__0"), "node names have their own namespace"
    assert n1.outputs[0].name == "Relu", "a node's single output is named after it"
    multi = g.make_node("Split", [a], num_outputs=2, name="split")
    assert [o.name for o in multi.outputs] == ["split_out0", "split_out1"]
    assert [o.index for o in multi.outputs] == [0, 1]


def test_node_domain_and_qualified_op() -> None:
    g = Graph()
    x = g.add_input("x", DType.FLOAT, (2,))
    assert Node(g, "Relu", "ai.onnx").domain == ""
    fused = g.make_node("FusedConv", [x], domain="com.mopt")
    assert fused.qualified_op == "com.mopt.FusedConv"
    assert g.make_node("Relu", [x]).qualified_op == "Relu"


def test_make_node_before_inserts_in_place() -> None:
    g, v, n = conv_relu()
    neg = g.make_node("Neg", [v["x"]], before=n["relu"], name="neg")
    assert [node.name for node in g.nodes] == ["conv", "neg", "relu"]
    assert uses(v["x"]) == [("conv", 0), ("neg", 0)]
    assert neg.outputs[0].producer is neg


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (1, "int"),
        (True, "int"),
        (np.int64(3), "int"),
        (0.5, "float"),
        (np.float32(0.5), "float"),
        ("relu", "string"),
        (b"raw", "string"),
        (np.zeros(2), "tensor"),
        ([1, 2], "ints"),
        ((1, 2), "ints"),
        ([], "ints"),
        ([1, 2.5], "floats"),
        (["a", "b"], "strings"),
        ([np.zeros(1), np.ones(2)], "tensors"),
        (Graph("g"), "graph"),
        ([Graph("a"), Graph("b")], "graphs"),
    ],
)
def test_attr_kind(value: Any, kind: str) -> None:
    assert attr_kind(value) == kind
    n = Node(Graph(), "Op")
    n.set_attr("a", value)
    assert n.attrs["a"].kind == kind
    assert n.attr("a") is value


@pytest.mark.parametrize("value", [None, {"a": 1}, [1, "a"], object()])
def test_attr_kind_refuses_what_onnx_cannot_hold(value: Any) -> None:
    with pytest.raises(TypeError, match="cannot store"):
        attr_kind(value)


# -- use-lists -------------------------------------------------------------------------------------
def test_set_input_moves_the_use() -> None:
    _, v, n = conv_relu()
    relu = n["relu"]
    relu.set_input(0, v["x"])
    assert uses(v["c"]) == []
    assert uses(v["x"]) == [("conv", 0), ("relu", 0)]
    relu.set_input(0, None)
    assert uses(v["x"]) == [("conv", 0)]
    assert relu.inputs == [None]


def test_a_value_read_twice_by_one_node() -> None:
    g = Graph()
    x = g.add_input("x", DType.FLOAT, (3,))
    y = g.add_input("y", DType.FLOAT, (3,))
    add = g.make_node("Add", [x, x], name="add")
    assert uses(x) == [("add", 0), ("add", 1)]
    assert x.consumers() == [add], "one consumer, listed once"
    add.set_input(1, y)
    assert uses(x) == [("add", 0)]
    assert uses(y) == [("add", 1)]


def test_replace_all_uses_rewires_every_reader() -> None:
    g, v, n = conv_relu()
    neg = g.make_node("Neg", [v["c"]], name="neg")
    g.outputs.append(neg.outputs[0])
    g.replace_all_uses(v["c"], v["x"])
    assert n["relu"].inputs[0] is v["x"]
    assert neg.inputs[0] is v["x"]
    assert uses(v["c"]) == []
    assert uses(v["x"]) == [("conv", 0), ("relu", 0), ("neg", 0)]
    g.remove_node(n["conv"])
    g.prune_constants()
    assert g.constants == {}
    verify(g)


def test_replace_all_uses_reaches_readers_inside_subgraphs() -> None:
    g, v, n = conv_relu()
    cond = g.add_input("cond", DType.BOOL, ())
    node, then_g, else_g = with_if(g, cond, v["c"], v["c"])
    g.outputs.append(node.outputs[0])
    alt = g.make_node("Neg", [v["x"]], name="alt", before=n["relu"]).outputs[0]
    g.replace_all_uses(v["c"], alt)
    assert then_g.nodes[0].inputs[0] is alt
    assert else_g.nodes[0].inputs[0] is alt
    assert n["relu"].inputs[0] is alt
    assert uses(v["c"]) == []
    assert uses(alt) == [("relu", 0), ("neg", 0), ("abs", 0)]
    verify(g)


def test_replace_all_uses_hands_a_graph_output_its_name() -> None:
    """The replacement is an internal node output: it takes the output's name, the old value is renamed."""
    g, v, n = conv_relu()
    neg = g.make_node("Neg", [v["c"]], name="neg")
    new = neg.outputs[0]
    g.replace_all_uses(v["y"], new)
    assert g.outputs == [new]
    assert new.name == "relu"
    assert v["y"].name.startswith("relu__replaced")
    g.remove_node(n["relu"])
    assert g.op_histogram() == {"Conv": 1, "Neg": 1}
    verify(g)


@pytest.mark.parametrize("source", ["graph-input", "constant", "other-output", "outer-value"])
def test_replace_all_uses_keeps_the_output_name_with_an_identity(source: str) -> None:
    """When the replacement has a name users see (or lives in another graph), an Identity keeps the output's name."""
    g, v, _ = conv_relu()
    target: Graph = g
    old, keep = v["y"], "relu"
    if source == "graph-input":
        new = v["x"]
    elif source == "constant":
        new = v["b"]
    elif source == "other-output":
        g.outputs.append(v["c"])
        new = v["c"]
    else:
        target = Graph("body", parent=g)
        old, keep = target.make_node("Neg", [v["y"]], name="inner").outputs[0], "inner"
        target.outputs.append(old)
        new = v["x"]
    name = new.name
    target.replace_all_uses(old, new)
    identity = target.nodes[-1]
    assert identity.op_type == "Identity"
    assert identity.inputs == [new]
    assert identity.outputs[0].name == keep
    assert target.outputs[0] is identity.outputs[0]
    assert new.name == name, "the replacement keeps its own name"
    assert old.name.startswith(f"{keep}__replaced")


def test_remove_node_clears_its_uses() -> None:
    g, v, _ = conv_relu()
    dead = g.make_node("Add", [v["x"], v["c"]], name="dead")
    g.remove_node(dead)
    assert dead.inputs == [None, None]
    assert uses(v["x"]) == [("conv", 0)]
    assert uses(v["c"]) == [("relu", 0)]
    assert all(node is not dead for node in g.nodes)
    verify(g)
    with pytest.raises(ValueError, match="is not in graph"):
        g.make_node("Neg", [v["x"]], before=dead)


def test_remove_nodes_at_once() -> None:
    g, v, _ = conv_relu()
    a = g.make_node("Neg", [v["c"]], name="a")
    b = g.make_node("Abs", [a.outputs[0], v["c"]], name="b")
    g.remove_nodes([b, a])
    assert [node.name for node in g.nodes] == ["conv", "relu"]
    assert uses(v["c"]) == [("relu", 0)]
    assert uses(a.outputs[0]) == []
    verify(g)


def test_toposort_restores_order_and_finds_cycles() -> None:
    g, v, n = conv_relu()
    neg = g.make_node("Neg", [v["y"]], name="neg")
    g.outputs[0] = neg.outputs[0]
    g.nodes.reverse()
    with pytest.raises(AssertionError, match="before it is defined"):
        verify(g)
    g.toposort()
    assert [node.name for node in g.nodes] == ["conv", "relu", "neg"]
    verify(g)
    n["conv"].set_input(0, neg.outputs[0])  # conv -> relu -> neg -> conv
    with pytest.raises(ValueError, match="has a cycle"):
        g.toposort()


def test_toposort_is_stable_and_sees_subgraph_reads() -> None:
    """An If whose branch reads a value must come after that value's producer."""
    g = Graph()
    x = g.add_input("x", DType.FLOAT, (3,))
    cond = g.add_input("c", DType.BOOL, ())
    a = g.make_node("Relu", [x], name="a")
    b = g.make_node("Sigmoid", [x], name="b")
    node, _, _ = with_if(g, cond, a.outputs[0], b.outputs[0])
    g.outputs.append(node.outputs[0])
    g.nodes = [node, b, a]
    g.toposort()
    assert [n.name for n in g.nodes] == ["b", "a", "if"], "independent nodes keep their order"
    verify(g)


def test_prune_constants_keeps_what_is_read_anywhere() -> None:
    g, v, _ = conv_relu()
    cond = g.add_input("cond", DType.BOOL, ())
    k_sub = g.add_const(np.ones(4, np.float32), "k_sub")
    k_out = g.add_const(np.ones(2, np.float32), "k_out")
    g.add_const(np.ones(2, np.float32), "unread")
    node, _, _ = with_if(g, cond, k_sub, v["y"])
    g.outputs += [node.outputs[0], k_out]
    g.prune_constants()
    assert sorted(g.constants) == ["b", "k_out", "k_sub", "w"]


# -- symbolic dims ---------------------------------------------------------------------------------
def test_symbolic_and_unknown_dims() -> None:
    g = Graph()
    v = g.add_input("x", DType.FLOAT, ["N", 3, None])
    assert v.shape == ("N", 3, None)
    assert v.rank == 3
    assert v.static_shape() is None
    v.shape = (2, 3, 4)
    assert v.static_shape() == (2, 3, 4)
    u = g.new_value("u")
    assert (u.shape, u.rank, u.static_shape(), u.dtype) == (None, None, None, None)


# -- nested graphs ---------------------------------------------------------------------------------
def nested() -> tuple[Graph, dict[str, Value], Node, Graph, Graph]:
    g, v, _ = conv_relu()
    cond = g.add_input("cond", DType.BOOL, ())
    node, then_g, else_g = with_if(g, cond, v["c"], v["x"])
    out = g.make_node("Add", [node.outputs[0], v["y"]], name="sum").outputs[0]
    g.outputs[0] = out
    v["cond"] = cond
    return g, v, node, then_g, else_g


def test_subgraph_reads_outer_values() -> None:
    g, v, node, then_g, else_g = nested()
    verify(g)
    assert then_g.parent is g
    assert else_g.parent is g
    assert list(node.subgraphs()) == [then_g, else_g]
    neg = then_g.nodes[0]
    assert neg.inputs[0] is v["c"]
    assert neg.graph is then_g
    assert ("neg", 0) in uses(v["c"]), "an outer value lists its readers inside subgraphs"
    assert then_g.captured_values() == [v["c"]]
    assert else_g.captured_values() == [v["x"]]
    assert g.captured_values() == []


def test_values_yields_only_the_graphs_own_values() -> None:
    g, v, _, then_g, _ = nested()
    assert [x.name for x in then_g.values()] == ["neg"]
    assert all(x.graph is then_g for x in then_g.values())
    names = [x.name for x in g.values()]
    assert names == ["x", "cond", "w", "b", "conv", "relu", "if", "sum"]
    assert len(set(names)) == len(names), "each value once"
    assert "neg" not in names, "the subgraph's values are its own"
    assert then_g.find_value("neg") is then_g.nodes[0].outputs[0]
    assert then_g.find_value("conv") is None
    assert g.find_value("conv") is v["c"]


def test_walk_and_histogram_include_nested_nodes() -> None:
    g, _, _, _, _ = nested()
    assert [n.name for n in g.walk()] == ["conv", "relu", "if", "neg", "abs", "sum"]
    assert g.op_histogram() == {"Abs": 1, "Add": 1, "Conv": 1, "If": 1, "Neg": 1, "Relu": 1}


def test_nested_subgraph_captures_through_two_levels() -> None:
    """A Loop body inside a then-branch reads a value of the main graph: both levels capture it."""
    g, v, _ = conv_relu()
    cond = g.add_input("cond", DType.BOOL, ())
    then_g = Graph("then", parent=g)
    body = Graph("body", parent=then_g)
    i = body.add_input("i", DType.INT64, ())
    c_in = body.add_input("c_in", DType.BOOL, ())
    body.outputs += [c_in, body.make_node("Neg", [v["c"]], name="deep").outputs[0]]
    loop = then_g.make_node("Loop", [None, None], {"body": body}, num_outputs=1, name="loop")
    then_g.outputs.append(loop.outputs[0])
    else_g = Graph("else", parent=g)
    else_g.outputs.append(else_g.make_node("Neg", [v["x"]], name="e").outputs[0])
    node = g.make_node("If", [cond], {"then_branch": then_g, "else_branch": else_g}, name="if")
    g.outputs.append(node.outputs[0])
    verify(g)
    assert body.captured_values() == [v["c"]]
    assert then_g.captured_values() == [v["c"]]
    assert [x.name for x in body.values()] == ["i", "c_in", "deep"]
    assert i.graph is body
    live = g.nodes_reaching_outputs()
    assert {id(n) for n in g.nodes} <= live


def test_dead_code_keeps_what_subgraphs_read() -> None:
    """conv's only reader is inside the If: it stays; a node nobody reads goes."""
    g, v, _ = conv_relu()
    cond = g.add_input("cond", DType.BOOL, ())
    g.outputs.clear()
    node, _, _ = with_if(g, cond, v["c"], v["x"])
    g.outputs.append(node.outputs[0])
    assert EliminateDeadCode().run(g) is True
    assert [n.name for n in g.nodes] == ["conv", "if"]
    assert sorted(g.constants) == ["b", "w"]
    verify(g)
