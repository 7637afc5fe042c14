"""Small models built with onnx.helper for the quantization tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def small_cnn(seed: int = 0, batch: int | str = "N") -> onnx.ModelProto:
    """Conv+Relu -> MaxPool -> depthwise Conv+Clip(0,6) -> 1x1 Conv+Relu -> ReduceMean -> Gemm."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    inits = [
        w("w1", 8, 3, 3, 3), w("b1", 8, scale=0.1),
        w("w2", 8, 1, 3, 3), w("b2", 8, scale=0.1),
        w("w3", 16, 8, 1, 1), w("b3", 16, scale=0.1),
        w("fc", 10, 16), w("fcb", 10, scale=0.1),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dwconv"),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="pwconv"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("ReduceMean", ["r3", "axes"], ["m"], keepdims=0, name="gap"),
        helper.make_node("Gemm", ["m", "fc", "fcb"], ["logits"], transB=1, name="fc"),
    ]
    g = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 12, 12])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def mlp(seed: int = 0) -> onnx.ModelProto:
    """MatMul + bias Add + Relu -> MatMul: the dynamic-quantization case."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.2, (32, 48)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 48).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.2, (48, 20)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", 20])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 3, 12, 12)).astype(np.float32)


def residual_cnn(seed: int = 0) -> onnx.ModelProto:
    """x -> Conv+Relu (a) -> Conv (b) -> Add(a, b) -> Relu: the Add fuses into the second Conv."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n)
             for n, s in (("w1", (8, 3, 3, 3)), ("w2", (8, 8, 3, 3)), ("b2", (8,)))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["a"], name="relu1"),
        helper.make_node("Conv", ["a", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "a"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu2"),
    ]
    g = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 12, 12])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def residual_mlp(seed: int = 0, relu: bool = False) -> onnx.ModelProto:
    """x -> MatMul + b -> Add(x) [-> Relu]: the bias and the residual fuse into one FusedMatMul
    (a transformer block's output projection), the Relu too when `relu`."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, (32, 32)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 32).astype(np.float32), "b")]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["hb"], name="bias"),
        helper.make_node("Add", ["hb", "x"], ["s"], name="residual"),
    ]
    if relu:
        nodes.append(helper.make_node("Relu", ["s"], ["y"], name="relu"))
    else:
        nodes[-1].output[0] = "y"
    g = helper.make_graph(nodes, "residual_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", 32])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def mean_cnn(tail: str, seed: int = 0) -> onnx.ModelProto:
    """Conv+Relu -> Conv+Relu -> a mean -> Gemm, the mean being `tail`: "gap" (GlobalAveragePool,
    then Flatten), "mean_keep" (ReduceMean over H, W with keepdims=1, axes negative, then Flatten),
    "mean_c" (ReduceMean over the channels) or "also_output" (ReduceMean over H, W, the conv's
    output also a graph output)."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    chans = 1 if tail == "mean_c" else 16
    axes = {"gap": None, "mean_keep": [-2, -1], "mean_c": [1], "also_output": [2, 3]}[tail]
    inits = [w("w1", 8, 3, 3, 3), w("b1", 8, scale=0.1), w("w2", 16, 8, 3, 3), w("b2", 16, scale=0.1),
             w("fc", 10, chans * (1 if tail != "mean_c" else 36)), w("fcb", 10, scale=0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ]
    if tail == "gap":
        nodes.append(helper.make_node("GlobalAveragePool", ["r2"], ["m4"], name="gap"))
    else:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        nodes.append(helper.make_node("ReduceMean", ["r2", "axes"], ["m4"], keepdims=1, name="mean"))
    nodes += [helper.make_node("Flatten", ["m4"], ["m"], axis=1, name="flat"),
              helper.make_node("Gemm", ["m", "fc", "fcb"], ["logits"], transB=1, name="fc")]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])]
    if tail == "also_output":
        outputs.append(helper.make_tensor_value_info("r2", TensorProto.FLOAT, ["N", 16, 6, 6]))
    g = helper.make_graph(nodes, "mean_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                          outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m
