"""Test models: the ONNX wheel's light_* CNNs, with their weights made random on the same graph."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT_MODELS = [
    "light_bvlc_alexnet",
    "light_densenet121",
    "light_inception_v1",
    "light_inception_v2",
    "light_resnet50",
    "light_shufflenet",
    "light_squeezenet",
    "light_vgg19",
    "light_zfnet512",
]


def light_dir() -> Path:
    return Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


def light_path(name: str) -> Path:
    return light_dir() / f"{name}.onnx"


def light_expected(name: str) -> np.ndarray:
    return numpy_helper.to_array(onnx.load_tensor(str(light_dir() / f"{name}_output_0.pb")))


def data_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The one graph input that has no initializer (the backend test runner's convention)."""
    inits = {t.name for t in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    if len(ins) != 1:
        raise ValueError(f"expected one data input, found {[i.name for i in ins]}")
    return ins[0]


def arange_input(model: onnx.ModelProto) -> tuple[str, np.ndarray]:
    """np.arange(n).reshape(shape) / n, the input the light models' expected outputs were made with."""
    vi = data_input(model)
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    n = int(np.prod(shape))
    return vi.name, (np.arange(n).reshape(shape) / n).astype(np.float32)


def _role(model: onnx.ModelProto, name: str) -> tuple[str, int] | None:
    for node in model.graph.node:
        for i, x in enumerate(node.input):
            if x == name:
                return node.op_type, i
    return None


def _random_weight(rng: np.random.Generator, shape: tuple[int, ...], role: tuple[str, int] | None) -> np.ndarray:
    op, idx = role if role else ("", -1)
    if op == "BatchNormalization" and idx in (1, 4):  # scale, variance: positive
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if op == "BatchNormalization":
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if op != "Gemm" else int(max(shape))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    if op in ("Mul",):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return rng.normal(0.0, 0.1, shape).astype(np.float32)


def randomize_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The same graph with every constant-filled float weight replaced by random values.

    Weights built by ConstantOfShape(shape initializer) become initializers holding random data
    of that shape; float initializers are redrawn the same way. Conv/Gemm weights are He-normal,
    BatchNorm scales and variances positive, so activations stay in a realistic range.
    """
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    keep_nodes = []
    new_inits: dict[str, np.ndarray] = {}
    for node in g.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is None or value.t.data_type == onnx.TensorProto.FLOAT:
                shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
                new_inits[node.output[0]] = _random_weight(rng, shape, _role(m, node.output[0]))
                continue
        keep_nodes.append(node)
    for name, t in inits.items():
        arr = numpy_helper.to_array(t)
        if arr.dtype == np.float32 and arr.size > 1:
            new_inits[name] = _random_weight(rng, arr.shape, _role(m, name))
    del g.node[:]
    g.node.extend(keep_nodes)
    used = {x for n in keep_nodes for x in n.input}
    kept_inits = [t for t in g.initializer if t.name in used and t.name not in new_inits]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    g.initializer.extend(numpy_helper.from_array(a, n) for n, a in new_inits.items())
    # old-IR models list initializers as inputs: keep that list consistent
    init_names = {t.name for t in g.initializer}
    consumed = used | {o.name for o in g.output}
    inputs = [i for i in g.input if (i.name not in inits and i.name not in init_names) or (i.name in init_names and i.name in consumed)]
    names = {i.name for i in inputs}
    for n, a in new_inits.items():
        if n not in names and m.ir_version < 4:
            inputs.append(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(a.shape)))
    del g.input[:]
    g.input.extend(inputs)
    return m


def expose_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """Adds the input of a final Softmax as an extra graph output (softmax saturates; logits don't)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    outputs = {o.name for o in m.graph.output}
    for node in m.graph.node:
        if node.op_type == "Softmax" and node.output[0] in outputs and node.input[0] not in outputs:
            m.graph.output.append(helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None))
    return m
