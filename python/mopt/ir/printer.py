"""A readable text form of a graph, for logs, `mopt inspect --ir` and tests:

graph main(%x: float32[1, 3, 8, 8]) -> (%y) {
  %w = const float32[4, 3, 3, 3]
  %y = Conv(%x, %w) {pads=[1, 1, 1, 1]}
}
"""

from __future__ import annotations

import numpy as np

from mopt.ir.dtypes import name as dtype_name
from mopt.ir.graph import Attr, Graph, Value


def _type(v: Value) -> str:
    t = dtype_name(v.dtype) if v.dtype is not None else "?"
    if v.shape is None:
        return t
    dims = ", ".join("?" if d is None else str(d) for d in v.shape)
    return f"{t}[{dims}]"


def _attr(a: Attr, indent: str) -> str:
    if a.kind == "tensor":
        arr = np.asarray(a.value)
        if arr.size <= 8:
            return f"tensor<{arr.dtype}{list(arr.shape)}>{arr.ravel().tolist()}"
        return f"tensor<{arr.dtype}{list(arr.shape)}>"
    if a.kind == "graph":
        return "\n" + format_graph(a.value, indent + "    ")
    if a.kind == "graphs":
        return "[" + ", ".join(format_graph(g, indent + "    ") for g in a.value) + "]"
    if a.kind == "float":
        return f"{a.value:g}"
    if a.kind == "string":
        return repr(a.value.decode() if isinstance(a.value, bytes) else a.value)
    if a.kind == "proto":
        return "<proto>"
    return str(list(a.value) if isinstance(a.value, tuple) else a.value)


def format_graph(graph: Graph, indent: str = "", *, max_const_elems: int = 4) -> str:
    ins = ", ".join(f"%{v.name}: {_type(v)}" for v in graph.inputs)
    outs = ", ".join(f"%{v.name}" for v in graph.outputs)
    lines = [f"{indent}graph {graph.name}({ins}) -> ({outs}) {{"]
    for c in graph.constants.values():
        arr = c.const
        body = ""
        if arr is not None and arr.size <= max_const_elems:
            body = " " + str(arr.ravel().tolist())
        lines.append(f"{indent}  %{c.name} = const {_type(c)}{body}")
    for n in graph.nodes:
        outs = ", ".join(f"%{v.name}" for v in n.outputs)
        args = ", ".join("_" if v is None else f"%{v.name}" for v in n.inputs)
        attrs = ""
        if n.attrs:
            attrs = " {" + ", ".join(f"{k}={_attr(a, indent)}" for k, a in sorted(n.attrs.items())) + "}"
        lines.append(f"{indent}  {outs} = {n.qualified_op}({args}){attrs}")
    lines.append(f"{indent}}}")
    return "\n".join(lines)
