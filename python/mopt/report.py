"""What a model contains and what it costs: op histogram, parameters, FLOPs, kernels chosen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mopt.ir.graph import Graph, Node


def _static(shape: Any) -> tuple[int, ...] | None:
    if shape is None or any(not isinstance(d, int) for d in shape):
        return None
    return tuple(shape)


def _conv_out_shape(node: Node, ws: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """A convolution's own output shape from its input's (None when not static)."""
    x = _static(node.inputs[0].shape) if node.inputs[0] is not None else None
    if x is None or ws is None:
        return None
    sp = len(x) - 2
    strides = list(node.attr("strides", [1] * sp))
    dil = list(node.attr("dilations", [1] * sp))
    pads = list(node.attr("pads", [0] * (2 * sp)))
    auto_pad = node.attr("auto_pad", "NOTSET")
    dims = []
    for i in range(sp):
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            dims.append(-(-x[2 + i] // strides[i]))
            continue
        p = 0 if auto_pad == "VALID" else pads[i] + pads[sp + i]
        span = x[2 + i] + p - ((ws[2 + i] - 1) * dil[i] + 1)
        dims.append(span // strides[i] + 1 if span >= 0 else 0)
    return (x[0], ws[0], *dims)


def node_flops(node: Node) -> int | None:
    """Multiply-adds x 2 of a Conv/Gemm/MatMul node (None when its shapes are not static)."""
    op = node.op_type
    out = _static(node.outputs[0].shape) if node.outputs else None
    if op in ("Conv", "FusedConv"):
        w = node.inputs[1]
        ws = _static(w.shape) if w is not None else None
        if out is not None and node.attr("maxpool_2x2", 0):  # the pool's output: the conv's is larger
            out = _conv_out_shape(node, ws)
        if out is None or ws is None:
            return None
        return 2 * int(np.prod(out)) * int(np.prod(ws[1:]))
    if op in ("Gemm", "FusedGemm"):
        a = _static(node.inputs[0].shape) if node.inputs[0] is not None else None
        if out is None or a is None:
            return None
        k = a[0] if node.attr("transA", 0) else a[1]
        return 2 * int(np.prod(out)) * int(k)
    if op in ("MatMul", "FusedMatMul"):
        a = _static(node.inputs[0].shape) if node.inputs[0] is not None else None
        if out is None or a is None:
            return None
        return 2 * int(np.prod(out)) * int(a[-1])
    if op == "Attention" and node.domain == "com.mopt":  # Q K^T and P V: 2 * B * H * Sq * Skv * (D + Dv)
        return _attention_flops(node, out)
    if op == "FusedMLP" and node.domain == "com.mopt":  # x W1 and h W2: 2 * rows * N1 * (K1 + N2)
        w1 = node.inputs[1].const if node.inputs[1] is not None else None
        if out is None or w1 is None or w1.ndim != 2:
            return None
        rows = int(np.prod(out[:-1]))
        return 2 * rows * int(w1.shape[1]) * (int(w1.shape[0]) + int(out[-1]))
    return None


def _attention_flops(node: Node, out: tuple[int, ...] | None) -> int | None:
    packed = node.attr("packed_qkv")
    if packed is not None:
        y = _static(node.inputs[0].shape) if node.inputs[0] is not None else None
        if y is None or len(y) != 3:
            return None
        b, s, _ = y
        h = int(node.attr("num_heads"))
        dq, dv = int(packed[0]) // h, int(packed[2]) // h
        return 2 * b * h * s * s * (dq + dv)
    q, k = (node.inputs[i] for i in (0, 1))
    qs = _static(q.shape) if q is not None else None
    ks = _static(k.shape) if k is not None else None
    if qs is None or ks is None or out is None:
        return None
    qp = list(node.attr("q_perm") or range(len(qs)))
    kp = list(node.attr("k_perm") or range(len(ks)))
    ql = [qs[i] for i in qp]  # logical [batch..., Sq, D]
    kl = [ks[i] for i in kp]
    dv = int(np.prod(out)) // int(np.prod(ql[:-1]))
    return 2 * int(np.prod(ql[:-1])) * int(kl[-2]) * (int(ql[-1]) + dv)


@dataclass
class ModelReport:
    ops: dict[str, int]
    nodes: int
    parameters: int
    parameter_bytes: int
    flops: int
    flops_complete: bool
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def graph_report(graph: Graph) -> ModelReport:
    params = sum(int(v.const.size) for v in graph.constants.values() if v.const is not None)
    nbytes = sum(int(v.const.nbytes) for v in graph.constants.values() if v.const is not None)
    flops, complete = 0, True
    for n in graph.walk():
        f = node_flops(n)
        if f is None and n.op_type in ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "Attention", "FusedMLP"):
            complete = False
        flops += f or 0
    fmt = lambda v: f"{v.name}: {v.dtype.name.lower() if v.dtype else '?'} {list(v.shape) if v.shape is not None else '?'}"  # noqa: E731
    return ModelReport(
        graph.op_histogram(),
        sum(1 for _ in graph.walk()),
        params,
        nbytes,
        flops,
        complete,
        [fmt(v) for v in graph.inputs],
        [fmt(v) for v in graph.outputs],
    )
