"""Running one op natively when onnx.reference cannot be the oracle (a reference bug, an op it
lacks): the test supplies the expected result itself, computed with numpy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from onnx import helper

import mopt
from mopt.testing.assert_close import assert_close
from mopt.testing.reference import feeds_of, run_mopt, single_op_model


def run_native(
    op: str,
    inputs: Mapping[str, np.ndarray | None],
    attrs: Mapping[str, Any] | None = None,
    *,
    isa: str,
    consts: Sequence[str] = (),
    opset: int = 18,
    num_outputs: int = 1,
    output_dtypes: Sequence[int] | None = None,
    level: int = 0,
    domain: str = "",
) -> list[np.ndarray]:
    """The outputs of a single-op model, asserting that the op ran natively (no fallback)."""
    model = single_op_model(
        op, inputs, attrs, consts=consts, opset=opset, num_outputs=num_outputs, output_dtypes=output_dtypes, domain=domain
    )
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    cm = mopt.compile(model, level, isa=isa)
    assert not cm.fallback_nodes, f"{op} ran on the fallback: {cm.fallback_nodes[0].reason}"
    return run_mopt(model, feeds_of(model, inputs), isa=isa, level=level, fallback=False)


def check_native(
    op: str,
    inputs: Mapping[str, np.ndarray | None],
    want: Sequence[np.ndarray],
    attrs: Mapping[str, Any] | None = None,
    *,
    isa: str,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    **kw: Any,
) -> list[np.ndarray]:
    got = run_native(op, inputs, attrs, isa=isa, num_outputs=len(want), **kw)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_close(g, w, rtol=rtol, atol=atol, context=f"{op} output {i} isa={isa} attrs={dict(attrs or {})}")
    return got


def check_fused(
    model: Any,
    feeds: Mapping[str, np.ndarray],
    fused_op: str,
    *,
    isa: str,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    level: int = 2,
) -> list[np.ndarray]:
    """Compiles a small graph at -O2, asserts the fusion produced `fused_op` (e.g. com.mopt.FusedConv)
    and nothing ran on the fallback, and compares against onnx.reference on the unfused graph."""
    from mopt.testing.reference import run_reference

    want = run_reference(model, feeds)
    cm = mopt.compile(model, level, isa=isa)
    assert not cm.fallback_nodes, f"{cm.fallback_nodes[0].op} ran on the fallback: {cm.fallback_nodes[0].reason}"
    sess = mopt.Session(cm, isa=isa, intra_op_threads=2, fallback=False)
    ops = [op for _, op, _ in sess.kernels()]
    assert fused_op in ops, f"expected {fused_op} after fusion, the program runs {ops}"
    got = sess.run(None, dict(feeds))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_close(g, w, rtol=rtol, atol=atol, context=f"{fused_op} output {i} isa={isa} program={ops}")
    return got


def graph_model(
    nodes: Sequence[Any], inputs: Mapping[str, np.ndarray], outputs: Sequence[str], *, consts: Sequence[str] = (), opset: int = 18
) -> Any:
    """A model of several nodes (onnx.helper.make_node), graph inputs and initializers from arrays."""
    import onnx
    from onnx import helper, numpy_helper

    from mopt.ir.dtypes import from_numpy

    graph_inputs = [helper.make_tensor_value_info(k, int(from_numpy(v.dtype)), list(v.shape)) for k, v in inputs.items() if k not in consts]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in inputs.items() if k in consts]
    outs = [helper.make_value_info(o, onnx.TypeProto()) for o in outputs]
    g = helper.make_graph(list(nodes), "test", graph_inputs, outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)
