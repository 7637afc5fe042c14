"""mopt IR -> ONNX.

The result passes onnx.checker. Fused ops of the com.mopt domain are written back as the standard
ops they stand for (FusedConv -> Conv [+ Add] [+ activation], ...), so any ONNX runtime can run
an optimized graph too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mopt.errors import UnsupportedOpError
from mopt.ir.graph import Attr, Graph, Node, Value

# Highest IR version we write: what ONNX Runtime releases of the last years read.
MAX_IR_VERSION = 10


def export_onnx(graph: Graph, *, producer: str = "mopt", ir_version: int | None = None) -> onnx.ModelProto:
    """Builds a ModelProto equivalent to `graph`."""
    gp = _export_graph(graph)
    opsets = [helper.make_opsetid(d, v) for d, v in sorted(graph.opset.items()) if d != "com.mopt"]
    if not any(o.domain == "" for o in opsets):
        opsets.append(helper.make_opsetid("", 18))
    model = helper.make_model(gp, opset_imports=opsets, producer_name=producer)
    default = max(3, min(onnx.IR_VERSION, MAX_IR_VERSION))
    if ir_version is None:
        ir_version = default
        original = graph.metadata.get("mopt.ir_version")
        if original and original.isdigit():
            ir_version = max(int(original), 7) if int(original) < 7 else min(int(original), default)
    model.ir_version = ir_version
    for k, v in graph.metadata.items():
        if not k.startswith("mopt."):
            model.metadata_props.add(key=k, value=v)
    return model


def _value_info(v: Value) -> onnx.ValueInfoProto:
    if v.dtype is None:
        return helper.make_value_info(v.name, onnx.TypeProto())
    shape = None if v.shape is None else [d if d is not None else None for d in v.shape]
    return helper.make_tensor_value_info(v.name, int(v.dtype), shape)


def _attr_proto(name: str, a: Attr) -> onnx.AttributeProto:
    k, val = a.kind, a.value
    if k == "tensor":
        return helper.make_attribute(name, numpy_helper.from_array(np.asarray(val)))
    if k == "tensors":
        return helper.make_attribute(name, [numpy_helper.from_array(np.asarray(t)) for t in val])
    if k == "graph":
        return helper.make_attribute(name, _export_graph(val))
    if k == "graphs":
        return helper.make_attribute(name, [_export_graph(g) for g in val])
    if k == "proto":
        p = onnx.AttributeProto()
        p.CopyFrom(val)
        p.name = name
        return p
    if k == "floats":
        return helper.make_attribute(name, [float(x) for x in val], attr_type=onnx.AttributeProto.FLOATS)
    if k == "ints":
        return helper.make_attribute(name, [int(x) for x in val], attr_type=onnx.AttributeProto.INTS)
    if k == "strings":
        return helper.make_attribute(name, list(val), attr_type=onnx.AttributeProto.STRINGS)
    if k == "float":
        return helper.make_attribute(name, float(val), attr_type=onnx.AttributeProto.FLOAT)
    if k == "int":
        return helper.make_attribute(name, int(val), attr_type=onnx.AttributeProto.INT)
    return helper.make_attribute(name, val)


def _export_graph(graph: Graph) -> onnx.GraphProto:
    nodes: list[onnx.NodeProto] = []
    for n in graph.nodes:
        nodes.extend(_export_node(n))
    inits = [numpy_helper.from_array(np.asarray(v.const), v.name) for v in graph.constants.values()]
    for name, arr in graph.input_defaults.items():
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
    value_infos = []
    seen = {v.name for v in graph.inputs} | {v.name for v in graph.outputs} | set(graph.constants)
    for n in graph.nodes:
        for v in n.outputs:
            if v.name not in seen and v.dtype is not None and v.uses:
                value_infos.append(_value_info(v))
                seen.add(v.name)
    return helper.make_graph(
        nodes,
        graph.name,
        [_value_info(v) for v in graph.inputs],
        [_value_info(v) for v in graph.outputs],
        initializer=inits,
        value_info=value_infos,
        doc_string=graph.doc or None,
    )


def _names(values: list[Value | None]) -> list[str]:
    return ["" if v is None else v.name for v in values]


def _export_node(n: Node) -> list[onnx.NodeProto]:
    if n.domain == "com.mopt":
        return _expand_fused(n)
    proto = helper.make_node(n.op_type, _names(n.inputs), [v.name for v in n.outputs], name=n.name, domain=n.domain or None)
    proto.attribute.extend(_attr_proto(k, a) for k, a in n.attrs.items() if k not in _KERNEL_HINT_ATTRS)
    if n.doc:
        proto.doc_string = n.doc
    return [proto]


_FUSED_BASE = {"FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul", "FusedBatchNormalization": "BatchNormalization"}
# how a kernel runs a node, not what it computes: never exported
_KERNEL_HINT_ATTRS = {"winograd"}
_FUSED_ONLY_ATTRS = {"activation", "activation_alpha", "activation_beta", "maxpool_2x2", "shuffle_groups", *_KERNEL_HINT_ATTRS}


def _gelu_nodes(x: str, y: str, name: str, *, tanh: bool) -> list[onnx.NodeProto]:
    """GELU from opset-1 ops, for graphs below opset 20 (which has Gelu)."""

    def const(tag: str, value: float) -> tuple[str, onnx.NodeProto]:
        out = f"{name}_{tag}"
        return out, helper.make_node("Constant", [], [out], value=numpy_helper.from_array(np.array(value, np.float32)))

    (one, c_one), (half, c_half) = const("one", 1.0), const("half", 0.5)
    nodes = [c_one, c_half]
    t = f"{name}_t"
    if tanh:  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        (k3, c3), (k, ck) = const("k3", 0.044715), const("k", float(np.sqrt(2.0 / np.pi)))
        nodes += [
            c3,
            ck,
            helper.make_node("Mul", [x, x], [f"{name}_x2"]),
            helper.make_node("Mul", [f"{name}_x2", x], [f"{name}_x3"]),
            helper.make_node("Mul", [f"{name}_x3", k3], [f"{name}_a"]),
            helper.make_node("Add", [x, f"{name}_a"], [f"{name}_b"]),
            helper.make_node("Mul", [f"{name}_b", k], [f"{name}_c"]),
            helper.make_node("Tanh", [f"{name}_c"], [t]),
        ]
    else:  # 0.5 x (1 + erf(x / sqrt 2))
        s2, c_s2 = const("sqrt2", float(np.sqrt(2.0)))
        nodes += [c_s2, helper.make_node("Div", [x, s2], [f"{name}_d"]), helper.make_node("Erf", [f"{name}_d"], [t])]
    nodes += [
        helper.make_node("Add", [t, one], [f"{name}_u"]),
        helper.make_node("Mul", [x, f"{name}_u"], [f"{name}_v"]),
        helper.make_node("Mul", [f"{name}_v", half], [y], name=name),
    ]
    return nodes


def activation_nodes(act: str, alpha: float, beta: float, x: str, y: str, name: str, opset: int = 20) -> list[onnx.NodeProto]:
    """Standard ONNX nodes computing a fused activation (Gelu spelled out below opset 20)."""
    if act in ("Gelu", "GeluTanh") and opset < 20:
        return _gelu_nodes(x, y, name, tanh=act == "GeluTanh")
    if act == "Silu":
        sig = helper.make_node("Sigmoid", [x], [f"{name}_sig"], name=f"{name}_sig")
        return [sig, helper.make_node("Mul", [x, f"{name}_sig"], [y], name=name)]
    if act == "Clip":
        lo = helper.make_node("Constant", [], [f"{name}_lo"], value=numpy_helper.from_array(np.array(alpha, np.float32)))
        hi = helper.make_node("Constant", [], [f"{name}_hi"], value=numpy_helper.from_array(np.array(beta, np.float32)))
        return [lo, hi, helper.make_node("Clip", [x, f"{name}_lo", f"{name}_hi"], [y], name=name)]
    attrs: dict[str, Any] = {}
    if act in ("LeakyRelu", "Elu"):
        attrs["alpha"] = alpha
    elif act == "HardSigmoid":
        attrs.update(alpha=alpha, beta=beta)
    elif act == "Selu":
        attrs.update(alpha=alpha, gamma=beta)
    elif act == "GeluTanh":
        return [helper.make_node("Gelu", [x], [y], name=name, approximate="tanh")]
    return [helper.make_node(act, [x], [y], name=name, **attrs)]


def _attention_nodes(n: Node) -> list[onnx.NodeProto]:
    """com.mopt.Attention as Transpose / MatMul / Mul / Add / Softmax [/ IsNaN / Where] / MatMul / Transpose."""
    ins = _names(n.inputs)
    name, out = n.name, n.outputs[0].name
    rank = 4 if n.attr("packed_qkv") is not None else len(n.attr("q_perm") or n.attr("k_perm") or n.attr("v_perm") or n.attr("out_perm") or n.outputs[0].shape or ())
    if rank not in (3, 4):
        raise UnsupportedOpError(f"node '{name}' (com.mopt.Attention): the rank of its operands is not known")
    ident = list(range(rank))
    nodes: list[onnx.NodeProto] = []

    def view(x: str, perm: list[int], tag: str) -> str:
        if perm == ident:
            return x
        nodes.append(helper.make_node("Transpose", [x], [f"{name}_{tag}"], perm=perm))
        return f"{name}_{tag}"

    packed = n.attr("packed_qkv")
    if packed is not None:  # one [B, S, Nq+Nk+Nv] projection: split, then heads as [B, H, S, D]
        heads = int(n.attr("num_heads"))
        widths = [int(w) for w in packed]
        nodes.append(helper.make_node("Constant", [], [f"{name}_widths"], value=numpy_helper.from_array(np.array(widths, np.int64))))
        parts = [f"{name}_{t}_flat" for t in "qkv"]
        nodes.append(helper.make_node("Split", [ins[0], f"{name}_widths"], parts, axis=-1))
        split_ins = []
        for t, part, w in zip("qkv", parts, widths, strict=True):
            shape = f"{name}_{t}_heads"
            nodes.append(helper.make_node("Constant", [], [shape], value=numpy_helper.from_array(np.array([0, 0, heads, w // heads], np.int64))))
            nodes.append(helper.make_node("Reshape", [part, shape], [f"{name}_{t}4"]))
            split_ins.append(f"{name}_{t}4")
        ins = [*split_ins, *ins[3:]]
        perms = [[0, 2, 1, 3]] * 3
    else:
        perms = [list(n.attr(a) or ident) for a in ("q_perm", "k_perm", "v_perm")]
    q = view(ins[0], perms[0], "q")
    k = view(ins[1], perms[1], "k")
    v = view(ins[2], perms[2], "v")
    kt = view(k, [*range(rank - 2), rank - 1, rank - 2], "kt")
    scale = n.attr("scale")
    scale_name = f"{name}_scale"
    if scale is None:  # 1/sqrt(D), D read at run time
        nodes += [
            helper.make_node("Shape", [q], [f"{name}_qshape"], start=-1),
            helper.make_node("Cast", [f"{name}_qshape"], [f"{name}_d"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Sqrt", [f"{name}_d"], [f"{name}_sqrt_d"]),
            helper.make_node("Reciprocal", [f"{name}_sqrt_d"], [scale_name]),
        ]
    else:
        nodes.append(helper.make_node("Constant", [], [scale_name], value=numpy_helper.from_array(np.array(scale, np.float32))))
    nodes += [
        helper.make_node("MatMul", [q, kt], [f"{name}_qk"]),
        helper.make_node("Mul", [f"{name}_qk", scale_name], [f"{name}_scores"]),
    ]
    scores = f"{name}_scores"
    if len(ins) > 3 and ins[3]:
        nodes.append(helper.make_node("Add", [scores, ins[3]], [f"{name}_masked"]))
        scores = f"{name}_masked"
    nodes.append(helper.make_node("Softmax", [scores], [f"{name}_p"], axis=-1))
    probs = f"{name}_p"
    if n.attr("nan_to_zero", 0):
        nodes += [
            helper.make_node("IsNaN", [probs], [f"{name}_nan"]),
            helper.make_node("Constant", [], [f"{name}_zero"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
            helper.make_node("Where", [f"{name}_nan", f"{name}_zero", probs], [f"{name}_pg"]),
        ]
        probs = f"{name}_pg"
    out_perm = list(n.attr("out_perm") or ident)
    ctx = out if out_perm == ident else f"{name}_ctx"
    nodes.append(helper.make_node("MatMul", [probs, v], [ctx], name=name))
    if out_perm != ident:
        nodes.append(helper.make_node("Transpose", [ctx], [out], perm=out_perm))
    return nodes


def _mlp_nodes(n: Node) -> list[onnx.NodeProto]:
    """com.mopt.FusedMLP as MatMul / Add / activation / MatMul / Add / Add."""
    x, w1, b1, w2, b2, res = (_names(n.inputs) + [""] * 6)[:6]
    name, out = n.name, n.outputs[0].name
    nodes = [helper.make_node("MatMul", [x, w1], [f"{name}_h"], name=f"{name}_up")]
    h = f"{name}_h"
    if b1:
        nodes.append(helper.make_node("Add", [h, b1], [f"{name}_hb"], name=f"{name}_up_bias"))
        h = f"{name}_hb"
    act = n.attr("activation")
    if act:
        opset = n.graph.opset.get("", 20) if n.graph is not None else 20
        alpha, beta = float(n.attr("activation_alpha", 0.0)), float(n.attr("activation_beta", 0.0))
        nodes.extend(activation_nodes(act, alpha, beta, h, f"{name}_ha", f"{name}_act", opset=opset))
        h = f"{name}_ha"
    addends = [a for a in (b2, res) if a]
    cur = f"{name}_y" if addends else out
    nodes.append(helper.make_node("MatMul", [h, w2], [cur], name=f"{name}_down"))
    for i, a in enumerate(addends):
        nxt = out if i == len(addends) - 1 else f"{name}_y{i}"
        nodes.append(helper.make_node("Add", [cur, a], [nxt], name=f"{name}_down_add{i}"))
        cur = nxt
    return nodes


def _rms_nodes(n: Node) -> list[onnx.NodeProto]:
    """com.mopt.RMSNormalization: ONNX's own from opset 23, spelled out below it."""
    x, scale = _names(n.inputs)[:2]
    y = n.outputs[0].name
    axis = int(n.attr("axis", -1))
    eps = float(n.attr("epsilon", 1e-5))
    opset = n.graph.opset.get("", 18) if n.graph is not None else 18
    if opset >= 23:
        return [helper.make_node("RMSNormalization", [x, scale], [y], name=n.name, axis=axis, epsilon=eps)]
    rank = len(n.inputs[0].shape) if n.inputs[0].shape is not None else None
    if rank is None:
        raise UnsupportedOpError(f"node '{n.name}' (com.mopt.RMSNormalization) needs its input's rank to be exported below opset 23")
    axes = list(range(axis % rank, rank))
    t = f"{n.name}_rms"
    consts = [
        helper.make_node("Constant", [], [f"{t}_eps"], value=numpy_helper.from_array(np.array(eps, np.float32))),
        helper.make_node("Constant", [], [f"{t}_axes"], value=numpy_helper.from_array(np.array(axes, np.int64))),
    ]
    mean = (
        helper.make_node("ReduceMean", [f"{t}_sq", f"{t}_axes"], [f"{t}_ms"], keepdims=1)
        if opset >= 18
        else helper.make_node("ReduceMean", [f"{t}_sq"], [f"{t}_ms"], axes=axes, keepdims=1)
    )
    return [
        *consts[: 2 if opset >= 18 else 1],
        helper.make_node("Mul", [x, x], [f"{t}_sq"]),
        mean,
        helper.make_node("Add", [f"{t}_ms", f"{t}_eps"], [f"{t}_mse"]),
        helper.make_node("Sqrt", [f"{t}_mse"], [f"{t}_rms"]),
        helper.make_node("Div", [x, f"{t}_rms"], [f"{t}_n"]),
        helper.make_node("Mul", [f"{t}_n", scale], [y], name=n.name),
    ]


def _expand_fused(n: Node) -> list[onnx.NodeProto]:
    if n.op_type == "Attention":
        return _attention_nodes(n)
    if n.op_type == "RMSNormalization":
        return _rms_nodes(n)
    if n.op_type == "FusedMLP":
        return _mlp_nodes(n)
    base = _FUSED_BASE.get(n.op_type)
    if base is None:
        raise UnsupportedOpError(f"node '{n.name}' ({n.qualified_op}) has no standard ONNX form to export")
    ins = _names(n.inputs)
    final = n.outputs[0].name
    pooled = bool(n.attr("maxpool_2x2", 0))  # FusedConv: a 2x2 / stride-2 MaxPool after everything else
    shuffle = int(n.attr("shuffle_groups", 0))  # FusedConv: a channel shuffle of its groups, after everything else
    out = f"{final}__prepool" if pooled else f"{final}__preshuffle" if shuffle else final
    act = n.attr("activation")
    out_nodes: list[onnx.NodeProto] = []
    base_inputs = ins[:5] if base == "BatchNormalization" else ins[:3] if base != "MatMul" else ins[:2]
    extra = ins[3] if len(ins) > 3 and base != "BatchNormalization" else ""  # the residual of FusedConv / FusedGemm / FusedMatMul
    bias = ins[2] if base == "MatMul" and len(ins) > 2 else ""
    stages = [s for s in (bias, extra) if s] + ([act] if act else [])
    cur = out if not stages else f"{out}__{base.lower()}"
    attrs = {k: a for k, a in n.attrs.items() if k not in _FUSED_ONLY_ATTRS}
    p = helper.make_node(base, [s for s in base_inputs], [cur], name=f"{n.name}")
    while p.input and p.input[-1] == "":
        p.input.pop()
    p.attribute.extend(_attr_proto(k, a) for k, a in attrs.items())
    out_nodes.append(p)
    for i, addend in enumerate(s for s in (bias, extra) if s):
        last = i == len([s for s in (bias, extra) if s]) - 1 and not act
        nxt = out if last else f"{out}__add{i}"
        out_nodes.append(helper.make_node("Add", [cur, addend], [nxt], name=f"{n.name}_add{i}"))
        cur = nxt
    if act:
        out_nodes.extend(
            activation_nodes(
                act,
                float(n.attr("activation_alpha", 0.0)),
                float(n.attr("activation_beta", 0.0)),
                cur,
                out,
                f"{n.name}_act",
                opset=n.graph.opset.get("", 20) if n.graph is not None else 20,
            )
        )
    if pooled:
        out_nodes.append(helper.make_node("MaxPool", [out], [final], name=f"{n.name}_pool", kernel_shape=[2, 2], strides=[2, 2]))
    if shuffle:  # [N, G, M/G, H*W] -> swap the group axes -> back to the convolution's shape
        per_group = int(n.inputs[1].shape[0]) // shuffle
        dims = np.array([0, shuffle, per_group, -1], np.int64)
        split = helper.make_node("Constant", [], [f"{n.name}_shuffle_split"], value=numpy_helper.from_array(dims))
        shape = helper.make_node("Shape", [out], [f"{n.name}_shuffle_shape"])
        out_nodes += [
            split,
            shape,
            helper.make_node("Reshape", [out, f"{n.name}_shuffle_split"], [f"{n.name}_shuffle_groups"]),
            helper.make_node("Transpose", [f"{n.name}_shuffle_groups"], [f"{n.name}_shuffle_swapped"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{n.name}_shuffle_swapped", f"{n.name}_shuffle_shape"], [final], name=f"{n.name}_shuffle"),
        ]
    return out_nodes
