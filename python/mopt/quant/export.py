"""int8 program graph ==> a standard QDQ ONNX model (what `--emit-onnx` writes), for ONNX Runtime
or any other runtime that reads QDQ:

    QConv(x_u8, W_s8, b)        ==>  DQ(x) -> Conv(DQ(W, per channel), DQ(b_s32)) [-> Add] [-> act] [-> Q]
                                     (global_mean: [-> act] -> GlobalAveragePool [-> Flatten])
                                     (max_pool_2x2: [-> act] -> MaxPool{2x2, stride 2} [-> Q])
    QMatMul(x_u8 | x_f32, W_s8) ==>  DQ(x) -> MatMul(DQ(W, per column)) [-> Add(b)] [-> act] [-> Q]
    QMaxPool(x_u8)              ==>  DQ(x) -> MaxPool -> Q (the same scale and zero point)

The bias is rounded to int32 in units of x_scale * w_scale, as the int8 kernels hold it.

For --fp16 (export_fp16), the source model with each float32 initializer that mopt stores as
float16 turned into a float16 initializer read through a Cast back to float32:

    W (float32 initializer)     ==>  W_fp16 (float16 initializer) -> Cast(to=FLOAT) -> W
"""

from __future__ import annotations

import numpy as np
import onnx

from mopt.frontend.onnx_export import export_onnx
from mopt.frontend.onnx_import import ModelSource
from mopt.ir.dtypes import DType
from mopt.ir.graph import Graph, Node, Value
from mopt.quant.rewrite import MOVE_OPS

CONV_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad")
POOL_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad")


def _qparams(v: Value) -> tuple[float, int]:
    """Scale and zero point of a uint8 value, from the node that wrote it."""
    p = v.producer
    if p is None:
        raise ValueError(f"uint8 value '{v.name}' has no producer to take its scale from")
    if p.op_type == "QuantizeLinear":
        s, z = p.inputs[1].const, p.inputs[2].const if len(p.inputs) > 2 and p.inputs[2] is not None else None  # type: ignore[union-attr]
        return float(np.asarray(s).reshape(-1)[0]), int(np.asarray(z).reshape(-1)[0]) if z is not None else 0
    if p.op_type in ("QConv", "QMatMul"):
        return float(p.attr("y_scale")), int(p.attr("y_zero_point", 0))
    if p.op_type == "QMaxPool" or (p.domain == "" and p.op_type in (*MOVE_OPS, "Concat")):
        return _qparams(p.inputs[0])  # type: ignore[arg-type]  (a Concat's inputs share its scale)
    raise ValueError(f"uint8 value '{v.name}' comes from {p.op_type}, whose scale is unknown")


def to_qdq(graph: Graph) -> None:
    """Rewrites the int8 ops of `graph` (in place) into standard QDQ ONNX ops."""
    params = {id(v): _qparams(v) for n in graph.nodes for v in n.inputs
              if v is not None and v.dtype == DType.UINT8 and n.domain == "com.mopt"}
    for node in list(graph.nodes):
        if node.domain != "com.mopt" or node.op_type not in ("QConv", "QMatMul", "QMaxPool"):
            continue
        _rewrite(graph, node, params)  # the new nodes go before it and take over its output
        graph.remove_node(node)
    graph.prune_constants()


def _rewrite(graph: Graph, node: Node, params: dict[int, tuple[float, int]]) -> None:
    def const(a: np.ndarray, hint: str) -> Value:
        return graph.add_const(np.asarray(a), f"{node.name}_{hint}")

    def op(kind: str, ins: list[Value | None], attrs: dict | None = None, out: Value | None = None) -> Value:
        n = graph.make_node(kind, ins, attrs or {}, outputs=None if out is None else [out], name=f"{node.name}_{kind}", before=node)
        if out is None:
            n.outputs[0].dtype = DType.FLOAT
        return n.outputs[0]

    def dq_act(x: Value) -> Value:
        s, z = params[id(x)] if id(x) in params else _qparams(x)
        return op("DequantizeLinear", [x, const(np.float32(s), "xs"), const(np.uint8(z), "xz")])

    y = node.outputs[0]
    out_u8 = y.dtype == DType.UINT8
    ins = list(node.inputs)
    x = ins[0]
    assert x is not None
    if node.op_type == "QMaxPool":
        s, z = params[id(x)] if id(x) in params else _qparams(x)
        pooled = op("MaxPool", [dq_act(x)], {k: node.attrs[k] for k in POOL_ATTRS if k in node.attrs})
        op("QuantizeLinear", [pooled, const(np.float32(s), "ys"), const(np.uint8(z), "yz")], out=y)
        return
    w = ins[1].const  # type: ignore[union-attr]
    conv = node.op_type == "QConv"
    channels = w.shape[0] if conv else w.shape[1]
    sw = np.asarray(node.attr("w_scale"), np.float32)
    sw = np.full(channels, sw[0], np.float32) if sw.size == 1 else sw
    xf = x if x.dtype == DType.FLOAT else dq_act(x)
    sx = float(node.attr("x_scale", 0.0))
    wd = op("DequantizeLinear", [ins[1], const(sw, "ws"), const(np.zeros(channels, np.int8), "wz")], {"axis": 0 if conv else 1})
    b = ins[2].const if len(ins) > 2 and ins[2] is not None else None
    if conv:
        bd = None
        if b is not None:
            unit = (np.float64(sx) * sw.astype(np.float64)).astype(np.float32)
            bq = np.rint(b.astype(np.float64) / unit).astype(np.int32)
            bd = op("DequantizeLinear", [const(bq, "b"), const(unit, "bs"), const(np.zeros(channels, np.int32), "bz")], {"axis": 0})
        yf = op("Conv", [xf, wd, bd], {k: node.attrs[k] for k in CONV_ATTRS if k in node.attrs})
        if len(ins) > 3 and ins[3] is not None:
            yf = op("Add", [yf, ins[3]])
    else:
        yf = op("MatMul", [xf, wd])
        if b is not None:
            yf = op("Add", [yf, const(b.astype(np.float32), "b")])
    act = node.attr("activation")
    if act == "Relu":
        yf = op("Relu", [yf])
    elif act == "Clip":
        yf = op("Clip", [yf, const(np.float32(node.attr("activation_alpha")), "lo"), const(np.float32(node.attr("activation_beta")), "hi")])
    if conv and node.attr("max_pool_2x2", 0):
        yf = op("MaxPool", [yf], {"kernel_shape": [2, 2], "strides": [2, 2]})
    if conv and node.attr("global_mean", 0):
        yf = op("GlobalAveragePool", [yf])
        if not node.attr("keepdims", 1):
            yf = op("Flatten", [yf], {"axis": 1})
    if out_u8:
        ys, yz = const(np.float32(node.attr("y_scale")), "ys"), const(np.uint8(node.attr("y_zero_point", 0)), "yz")
        op("QuantizeLinear", [yf, ys, yz], out=y)
    else:
        op("Identity", [yf], out=y)


def export_qdq(graph: Graph) -> onnx.ModelProto:
    """The QDQ ONNX model of an int8 graph (the graph is rewritten in place)."""
    to_qdq(graph)
    return export_onnx(graph, producer="mopt quantize")


def export_fp16(model: ModelSource) -> onnx.ModelProto:
    """The source ONNX model with its weights stored as float16 (the same ones `lower(fp16=True)`
    stores so), inputs, outputs and arithmetic left float32: a standard model any runtime reads."""
    from onnx import numpy_helper

    from mopt.lower.program import as_f16

    if isinstance(model, onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(model)
    elif isinstance(model, bytes | bytearray):
        m = onnx.load_from_string(bytes(model))
    else:
        m = onnx.load(str(model))
    g = m.graph
    overridable = {i.name for i in g.input}  # an initializer that is also an input may be fed: keep it
    casts = []
    for init in g.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name in overridable:
            continue
        half = as_f16(numpy_helper.to_array(init))
        if half is None:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, f"{name}_fp16"))
        casts.append(onnx.helper.make_node("Cast", [f"{name}_fp16"], [name], name=f"{name}_cast", to=onnx.TensorProto.FLOAT))
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    m.producer_name = "mopt quantize --fp16"
    return m
