"""Evaluate at compile time every node whose inputs are all constants (weights built by
ConstantOfShape, shape arithmetic on static shapes), and Shape/Size of statically shaped values."""

from __future__ import annotations

import numpy as np
import onnx

from mopt.ir.dtypes import c_contiguous, to_numpy
from mopt.ir.graph import Graph, Node
from mopt.passes.manager import Pass, register_pass
from mopt.reference import evaluate_node

# Ops whose result changes from run to run, or that exist for their side effects.
NOT_FOLDABLE = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


def _static_shape_value(node: Node) -> np.ndarray | None:
    x = node.inputs[0] if node.inputs else None
    if x is None:
        return None
    shape = x.static_shape()
    if shape is None:
        return None
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    r = len(shape)
    start = node.attr("start", 0)
    end = node.attr("end", r)
    start = min(r, max(0, start + r if start < 0 else start))
    end = min(r, max(0, end + r if end < 0 else end))
    return np.array(shape[start:end], dtype=np.int64)


def _makes_tensors(node: Node, opset: int) -> bool:
    """False when an output can only be a sequence, optional or map, which no tensor constant holds."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return True
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    return all(any(t.startswith("tensor(") for t in allowed.get(o.type_str, [o.type_str])) for o in schema.outputs)


@register_pass(min_level=1)
class FoldConstants(Pass):
    """Replace nodes computable at compile time by the constants they compute."""

    def run(self, graph: Graph) -> bool:
        changed = False
        folded = 0
        for node in list(graph.nodes):
            if node.domain != "" or node.op_type in NOT_FOLDABLE or any(True for _ in node.subgraphs()):
                continue
            outs: list[np.ndarray] | None = None
            if node.op_type in ("Shape", "Size") and not (node.inputs[0] is not None and node.inputs[0].is_const):
                v = _static_shape_value(node)
                outs = None if v is None else [v]
            elif node.inputs and all(x is None or x.is_const for x in node.inputs) and _makes_tensors(node, graph.opset.get("", 18)):
                try:
                    outs = evaluate_node(node, [None if x is None else x.const for x in node.inputs], graph.opset)
                except Exception as e:  # leave it to the runtime, which will report it properly
                    self.note(f"not folded '{node.name}' ({node.op_type}): {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                    continue
            if outs is None or len(outs) != len(node.outputs):
                continue
            for v, arr in zip(node.outputs, outs, strict=True):
                arr = np.asarray(arr)
                if v.dtype is not None and arr.dtype != object:
                    arr = arr.astype(to_numpy(v.dtype), copy=False)
                c = graph.add_const(c_contiguous(arr), v.name)
                graph.replace_all_uses(v, c)
            graph.remove_node(node)
            folded += 1
            changed = True
        if changed:
            graph.prune_constants()
            self.note(f"folded {folded} nodes")
        return changed
