"""Single-op models and their reference results (onnx.reference)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mopt.ir.dtypes import from_numpy

OPSET = 18


def single_op_model(
    op: str,
    inputs: Mapping[str, np.ndarray | None],
    attrs: Mapping[str, Any] | None = None,
    *,
    consts: Sequence[str] = (),
    num_outputs: int = 1,
    output_dtypes: Sequence[int] | None = None,
    opset: int = OPSET,
    domain: str = "",
) -> onnx.ModelProto:
    """A model with one node. Inputs named in `consts` become initializers; None inputs are absent."""
    graph_inputs, inits, names = [], [], []
    for name, arr in inputs.items():
        if arr is None:
            names.append("")
            continue
        names.append(name)
        if name in consts:
            inits.append(numpy_helper.from_array(np.asarray(arr), name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, int(from_numpy(arr.dtype)), list(arr.shape)))
    while names and names[-1] == "":
        names.pop()
    outs = [f"y{i}" for i in range(num_outputs)]
    node = helper.make_node(op, names, outs, domain=domain or None, **dict(attrs or {}))
    if output_dtypes is None:
        out_vi = [helper.make_value_info(o, onnx.TypeProto()) for o in outs]
    else:
        out_vi = [helper.make_tensor_value_info(o, int(t), None) for o, t in zip(outs, output_dtypes, strict=True)]
    g = helper.make_graph([node], f"{op}_test", graph_inputs, out_vi, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    if output_dtypes is None:
        m = onnx.shape_inference.infer_shapes(m)
    return m


def feeds_of(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    names = {i.name for i in model.graph.input}
    return {k: v for k, v in inputs.items() if v is not None and k in names}


def run_reference(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return [np.asarray(x) for x in ReferenceEvaluator(model).run(None, dict(feeds))]


def run_mopt(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, isa: str, level: int = 0, threads: int = 2, **kw: Any
) -> list[np.ndarray]:
    import mopt

    sess = mopt.Session(model, level=level, isa=isa, intra_op_threads=threads, **kw)
    return sess.run(None, dict(feeds))
