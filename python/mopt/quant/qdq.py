"""QDQ models (ONNX Runtime's quantizer, other tools) onto the native int8 kernels:

    Conv|Gemm|MatMul(DQ(x_u8), DQ(W_s8 per channel), DQ(b_s32)?) [-> Relu|Clip]
                                               ==>  com.mopt.QConv|QMatMul(x_u8, W_s8, b) -> float
    QuantizeLinear(QConv|QMatMul -> float)     ==>  the same op writing uint8 (requantized in its epilogue)
    QuantizeLinear(MaxPool(DQ(x_u8)))          ==>  com.mopt.QMaxPool(x_u8)   (same scale and zero point)

Runs before constant folding (which would turn DQ(W) back into float weights). What does not match
(int8 activations, non-zero weight zero points, grouped convs of fewer than 4 channels per group)
keeps its QDQ form and runs as float ops on the DequantizeLinear outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mopt.ir.dtypes import DType
from mopt.ir.graph import Graph, Node, Value
from mopt.passes.manager import Pass, register_pass

CONV_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad")


def _dq(v: Value | None) -> Node | None:
    p = v.producer if v is not None else None
    return p if p is not None and p.op_type == "DequantizeLinear" and p.domain == "" else None


def _const(node: Node, i: int) -> np.ndarray | None:
    v = node.inputs[i] if len(node.inputs) > i else None
    return None if v is None else v.const


def _act_qparams(node: Node) -> tuple[Value, float, int] | None:
    """A per-tensor uint8 DequantizeLinear: (quantized input, scale, zero point)."""
    s, z = _const(node, 1), _const(node, 2)
    q = node.inputs[0]
    if q is None or q.dtype != DType.UINT8 or s is None or s.size != 1 or (z is not None and z.size != 1):
        return None
    return q, float(s.reshape(-1)[0]), int(z.reshape(-1)[0]) if z is not None else 0


def _weights(node: Node, channels_axis: int) -> tuple[np.ndarray, list[float]] | None:
    """A symmetric int8 DequantizeLinear of constant weights: (int8 weights, per-channel scales)."""
    w, s, z = _const(node, 0), _const(node, 1), _const(node, 2)
    if w is None or w.dtype != np.int8 or s is None or (z is not None and np.any(z != 0)):
        return None
    axis = int(node.attr("axis", 1))
    if s.size == 1:
        return w, [float(s.reshape(-1)[0])]
    if s.ndim != 1 or (axis % w.ndim) != channels_axis or s.size != w.shape[channels_axis]:
        return None
    return w, [float(v) for v in s]


def _single_activation(y: Value) -> tuple[Node | None, dict[str, Any]]:
    """A Relu or constant-bound Clip that alone reads y."""
    if len(y.uses) != 1 or y.is_graph_output:
        return None, {}
    act = y.uses[0][0]
    if act.op_type == "Relu" and act.domain == "":
        return act, {"activation": "Relu"}
    if act.op_type == "Clip" and act.domain == "" and "min" not in act.attrs:
        lo, hi = _const(act, 1), _const(act, 2)
        given = [len(act.inputs) > i and act.inputs[i] is not None for i in (1, 2)]
        if (given[0] and lo is None) or (given[1] and hi is None):
            return None, {}
        return act, {"activation": "Clip", "activation_alpha": float(lo) if lo is not None else -3.4e38,
                     "activation_beta": float(hi) if hi is not None else 3.4e38}
    return None, {}


@register_pass(min_level=1)
def _accumulator_fits(op: str, node: Node, w: np.ndarray, bias: np.ndarray | None, sx: float, zx: int,
                      scales: list[float]) -> bool:
    """Whether the int8 kernels take this layer (accum.fits): a tool may write a QDQ layer whose
    input scale is tiny, and that layer stays float."""
    from mopt.quant import accum

    depthwise = op == "QConv" and w.shape[1] == 1 and int(node.attr("group", 1)) == w.shape[0] > 1
    if op == "QConv":
        wsum = np.zeros(w.shape[0]) if depthwise else w.reshape(w.shape[0], -1).astype(np.float64).sum(axis=1)
    else:
        wsum = w.astype(np.float64).sum(axis=0)
    return accum.fits(bias, np.float64(sx) * np.asarray(scales, np.float64), zx, wsum)


class LowerQDQToInt8(Pass):
    """DequantizeLinear/QuantizeLinear around Conv, Gemm, MatMul and MaxPool ==> int8 kernels."""

    def run(self, graph: Graph) -> bool:
        if not any(n.op_type == "DequantizeLinear" for n in graph.nodes):
            return False
        changed = False
        for node in list(graph.nodes):
            if node.domain == "" and node.op_type in ("Conv", "Gemm", "MatMul") and node in graph.nodes:
                changed |= self._compute(graph, node)
        for node in list(graph.nodes):
            if node.op_type == "QuantizeLinear" and node.domain == "":
                changed |= self._fold_quantize(graph, node)
        graph.remove_nodes([n for n in graph.nodes if n.op_type == "DequantizeLinear" and not any(
            v.uses or v.is_graph_output for v in n.outputs)])
        if changed:
            from mopt.quant.rewrite import fuse_qconv_readers  # (mopt.quant imports the pass pipelines)

            fuse_qconv_readers(graph)
        graph.prune_constants()
        return changed

    def _compute(self, graph: Graph, node: Node) -> bool:
        dx, dw = _dq(node.inputs[0]), _dq(node.inputs[1] if len(node.inputs) > 1 else None)
        if dx is None or dw is None:
            return False
        xq = _act_qparams(dx)
        if xq is None:
            return False
        x, sx, zx = xq
        attrs: dict[str, Any] = {}
        if node.op_type == "Conv":
            wq = _weights(dw, 0)
            w = _const(dw, 0)
            group = int(node.attr("group", 1))
            if wq is None or w is None or w.ndim != 4 or not (group == 1 or (w.shape[1] == 1 and group == w.shape[0])
                                                              or w.shape[1] >= 4):
                return False
            attrs = {k: node.attrs[k] for k in CONV_ATTRS if k in node.attrs}
            op, wmat, nch = "QConv", wq[0], w.shape[0]
        else:
            trans = node.op_type == "Gemm" and int(node.attr("transB", 0))
            if node.op_type == "Gemm" and (int(node.attr("transA", 0)) or float(node.attr("alpha", 1.0)) != 1.0):
                return False
            wq = _weights(dw, 0 if trans else 1)
            if wq is None or wq[0].ndim != 2:
                return False
            op, wmat, nch = "QMatMul", np.ascontiguousarray(wq[0].T if trans else wq[0]), wq[0].shape[0 if trans else 1]
        bias = None
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            if node.op_type == "Gemm" and float(node.attr("beta", 1.0)) != 1.0:
                return False
            db = _dq(node.inputs[2])
            if db is not None:
                b, sb, zb = _const(db, 0), _const(db, 1), _const(db, 2)
                if b is None or sb is None or (zb is not None and np.any(zb != 0)):
                    return False
                bias = (b.astype(np.float64) * sb.astype(np.float64)).astype(np.float32).reshape(-1)
            else:
                c = _const(node, 2)
                if c is None:
                    return False
                bias = c.astype(np.float32).reshape(-1)
            if bias.size != nch:
                return False
        scales = wq[1] if len(wq[1]) == nch else wq[1] * nch
        if not _accumulator_fits(op, node, wmat, bias, sx, zx, scales):
            return False  # (stays the float DQ -> op -> Q it was)
        y = node.outputs[0]
        act, act_attrs = _single_activation(y)
        out = act.outputs[0] if act is not None else y
        attrs.update(x_scale=sx, x_zero_point=zx, w_scale=scales, **act_attrs)
        ins: list[Value | None] = [x, graph.add_const(wmat, node.name + "_w_int8")]
        if bias is not None:
            ins.append(graph.add_const(bias, node.name + "_bias"))
        new = graph.new_value(out.name + "_deq", DType.FLOAT, out.shape)
        graph.make_node(op, ins, attrs, outputs=[new], domain="com.mopt", name=node.name, before=node)
        graph.replace_all_uses(out, new)
        graph.remove_nodes([n for n in (act, node) if n is not None])
        return True

    def _fold_quantize(self, graph: Graph, q: Node) -> bool:
        src = q.inputs[0]
        s, z = _const(q, 1), _const(q, 2)
        if src is None or src.producer is None or s is None or s.size != 1 or z is None or z.size != 1 or z.dtype != np.uint8:
            return False
        if len(src.uses) != 1 or src.is_graph_output or q.outputs[0].dtype != DType.UINT8:
            return False
        p = src.producer
        sy, zy = float(s.reshape(-1)[0]), int(z.reshape(-1)[0])
        if p.domain == "com.mopt" and p.op_type in ("QConv", "QMatMul") and p.attr("dynamic", 0) == 0:
            if p.op_type == "QConv" and len(p.inputs) > 3 and p.inputs[3] is not None:
                return False
            out = graph.new_value(q.outputs[0].name + "_i8", DType.UINT8, q.outputs[0].shape)
            attrs = {**dict(p.attrs), "y_scale": sy, "y_zero_point": zy}
            graph.make_node(p.op_type, list(p.inputs), attrs, outputs=[out], domain="com.mopt", name=p.name, before=p)
            graph.replace_all_uses(q.outputs[0], out)
            graph.remove_nodes([q, p])
            return True
        if p.op_type == "MaxPool" and p.domain == "" and not any(v.uses or v.is_graph_output for v in p.outputs[1:]):
            dx = _dq(p.inputs[0])
            xq = _act_qparams(dx) if dx is not None else None
            if xq is None or abs(xq[1] - sy) > 1e-12 * max(sy, 1e-30) or xq[2] != zy or len(p.attr("kernel_shape", [])) != 2:
                return False
            attrs = {k: p.attrs[k] for k in ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad") if k in p.attrs}
            out = graph.new_value(q.outputs[0].name + "_i8", DType.UINT8, q.outputs[0].shape)
            graph.make_node("QMaxPool", [xq[0]], attrs, outputs=[out], domain="com.mopt", name=p.name, before=p)
            graph.replace_all_uses(q.outputs[0], out)
            graph.remove_nodes([q, p])
            return True
        return False
