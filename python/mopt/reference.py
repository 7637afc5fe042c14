"""Evaluating single nodes with the onnx reference implementation (onnx.reference).

Used twice: by constant folding at compile time, and by the run-time fallback for nodes without
a native kernel. A node becomes a one-node ONNX model whose inputs are the node's inputs plus any
outer-scope values its subgraphs read.
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from mopt.ir.dtypes import DType, c_contiguous, from_numpy, to_numpy
from mopt.ir.graph import Node, Value


def _value_info(v: Value) -> onnx.ValueInfoProto:
    if v.dtype is None or v.dtype == DType.UNDEFINED:
        return helper.make_value_info(v.name, onnx.TypeProto())
    shape = None if v.shape is None else list(v.shape)
    return helper.make_tensor_value_info(v.name, int(v.dtype), shape)


def node_inputs(node: Node) -> list[Value | None]:
    """The node's inputs followed by the outer values its subgraphs capture (what the runtime feeds)."""
    ins: list[Value | None] = list(node.inputs)
    have = {id(v) for v in ins if v is not None}
    for g in node.subgraphs():
        for v in g.captured_values():
            if id(v) not in have:  # from the node's graph or, inside a body, any graph around it
                have.add(id(v))
                ins.append(v)
    return ins


def node_model(node: Node, opset: dict[str, int]) -> onnx.ModelProto:
    """A one-node ONNX model computing `node`; its inputs are node_inputs(node), in order."""
    from mopt.frontend.onnx_export import _export_node

    protos = _export_node(node)
    ins = node_inputs(node)
    seen: set[str] = set()
    graph_inputs = []
    for v in ins:
        if v is not None and v.name not in seen:
            seen.add(v.name)
            graph_inputs.append(_value_info(v))
    g = helper.make_graph(protos, f"{node.op_type}_node", graph_inputs, [_value_info(v) for v in node.outputs])
    opsets = [helper.make_opsetid(d, v) for d, v in opset.items() if d != "com.mopt"]
    if not any(o.domain == "" for o in opsets):
        opsets.append(helper.make_opsetid("", 18))
    model = helper.make_model(g, opset_imports=opsets)
    model.ir_version = min(onnx.IR_VERSION, 10)
    # The runtime feeds node_inputs(node) positionally (a value may repeat): keep that order.
    model.metadata_props.add(key="mopt.feeds", value=json.dumps(["" if v is None else v.name for v in ins]))
    return model


def encode_model(model: onnx.ModelProto) -> str:
    return base64.b64encode(model.SerializeToString()).decode("ascii")


def decode_model(text: str) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(base64.b64decode(text))


def _loop_with_scalar_scans() -> type:
    """onnx.reference's Loop stacks scan outputs with np.vstack, which turns n scalars into an
    (n, 1) array; the spec (and ONNX Runtime) give (n,). This Loop notes the rank of what the body
    scans and drops the extra axis when it was 0."""
    from onnx.reference.ops.op_loop import Loop

    class ScalarScanLoop(Loop):
        def _run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            body = self._run_body  # set per instance by OpRun: watched, then put back
            ranks: list[int] = []

            def watched(*a, **k):  # type: ignore[no-untyped-def]
                outs = body(*a, **k)
                if self.K > 0:
                    ranks[:] = [np.ndim(o) for o in outs[-self.K :]]
                return outs

            self._run_body = watched
            try:
                res = list(super()._run(*args, **kwargs))
            finally:
                self._run_body = body
            for k, rank in enumerate(ranks):
                i = len(res) - self.K + k
                if rank == 0 and np.ndim(res[i]) == 2:
                    res[i] = res[i].reshape(-1)
            return tuple(res)

    ScalarScanLoop.__name__ = "Loop"
    return ScalarScanLoop


def _gather_elements() -> type:
    """onnx.reference's GatherElements goes through np.choose, which takes at most 32 choices, and its
    fallback for more fails on ordinary inputs (BERT's position ids: 512 of them). np.take_along_axis
    is the op."""
    from onnx.reference.op_run import OpRun

    class GatherElements(OpRun):
        def _run(self, data, indices, axis=None):  # type: ignore[no-untyped-def]
            axis = int(axis or 0)
            axis = axis + data.ndim if axis < 0 else axis
            idx = indices.astype(np.int64)
            n = data.shape[axis]
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"GatherElements: an index is outside [-{n}, {n - 1}]")
            return (np.take_along_axis(data, np.where(idx < 0, idx + n, idx), axis=axis),)

    return GatherElements


class NodeRunner:
    """Runs a one-node model with onnx.reference, converting outputs to the declared dtypes."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx.reference import ReferenceEvaluator

        self.model = model
        meta = {p.key: p.value for p in model.metadata_props}
        if "mopt.feeds" in meta:
            self.feed_names: list[str] = json.loads(meta["mopt.feeds"])
        else:
            self.feed_names = [i.name for i in model.graph.input]
        self.output_types: list[int] = []
        for o in model.graph.output:
            tt = o.type.tensor_type if o.type.HasField("tensor_type") else None
            self.output_types.append(int(tt.elem_type) if tt is not None else 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.session = ReferenceEvaluator(model, new_ops=[_loop_with_scalar_scans(), _gather_elements()])

    def __call__(self, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        feeds = {}
        for name, x in zip(self.feed_names, inputs, strict=False):
            if name and x is not None:
                feeds[name] = x
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            outs = self.session.run(None, feeds)
        result = []
        for arr, code in zip(outs, self.output_types, strict=False):
            if isinstance(arr, list | tuple):  # np.asarray would stack it: a silent change of type
                from mopt.errors import UnsupportedOpError

                node = self.model.graph.node[0]
                raise UnsupportedOpError(f"node '{node.name}' ({node.op_type}) produced an ONNX sequence; mopt carries tensors only")
            a = np.asarray(arr)
            if code and code != DType.STRING:
                want = to_numpy(code)
                if a.dtype != want:
                    a = a.astype(want)
            result.append(a)
        return result


# -- folding -------------------------------------------------------------------------------------
def _np_fast(node: Node, xs: list[np.ndarray | None]) -> list[np.ndarray] | None:
    """numpy versions of the ops constant folding meets most (None: use onnx.reference)."""
    op = node.op_type if node.domain == "" else None
    if op == "ConstantOfShape":
        value = node.attr("value")
        v = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
        return [np.full(tuple(int(d) for d in xs[0]), v[0], dtype=v.dtype)]
    if op == "Identity":
        return [xs[0]]
    if op == "Unsqueeze" and len(xs) > 1 and xs[1] is not None:
        out = xs[0]
        rank = out.ndim + len(xs[1])
        for a in sorted(int(a) % rank for a in xs[1]):
            out = np.expand_dims(out, a)
        return [out]
    if op == "Reshape" and not node.attr("allowzero", 0):
        shape = [int(d) for d in xs[1]]
        shape = [xs[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return [xs[0].reshape(shape)]
    if op in ("Add", "Sub", "Mul") and xs[0].dtype == xs[1].dtype:
        f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op]
        return [f(xs[0], xs[1]).astype(xs[0].dtype, copy=False)]
    if op == "Transpose":
        perm = node.attr("perm")
        return [c_contiguous(np.transpose(xs[0], perm))]
    if op == "Concat" and all(x is not None for x in xs):
        return [np.concatenate(xs, axis=int(node.attr("axis")))]
    if op == "Shape" and node.attr("start") is None and node.attr("end") is None:
        return [np.array(xs[0].shape, dtype=np.int64)]
    return None


def evaluate_node(node: Node, inputs: Sequence[np.ndarray | None], opset: dict[str, int]) -> list[np.ndarray]:
    """Computes a node's outputs from constant inputs."""
    xs = list(inputs)
    fast = _np_fast(node, xs)
    if fast is not None:
        return [np.asarray(a) for a in fast]
    runner = NodeRunner(node_model(node, opset))
    return runner(xs)


def result_dtype_ok(node: Node, outputs: Sequence[np.ndarray]) -> bool:
    for v, a in zip(node.outputs, outputs, strict=False):
        try:
            if v.dtype is not None and from_numpy(a.dtype) != v.dtype:
                return False
        except TypeError:
            return False
    return True
