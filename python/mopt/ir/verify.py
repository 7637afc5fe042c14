"""Structural checks of the IR, run after every pass when MOPT_VERIFY=1 (and by the tests)."""

from __future__ import annotations

from mopt.ir.graph import Graph


class IRError(AssertionError):
    """The IR broke an invariant (a bug in a pass)."""


def verify(graph: Graph) -> None:
    """Raises IRError when use-lists, producers, ordering or names are inconsistent."""
    defined: set[int] = {id(v) for v in graph.inputs} | {id(v) for v in graph.constants.values()}
    outer: set[int] = set()
    g = graph.parent
    while g is not None:  # values of enclosing graphs are visible inside a subgraph
        outer |= {id(v) for v in g.values()}
        g = g.parent
    names: dict[str, int] = {}
    for v in graph.inputs:
        names[v.name] = id(v)
    for n in graph.nodes:
        if n.graph is not graph:
            raise IRError(f"{n!r} belongs to another graph")
        for i, x in enumerate(n.inputs):
            if x is None:
                continue
            if id(x) not in defined and id(x) not in outer:
                raise IRError(f"{n!r} reads {x.name!r} before it is defined")
            if not any(u is n and k == i for u, k in x.uses):
                raise IRError(f"{x.name!r} does not list its use by {n!r} (input {i})")
        for i, v in enumerate(n.outputs):
            if v.producer is not n or v.index != i:
                raise IRError(f"output {v.name!r} of {n!r} has a wrong producer")
            if v.name in names and names[v.name] != id(v):
                raise IRError(f"value name {v.name!r} is defined twice")
            names[v.name] = id(v)
            defined.add(id(v))
        for sub in n.subgraphs():
            if sub.parent is not graph:
                raise IRError(f"subgraph {sub.name!r} of {n!r} has the wrong parent")
            verify(sub)
    for v in graph.values():
        for u, k in v.uses:
            if k >= len(u.inputs) or u.inputs[k] is not v:
                raise IRError(f"{v.name!r} lists a stale use by {u!r} (input {k})")
    for o in graph.outputs:
        if id(o) not in defined and id(o) not in outer:
            raise IRError(f"graph output {o.name!r} is never computed")
