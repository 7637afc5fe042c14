"""Small ONNX models for the pruning tests, built with onnx.helper (random weights, seeded)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


class Builder:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def const(self, arr: np.ndarray, hint: str = "c") -> str:
        self.n += 1
        name = f"{hint}{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def w(self, *shape: int, scale: float = 0.5) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), "w")

    def op(self, op: str, *inputs: str, **attrs: object) -> str:
        self.n += 1
        out = f"{op.lower()}{self.n}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=f"n_{out}", **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, bias: bool = True) -> str:
        ins = [x, self.w(cout, cin // group, k, k)]
        if bias:
            ins.append(self.const((self.rng.standard_normal(cout) * 0.1).astype(np.float32), "b"))
        return self.op("Conv", *ins, pads=[k // 2] * 4, group=group, kernel_shape=[k, k])

    def model(self, inputs: list[tuple[str, list[object]]], outputs: list[str]) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            self.inits,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 9
        m = onnx.shape_inference.infer_shapes(m)  # gives the outputs their shapes
        onnx.checker.check_model(m, full_check=True)
        return m


def cnn() -> onnx.ModelProto:
    """Conv-BN-Relu, Conv-Clip, depthwise, 1x1, GlobalAveragePool, Flatten, Gemm."""
    b = Builder(1)
    x = b.conv("x", 3, 8)
    c = 8
    x = b.op(
        "BatchNormalization",
        x,
        b.const(b.rng.uniform(0.5, 1.5, c).astype(np.float32)),
        b.const(b.rng.standard_normal(c).astype(np.float32) * 0.1),
        b.const(b.rng.standard_normal(c).astype(np.float32) * 0.1),
        b.const(b.rng.uniform(0.5, 1.5, c).astype(np.float32)),
    )
    x = b.op("Relu", x)
    x = b.op("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2])
    x = b.conv(x, 8, 12)
    x = b.op("Clip", x, b.const(np.float32(0)), b.const(np.float32(6)))
    x = b.conv(x, 12, 12, group=12)
    x = b.op("Relu", x)
    x = b.conv(x, 12, 16, k=1)
    x = b.op("Relu", x)
    x = b.op("GlobalAveragePool", x)
    x = b.op("Flatten", x, axis=1)
    y = b.op("Gemm", x, b.w(5, 16), b.const(np.zeros(5, np.float32)), transB=1)
    return b.model([("x", ["batch", 3, 12, 12])], [y])


def residual() -> onnx.ModelProto:
    """Two residual additions joining three convs, a per-channel Mul, then a head conv."""
    b = Builder(2)
    r = b.op("Relu", b.conv("x", 4, 8))
    h = b.op("Relu", b.conv(r, 8, 8))
    h = b.conv(h, 8, 8)
    s = b.op("Add", h, r)
    s = b.op("Mul", s, b.const(b.rng.uniform(0.5, 2, (1, 8, 1, 1)).astype(np.float32)))
    s = b.op("Relu", s)
    h2 = b.conv(s, 8, 8, k=1)
    s2 = b.op("Relu", b.op("Add", s, h2))
    y = b.conv(s2, 8, 6, k=1)
    return b.model([("x", ["batch", 4, 7, 9])], [y])


def concat() -> onnx.ModelProto:
    """Two branches and the graph input concatenated on channels, then a 1x1 conv."""
    b = Builder(3)
    p = b.op("Relu", b.conv("x", 4, 5))
    q = b.op("Relu", b.conv("x", 4, 7, k=1))
    c = b.op("Concat", p, "x", q, axis=1)
    y = b.conv(c, 16, 3, k=1)
    return b.model([("x", ["batch", 4, 6, 6])], [y])


def mlp() -> onnx.ModelProto:
    """Transformer-style MLP: MatMul + bias, erf GELU, MatMul on [batch, seq, hidden]."""
    b = Builder(4)
    h = b.op("Add", b.op("MatMul", "x", b.w(16, 32)), b.const(b.rng.standard_normal(32).astype(np.float32) * 0.1))
    e = b.op("Erf", b.op("Div", h, b.const(np.float32(np.sqrt(2)))))
    g = b.op("Mul", h, b.op("Mul", b.const(np.float32(0.5)), b.op("Add", e, b.const(np.float32(1)))))
    y = b.op("MatMul", g, b.w(32, 8))
    return b.model([("x", ["batch", 5, 16])], [y])


def flatten_head() -> onnx.ModelProto:
    """Conv, Relu, Flatten of a 4x4 map (each channel is 16 features), Gemm, Relu, Gemm."""
    b = Builder(5)
    x = b.op("Relu", b.conv("x", 2, 6))
    x = b.op("Flatten", x, axis=1)
    x = b.op("Relu", b.op("Gemm", x, b.w(10, 96, scale=0.2), b.const(np.zeros(10, np.float32)), transB=1))
    y = b.op("Gemm", x, b.w(10, 4), b.const(np.float32(0.1)))
    return b.model([("x", ["batch", 2, 4, 4])], [y])


def gemm_relu_gemm() -> onnx.ModelProto:
    b = Builder(6)
    h = b.op("Relu", b.op("Gemm", "x", b.w(12, 16), b.const(np.ones(12, np.float32) * 0.3), transB=1))
    y = b.op("Gemm", h, b.w(12, 5), b.const(np.zeros(5, np.float32)))
    return b.model([("x", ["batch", 16])], [y])


ALL = {"cnn": cnn, "residual": residual, "concat": concat, "mlp": mlp, "flatten_head": flatten_head, "gemm_relu_gemm": gemm_relu_gemm}
