"""verify(): a well-formed graph passes (nested graphs reading outer values included); each kind of
broken graph a buggy pass could leave behind is caught with a message naming the culprit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mopt.ir import DType, Graph, IRError, Value, verify

from .helpers import conv_relu, with_if


def test_well_formed_graphs_pass() -> None:
    g, v, _ = conv_relu()
    verify(g)
    cond = g.add_input("cond", DType.BOOL, ())
    node, then_g, _ = with_if(g, cond, v["c"], v["x"])
    g.outputs.append(node.outputs[0])
    verify(g)
    verify(then_g)  # a subgraph on its own sees its enclosing graphs' values


def _never_produced(g: Graph, v: dict[str, Value]) -> None:
    ghost = g.new_value("ghost", DType.FLOAT, (3,))
    g.make_node("Neg", [ghost], name="reads_ghost")


def _read_before_defined(g: Graph, v: dict[str, Value]) -> None:
    g.nodes.reverse()


def _missing_use(g: Graph, v: dict[str, Value]) -> None:
    g.nodes[1].inputs[0] = v["x"]  # rewired without set_input: x does not know


def _stale_use(g: Graph, v: dict[str, Value]) -> None:
    v["c"].uses.append((g.nodes[0], 0))  # conv's input 0 is x, not c


def _wrong_producer(g: Graph, v: dict[str, Value]) -> None:
    v["c"].producer = g.nodes[1]


def _wrong_index(g: Graph, v: dict[str, Value]) -> None:
    v["c"].index = 1


def _defined_twice(g: Graph, v: dict[str, Value]) -> None:
    twin = Value(g, "conv", DType.FLOAT, None)
    g.make_node("Neg", [v["x"]], outputs=[twin], name="twin")


def _output_never_computed(g: Graph, v: dict[str, Value]) -> None:
    g.outputs.append(g.new_value("nowhere"))


def _node_of_another_graph(g: Graph, v: dict[str, Value]) -> None:
    other = Graph("other")
    x = other.add_input("x2", DType.FLOAT, (1,))
    g.nodes.append(other.make_node("Neg", [x], name="stranger"))


def _subgraph_with_wrong_parent(g: Graph, v: dict[str, Value]) -> None:
    orphan = Graph("orphan")
    orphan.outputs.append(orphan.add_input("i", DType.FLOAT, ()))
    g.make_node("If", [v["x"]], {"then_branch": orphan, "else_branch": orphan}, name="if")


def _subgraph_reads_a_sibling_value(g: Graph, v: dict[str, Value]) -> None:
    cond = g.add_input("cond", DType.BOOL, ())
    _, then_g, else_g = with_if(g, cond, v["c"], v["x"])
    else_g.nodes[0].set_input(0, then_g.nodes[0].outputs[0])


def _outer_node_reads_a_subgraph_value(g: Graph, v: dict[str, Value]) -> None:
    cond = g.add_input("cond", DType.BOOL, ())
    _, then_g, _ = with_if(g, cond, v["c"], v["x"])
    g.make_node("Relu", [then_g.nodes[0].outputs[0]], name="peeks")


BROKEN: dict[str, tuple[Callable[[Graph, dict[str, Value]], None], str]] = {
    "value-never-produced": (_never_produced, "Node(Neg 'reads_ghost': (ghost) -> (reads_ghost)) reads 'ghost' before it is defined"),
    "read-before-defined": (_read_before_defined, "Node(Relu 'relu': (conv) -> (relu)) reads 'conv' before it is defined"),
    "missing-use": (_missing_use, "'x' does not list its use by Node(Relu 'relu': (x) -> (relu)) (input 0)"),
    "stale-use": (_stale_use, "'conv' lists a stale use by Node(Conv 'conv': (x, w, b) -> (conv)) (input 0)"),
    "wrong-producer": (_wrong_producer, "output 'conv' of Node(Conv 'conv': (x, w, b) -> (conv)) has a wrong producer"),
    "wrong-index": (_wrong_index, "output 'conv' of Node(Conv 'conv': (x, w, b) -> (conv)) has a wrong producer"),
    "defined-twice": (_defined_twice, "value name 'conv' is defined twice"),
    "output-never-computed": (_output_never_computed, "graph output 'nowhere' is never computed"),
    "node-of-another-graph": (_node_of_another_graph, "Node(Neg 'stranger': (x2) -> (stranger)) belongs to another graph"),
    "subgraph-with-wrong-parent": (_subgraph_with_wrong_parent, "subgraph 'orphan' of Node(If 'if': (x) -> (if)) has the wrong parent"),
    "subgraph-reads-a-sibling-value": (_subgraph_reads_a_sibling_value, "Node(Abs 'abs': (neg) -> (abs)) reads 'neg' before it is defined"),
    "outer-node-reads-a-subgraph-value": (
        _outer_node_reads_a_subgraph_value,
        "Node(Relu 'peeks': (neg) -> (peeks)) reads 'neg' before it is defined",
    ),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_graph_is_caught(case: str) -> None:
    g, v, _ = conv_relu()
    breaks, message = BROKEN[case]
    breaks(g, v)
    with pytest.raises(IRError) as err:
        verify(g)
    assert str(err.value) == message
    assert isinstance(err.value, AssertionError), "an IRError is a failed invariant"
