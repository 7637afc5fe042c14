"""Running one op through mopt and through onnx.reference, and comparing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mopt.testing.assert_close import assert_close
from mopt.testing.reference import feeds_of, run_mopt, run_reference, single_op_model


def check_op(
    op: str,
    inputs: Mapping[str, np.ndarray | None],
    attrs: Mapping[str, Any] | None = None,
    *,
    isa: str,
    consts: Sequence[str] = (),
    rtol: float = 1e-5,
    atol: float = 1e-6,
    opset: int = 18,
    num_outputs: int = 1,
    level: int = 0,
    expect_native: bool = True,
) -> list[np.ndarray]:
    model = single_op_model(op, inputs, attrs, consts=consts, opset=opset, num_outputs=num_outputs)
    feeds = feeds_of(model, inputs)
    want = run_reference(model, feeds)
    if expect_native:
        import mopt

        cm = mopt.compile(model, level, isa=isa)
        assert not cm.fallback_nodes, f"{op} ran on the fallback: {cm.fallback_nodes[0].reason}"
    got = run_mopt(model, feeds, isa=isa, level=level, fallback=not expect_native)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_close(g, w, rtol=rtol, atol=atol, context=f"{op} output {i} isa={isa} attrs={dict(attrs or {})}")
    return got
