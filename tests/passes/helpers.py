"""Building small ONNX models, running passes on them, and proving the outputs did not change.

A pass test checks two things: the graph changed as intended (op histogram, attributes), and the
model computes the same thing. "The same thing" is checked three ways against onnx.reference on
the original model: mopt at -O0 (no passes), the optimized graph exported back to ONNX and run by
onnxruntime, and mopt at the pass's level (the whole pipeline, then the native runtime).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.frontend import export_onnx, import_onnx
from mopt.ir import Graph, Node, verify
from mopt.passes.manager import Pass, PassManager, PassRecord
from mopt.passes.pattern import ApplyRules, Rule
from mopt.passes.pipelines import pipeline
from mopt.testing.assert_close import assert_model_close
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import run_reference

OPSET = 18
Shape = Sequence[int | str]


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Shape],
    outputs: Sequence[str],
    initializers: Mapping[str, np.ndarray] | None = None,
    *,
    opset: int = OPSET,
) -> onnx.ModelProto:
    """A float32 model; output shapes are left to shape inference, as exporters often do."""
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), k) for k, a in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def node(op: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), list(outputs), name=outputs[0], **attrs)


class Weights:
    """Random float32 weights, reproducible per test."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def normal(self, *shape: int, scale: float = 0.5) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def positive(self, *shape: int) -> np.ndarray:
        return self.rng.uniform(0.5, 1.5, shape).astype(np.float32)

    def batchnorm(self, c: int, prefix: str = "bn") -> dict[str, np.ndarray]:
        """scale, bias, mean, var for BatchNormalization(x, *names)."""
        return {
            f"{prefix}_scale": self.positive(c),
            f"{prefix}_bias": self.normal(c),
            f"{prefix}_mean": self.normal(c),
            f"{prefix}_var": self.positive(c),
        }


def bn_inputs(x: str, prefix: str = "bn") -> list[str]:
    return [x, f"{prefix}_scale", f"{prefix}_bias", f"{prefix}_mean", f"{prefix}_var"]


def optimize(model: onnx.ModelProto, *passes: Pass, explain: bool = False) -> tuple[Graph, list[PassRecord]]:
    """Imports the model and runs the given passes, verifying the IR after each."""
    graph = import_onnx(model)
    records = PassManager(passes, verify_ir=True, explain=explain).run(graph)
    verify(graph)
    return graph, records


def apply(model: onnx.ModelProto, *rules: Rule, explain: bool = False) -> tuple[Graph, list[PassRecord]]:
    """Runs just these rewrite rules (the rule under test, in isolation)."""
    return optimize(model, ApplyRules(level=3, rules=list(rules)), explain=explain)


def at_level(model: onnx.ModelProto, level: int) -> Graph:
    return optimize(model, *pipeline(level))[0]


def ops(graph: Graph) -> dict[str, int]:
    return graph.op_histogram()


def imported_ops(model: onnx.ModelProto) -> dict[str, int]:
    return import_onnx(model).op_histogram()


def the(graph: Graph, op: str) -> Node:
    """The one node of an op (qualified: 'com.mopt.FusedConv')."""
    found = [n for n in graph.walk() if n.qualified_op == op]
    assert len(found) == 1, f"expected one {op}, found {len(found)}: {ops(graph)}"
    return found[0]


def random_feeds(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for i, vi in enumerate(model.graph.input):
        if vi.name in inits:
            continue
        shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        feeds[vi.name] = random_input(shape, np.float32, seed=seed + i)
    return feeds


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as given
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return list(sess.run(None, dict(feeds)))


def assert_outputs_unchanged(
    model: onnx.ModelProto,
    optimized: Graph,
    level: int,
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    runner: str = "ort",
) -> mopt.CompiledModel:
    """The original model (onnx.reference), mopt -O0, the exported optimized graph and mopt -O<level>
    agree on random inputs. Returns the model compiled at `level` for further checks."""
    feeds = dict(feeds) if feeds is not None else random_feeds(model)
    want = run_reference(model, feeds)
    exported = export_onnx(optimized)
    if all(v.shape is not None for v in [*optimized.inputs, *optimized.outputs]):
        onnx.checker.check_model(exported)  # which wants a shape on every graph input and output
    names = [o.name for o in model.graph.output]
    assert [o.name for o in exported.graph.output] == names, "graph outputs were renamed"
    exported_run = run_ort(exported, feeds) if runner == "ort" else run_reference(exported, feeds)
    got_o0 = mopt.Session(model, level=0, intra_op_threads=1).run(None, feeds)
    compiled = mopt.compile(model, level)
    got_level = mopt.Session(compiled, intra_op_threads=1).run(None, feeds)
    for k, name in enumerate(names):
        assert_model_close(got_o0[k], want[k], context=f"mopt -O0, output {name}")
        assert_model_close(exported_run[k], want[k], context=f"optimized graph via {runner}, output {name}")
        assert_model_close(got_level[k], want[k], context=f"mopt -O{level}, output {name}")
    return compiled
