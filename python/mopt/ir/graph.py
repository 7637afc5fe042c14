"""mopt's graph IR: Graph, Node, Value, Attr.

A Graph holds nodes in topological order, its inputs and outputs, and constants (Values with a
numpy array). Every Value knows its producer and its uses, so rewrites are cheap:
`graph.replace_all_uses(old, new)` and `graph.remove_node(node)` keep the use-lists right.
Nested graphs (If/Loop/Scan bodies) are Graph objects in attributes, with `parent` set.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mopt.ir.dtypes import DType, from_numpy

Dim = int | str | None
Shape = tuple[Dim, ...]


class Value:
    """A tensor in the graph: a graph input, a constant, or a node output."""

    __slots__ = ("_const", "doc", "dtype", "graph", "index", "name", "producer", "shape", "uses")

    def __init__(
        self,
        graph: Graph,
        name: str,
        dtype: int | None = None,
        shape: Shape | None = None,
        const: np.ndarray | None = None,
    ) -> None:
        self.graph = graph
        self.name = name
        self.dtype = DType(dtype) if dtype is not None else None
        self.shape = tuple(shape) if shape is not None else None
        self.producer: Node | None = None
        self.index = 0  # output index in the producer
        self.uses: list[tuple[Node, int]] = []
        self._const: np.ndarray | None = None
        self.doc = ""
        if const is not None:
            self.const = const

    @property
    def const(self) -> np.ndarray | None:
        """The value's data when it is a constant, else None."""
        return self._const

    @const.setter
    def const(self, array: np.ndarray | None) -> None:
        if array is None:
            self._const = None
            return
        array = np.asarray(array)
        self._const = array
        self.dtype = from_numpy(array.dtype)
        self.shape = tuple(int(d) for d in array.shape)

    @property
    def is_const(self) -> bool:
        return self._const is not None

    @property
    def is_graph_input(self) -> bool:
        return any(v is self for v in self.graph.inputs)

    @property
    def is_graph_output(self) -> bool:
        return any(v is self for v in self.graph.outputs)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def static_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is a known integer, else None."""
        if self.shape is None or any(not isinstance(d, int) for d in self.shape):
            return None
        return tuple(int(d) for d in self.shape)  # type: ignore[arg-type]

    def consumers(self) -> list[Node]:
        seen: list[Node] = []
        for n, _ in self.uses:
            if not any(n is s for s in seen):
                seen.append(n)
        return seen

    def __repr__(self) -> str:
        kind = "const " if self.is_const else ""
        return f"Value({kind}{self.name!r}, {self.dtype.name if self.dtype else '?'}, {self.shape})"


@dataclass
class Attr:
    """An attribute: its ONNX AttributeProto type name and its Python value.

    kinds: int, float, string, tensor (np.ndarray), graph (Graph), ints, floats, strings,
    tensors, graphs, and 'proto' for the rare kinds kept as raw AttributeProto (sparse tensors,
    type protos).
    """

    kind: str
    value: Any


class Node:
    """One operation. Inputs may be None (an absent optional input)."""

    __slots__ = ("attrs", "doc", "domain", "graph", "inputs", "name", "op_type", "outputs")

    def __init__(self, graph: Graph, op_type: str, domain: str = "", name: str = "") -> None:
        self.graph = graph
        self.op_type = op_type
        self.domain = "" if domain == "ai.onnx" else domain
        self.name = name
        self.inputs: list[Value | None] = []
        self.outputs: list[Value] = []
        self.attrs: dict[str, Attr] = {}
        self.doc = ""

    # -- attributes ----------------------------------------------------------------------------
    def attr(self, name: str, default: Any = None) -> Any:
        a = self.attrs.get(name)
        return default if a is None else a.value

    def set_attr(self, name: str, value: Any, kind: str | None = None) -> None:
        self.attrs[name] = Attr(kind or attr_kind(value), value)

    # -- wiring --------------------------------------------------------------------------------
    def set_input(self, i: int, value: Value | None) -> None:
        old = self.inputs[i]
        if old is not None:
            old.uses[:] = [(n, k) for n, k in old.uses if not (n is self and k == i)]
        self.inputs[i] = value
        if value is not None:
            value.uses.append((self, i))

    def subgraphs(self) -> Iterator[Graph]:
        for a in self.attrs.values():
            if a.kind == "graph":
                yield a.value
            elif a.kind == "graphs":
                yield from a.value

    @property
    def qualified_op(self) -> str:
        return f"{self.domain}.{self.op_type}" if self.domain else self.op_type

    def __repr__(self) -> str:
        ins = ", ".join(v.name if v is not None else "<none>" for v in self.inputs)
        outs = ", ".join(v.name for v in self.outputs)
        return f"Node({self.qualified_op} {self.name!r}: ({ins}) -> ({outs}))"


def attr_kind(value: Any) -> str:
    """The attribute kind a Python value maps to."""
    if isinstance(value, bool | int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str | bytes):
        return "string"
    if isinstance(value, np.ndarray):
        return "tensor"
    if isinstance(value, Graph):
        return "graph"
    if isinstance(value, list | tuple):
        items = list(value)
        if not items:
            return "ints"
        if all(isinstance(v, bool | int | np.integer) for v in items):
            return "ints"
        if all(isinstance(v, int | float | np.integer | np.floating) for v in items):
            return "floats"
        if all(isinstance(v, str | bytes) for v in items):
            return "strings"
        if all(isinstance(v, np.ndarray) for v in items):
            return "tensors"
        if all(isinstance(v, Graph) for v in items):
            return "graphs"
    raise TypeError(f"cannot store {type(value).__name__} as an attribute")


class _Names:
    """Unique value and node names shared by a graph and all its subgraphs."""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.counter = itertools.count()

    def claim(self, name: str) -> str:
        self.used.add(name)
        return name

    def fresh(self, hint: str) -> str:
        hint = hint or "v"
        if hint not in self.used:
            self.used.add(hint)
            return hint
        while True:
            cand = f"{hint}__{next(self.counter)}"
            if cand not in self.used:
                self.used.add(cand)
                return cand


class Graph:
    """A graph: nodes in topological order, inputs, outputs, constants, opset imports."""

    def __init__(self, name: str = "main", parent: Graph | None = None) -> None:
        self.name = name
        self.parent = parent
        self.nodes: list[Node] = []
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.constants: dict[str, Value] = {}
        self.opset: dict[str, int] = {} if parent is None else parent.opset
        self.names = _Names() if parent is None else parent.names
        self.node_names = _Names() if parent is None else parent.node_names
        self.doc = ""
        self.metadata: dict[str, str] = {}
        # Initializers that the caller may override by feeding them (old-IR models): name -> default.
        self.input_defaults: dict[str, np.ndarray] = {}

    # -- creation ------------------------------------------------------------------------------
    def new_value(self, hint: str = "v", dtype: int | None = None, shape: Shape | None = None) -> Value:
        return Value(self, self.names.fresh(hint), dtype, shape)

    def add_input(self, name: str, dtype: int | None, shape: Shape | None) -> Value:
        v = Value(self, self.names.claim(name), dtype, shape)
        self.inputs.append(v)
        return v

    def add_const(self, array: np.ndarray, hint: str = "const", *, exact_name: bool = False) -> Value:
        name = self.names.claim(hint) if exact_name else self.names.fresh(hint)
        v = Value(self, name, const=np.asarray(array))
        self.constants[v.name] = v
        return v

    def make_node(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        *,
        num_outputs: int = 1,
        outputs: Sequence[Value] | None = None,
        domain: str = "",
        name: str = "",
        before: Node | None = None,
    ) -> Node:
        """Creates a node (inserted before `before`, or appended) with fresh output values."""
        node = Node(self, op_type, domain, self.node_names.fresh(name or op_type))
        for v in inputs:
            node.inputs.append(None)
            node.set_input(len(node.inputs) - 1, v)
        if outputs is None:
            outputs = [self.new_value(f"{node.name}_out{i}" if num_outputs > 1 else node.name) for i in range(num_outputs)]
        for i, v in enumerate(outputs):
            v.producer = node
            v.index = i
            node.outputs.append(v)
        for k, val in (attrs or {}).items():
            if isinstance(val, Attr):
                node.attrs[k] = val
            elif val is not None:
                node.set_attr(k, val)
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self._index_of(before), node)
        return node

    # -- queries -------------------------------------------------------------------------------
    def _index_of(self, node: Node) -> int:
        for i, n in enumerate(self.nodes):
            if n is node:
                return i
        raise ValueError(f"{node!r} is not in graph {self.name!r}")

    def values(self) -> Iterator[Value]:
        """Every value of this graph (inputs, constants, node outputs), each once."""
        seen: set[int] = set()
        for v in itertools.chain(self.inputs, self.constants.values()):
            if id(v) not in seen:
                seen.add(id(v))
                yield v
        for n in self.nodes:
            for v in itertools.chain((x for x in n.inputs if x is not None), n.outputs):
                if id(v) not in seen and v.graph is self:  # not the outer values a subgraph reads
                    seen.add(id(v))
                    yield v

    def find_value(self, name: str) -> Value | None:
        for v in self.values():
            if v.name == name:
                return v
        return None

    def nodes_reaching_outputs(self) -> set[int]:
        """ids of nodes whose results reach a graph output (including through subgraph captures)."""
        live: set[int] = set()
        stack = [v for v in self.outputs]
        seen: set[int] = set()
        while stack:
            v = stack.pop()
            if id(v) in seen:
                continue
            seen.add(id(v))
            n = v.producer
            if n is None or n.graph is not self or id(n) in live:
                continue
            live.add(id(n))
            stack.extend(x for x in n.inputs if x is not None)
            for g in n.subgraphs():
                stack.extend(x for x in g.captured_values() if x.graph is self)
        return live

    def captured_values(self) -> list[Value]:
        """Values of enclosing graphs that this graph (or its subgraphs) reads."""
        own: set[int] = {id(v) for v in self.values()}
        out: list[Value] = []
        seen: set[int] = set()
        for n in self.nodes:
            for x in n.inputs:
                if x is not None and x.graph is not self and id(x) not in seen and id(x) not in own:
                    seen.add(id(x))
                    out.append(x)
            for g in n.subgraphs():
                for x in g.captured_values():
                    if x.graph is not self and id(x) not in seen:
                        seen.add(id(x))
                        out.append(x)
        for v in self.outputs:  # an output may be an outer value passed straight through
            if v.graph is not self and id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    def walk(self) -> Iterator[Node]:
        """Every node, including those of nested graphs (depth-first)."""
        for n in self.nodes:
            yield n
            for g in n.subgraphs():
                yield from g.walk()

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.walk():
            hist[n.qualified_op] = hist.get(n.qualified_op, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    # -- mutation ------------------------------------------------------------------------------
    def remove_node(self, node: Node) -> None:
        """Detaches a node. Its outputs must no longer be used (or be used only by removed nodes)."""
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses[:] = [(n, k) for n, k in v.uses if not (n is node and k == i)]
        node.inputs = [None] * len(node.inputs)
        self.nodes = [n for n in self.nodes if n is not node]

    def remove_nodes(self, nodes: Iterable[Node]) -> None:
        doomed = {id(n) for n in nodes}
        for n in self.nodes:
            if id(n) in doomed:
                for i, v in enumerate(n.inputs):
                    if v is not None:
                        v.uses[:] = [(u, k) for u, k in v.uses if not (u is n and k == i)]
                n.inputs = [None] * len(n.inputs)
        self.nodes = [n for n in self.nodes if id(n) not in doomed]

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Every reader of `old` (nodes, subgraphs, graph outputs) reads `new` instead.

        Graph outputs keep their names: when `old` is an output, `new` takes over its name if it
        can (a node output with no user-visible name); otherwise an Identity keeps the name.
        """
        for node, i in list(old.uses):
            node.set_input(i, new)
        if any(o is old for o in self.outputs):
            visible = new.is_graph_input or new.is_const or new.is_graph_output or new.graph is not self
            if not visible:
                self.names.used.discard(new.name)
                new.name = old.name
                old.name = self.names.fresh(old.name + "__replaced")
                self.outputs = [new if o is old else o for o in self.outputs]
            else:
                keep = Value(self, old.name, new.dtype, new.shape)
                old.name = self.names.fresh(old.name + "__replaced")
                self.make_node("Identity", [new], outputs=[keep])
                self.outputs = [keep if o is old else o for o in self.outputs]

    def toposort(self) -> None:
        """Restores topological order (stable: keeps the current order where it is valid)."""
        produced_here = {id(v) for n in self.nodes for v in n.outputs}
        indeg: dict[int, int] = {}
        users: dict[int, list[Node]] = {}
        for n in self.nodes:
            deps = {id(x.producer) for x in _node_reads(n) if x.producer is not None and id(x) in produced_here}
            indeg[id(n)] = len(deps)
            for d in deps:
                users.setdefault(d, []).append(n)
        order: list[Node] = []
        ready = [n for n in self.nodes if indeg[id(n)] == 0]
        position = {id(n): i for i, n in enumerate(self.nodes)}
        import heapq

        heap = [(position[id(n)], id(n), n) for n in ready]
        heapq.heapify(heap)
        while heap:
            _, _, n = heapq.heappop(heap)
            order.append(n)
            for u in users.get(id(n), []):
                indeg[id(u)] -= 1
                if indeg[id(u)] == 0:
                    heapq.heappush(heap, (position[id(u)], id(u), u))
        if len(order) != len(self.nodes):
            raise ValueError(f"graph {self.name!r} has a cycle")
        self.nodes = order

    def prune_constants(self) -> None:
        """Drops constants nobody reads."""
        read = {id(x) for n in self.walk() for x in n.inputs if x is not None}
        read |= {id(v) for v in self.outputs}
        self.constants = {k: v for k, v in self.constants.items() if id(v) in read}

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} nodes, {len(self.inputs)} inputs, {len(self.outputs)} outputs)"


def _node_reads(node: Node) -> Iterator[Value]:
    for x in node.inputs:
        if x is not None:
            yield x
    for g in node.subgraphs():
        yield from g.captured_values()
