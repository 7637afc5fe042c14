"""float16 activations (`mopt compile --fp16-activations`, `quantize(mode="fp16",
fp16_activations=True)`): the float32 values that flow between ops able to take float16 are
stored as float16, and the constants those ops read become float16 tensors. Arithmetic stays
float32: Conv, Gemm, MatMul, the fused ops, normalizations, pools and elementwise ops widen their
operands, compute in float32 and round once (runtime/f16_adapter.cc); Softmax's float16 kernel
computes in float too; the data-movement ops copy the 2-byte values. What halves is the memory the
activations take and the bytes moved between ops.

    x (float32 input) -> Cast(float16) -> [float16 ops ...] -> Cast(float32) -> output

An op stays float32, with a Cast at each float16 value it reads, when:
- it is not one of F16_OPS (its float inputs are not all of one type T, or it has no float16 kernel);
- one of its float32 constants has a finite value past float16's range (a -3.4e38 mask would
  become -inf, and 0 * -inf is NaN);
- it does shape arithmetic (reads a Cast from an integer type, or feeds a Cast to one): float16
  is exact only for integers up to 2048;
- it holds a subgraph;
- it reads or writes a value in `keep` (measured outside float16's range on sample data: no
  float16 copy of it may exist).
Graph inputs and outputs keep their float32 type.
"""

from __future__ import annotations

import numpy as np

from mopt.ir.dtypes import DType, is_float
from mopt.ir.graph import Graph, Node, Value

F16_MAX = 65504.0

# (domain, op): every float input and output of one type T, and a native float16 kernel
F16_OPS = {
    ("", "Conv"), ("com.mopt", "FusedConv"), ("", "Gemm"), ("com.mopt", "FusedGemm"), ("", "MatMul"),
    ("com.mopt", "FusedMatMul"), ("com.mopt", "FusedMLP"), ("com.mopt", "Attention"), ("", "Relu"), ("", "LeakyRelu"), ("", "Sigmoid"),
    ("", "Tanh"), ("", "Gelu"), ("", "Erf"), ("", "Clip"), ("", "Add"), ("", "Sub"), ("", "Mul"), ("", "Div"),
    ("", "MaxPool"), ("", "AveragePool"), ("", "GlobalAveragePool"), ("", "GlobalMaxPool"), ("", "Softmax"),
    ("", "LayerNormalization"), ("", "BatchNormalization"), ("", "Concat"), ("", "Reshape"), ("", "Flatten"),
    ("", "Squeeze"), ("", "Unsqueeze"), ("", "Transpose"), ("", "Identity"), ("", "Split"), ("", "Slice"),
    ("", "Gather"), ("", "LRN"),
}


def half_or_none(arr: np.ndarray) -> np.ndarray | None:
    """`arr` (float32) as float16 when every finite value stays finite, else None (also what
    `mopt.lower.program.as_f16` stores weights by)."""
    finite = arr[np.isfinite(arr)]
    if finite.size and float(np.abs(finite).max()) > F16_MAX:
        return None
    return arr.astype(np.float16)


def _f32_const(v: Value | None) -> bool:
    return v is not None and v.is_const and v.const.dtype == np.float32  # type: ignore[union-attr]


def _is_shape_arithmetic(node: Node) -> bool:
    for v in node.inputs:
        p = v.producer if v is not None else None
        if p is not None and p.op_type == "Cast" and p.inputs[0] is not None and p.inputs[0].dtype is not None \
                and not is_float(p.inputs[0].dtype):
            return True
    for o in node.outputs:
        for n, _ in o.uses:
            if n.op_type == "Cast" and not is_float(int(n.attr("to", DType.FLOAT))):
                return True
    return False


def _capable(node: Node, native: dict[tuple[str, str], set[int]]) -> bool:
    key = (node.domain, node.op_type)
    if key not in F16_OPS or any(True for _ in node.subgraphs()):
        return False
    dtypes = native.get(key)
    if dtypes is None or (dtypes and int(DType.FLOAT16) not in dtypes):
        return False
    floats = [v for v in (*node.inputs, *node.outputs) if v is not None and v.dtype is not None and is_float(v.dtype)]
    if not floats or any(v.dtype != DType.FLOAT for v in floats):
        return False
    if any(_f32_const(v) and half_or_none(v.const) is None for v in node.inputs):  # type: ignore[union-attr]
        return False
    return not _is_shape_arithmetic(node)


# a value whose largest magnitude on sample data is past this overflows (or comes near it), or
# below F16_TINY underflows to float16's subnormals and zero: it stays float32
F16_SAFE_MAX = F16_MAX / 2
F16_TINY = 2.0**-14  # the smallest normal float16


def out_of_f16_range(max_abs: float) -> bool:
    """Whether a value whose largest magnitude is `max_abs` loses its values as float16."""
    return not (max_abs == 0.0 or F16_TINY <= max_abs <= F16_SAFE_MAX)


def store_activations_f16(graph: Graph, native: dict[tuple[str, str], set[int]], keep: frozenset[str] = frozenset()) -> int:
    """Rewrites `graph` (in place) as the module docstring says; returns how many ops take float16.
    keep: names of values that must stay float32 (their producers and readers stay float32)."""
    # values a subgraph reads keep their type (the subgraph's readers are not rewritten)
    captured = {id(v) for n in graph.nodes for sg in n.subgraphs() for v in sg.captured_values()}
    f16 = {id(n) for n in graph.nodes if _capable(n, native) and not any(id(o) in captured for o in n.outputs)
           and not any(v is not None and v.name in keep for v in (*n.inputs, *n.outputs))}
    if not f16:
        return 0
    halves: dict[int, Value] = {}
    retyped: set[int] = set()
    for n in graph.nodes:
        if id(n) not in f16:
            continue
        for i, v in enumerate(n.inputs):
            if _f32_const(v):
                if id(v) not in halves:
                    halves[id(v)] = graph.add_const(half_or_none(v.const), v.name + "_f16")  # type: ignore[arg-type, union-attr]
                n.set_input(i, halves[id(v)])
        for o in n.outputs:
            if o.dtype == DType.FLOAT:
                o.dtype = DType.FLOAT16
                retyped.add(id(o))
    # the boundaries: a Cast per value, before its first reader on the other side
    casts: dict[tuple[int, int], Value] = {}

    def cast(v: Value, to: DType, before: Node) -> Value:
        key = (id(v), int(to))
        if key not in casts:
            c = graph.make_node("Cast", [v], {"to": int(to)}, name=f"{v.name}_to_{'f16' if to == DType.FLOAT16 else 'f32'}",
                                before=before)
            c.outputs[0].dtype, c.outputs[0].shape = to, v.shape
            casts[key] = c.outputs[0]
        return casts[key]

    for n in list(graph.nodes):
        for i, v in enumerate(n.inputs):
            if v is None or v.is_const:
                continue
            if id(n) in f16 and v.dtype == DType.FLOAT:
                n.set_input(i, cast(v, DType.FLOAT16, n))
            elif id(n) not in f16 and id(v) in retyped:
                n.set_input(i, cast(v, DType.FLOAT, n))
    for k, o in enumerate(graph.outputs):
        if id(o) in retyped:
            name = o.name
            o.name = graph.names.fresh(name + "_f16")
            out = Value(graph, name, DType.FLOAT, o.shape)
            graph.make_node("Cast", [o], {"to": int(DType.FLOAT)}, outputs=[out], name=name + "_to_f32")
            graph.outputs[k] = out
    graph.prune_constants()
    return len(f16)
