"""mopt.compile: ONNX -> IR -> passes -> program."""

from __future__ import annotations

import time
from collections.abc import Callable

from mopt import _C
from mopt.errors import InvalidArgumentError, UnsupportedOpError
from mopt.frontend.onnx_import import ModelSource, import_onnx
from mopt.ir.dtypes import DType
from mopt.lower.program import CompiledModel, lower
from mopt.passes.manager import PassManager
from mopt.passes.pipelines import pipeline


def compile(
    model: ModelSource,
    level: int = 2,
    *,
    isa: str | None = None,
    fallback: bool = True,
    print_changes: bool = False,
    explain: bool = False,
    log: Callable[[str], None] = print,
    overridable_initializers: bool = False,
    sparse_max_density: float | None = None,
    fp16: bool = False,
    fp16_activations: bool = False,
    winograd: bool = True,
) -> CompiledModel:
    """Compiles an ONNX model (path, bytes or ModelProto) at optimization level 0..3.

    isa: the ISA whose kernels the weights are packed for (default: this machine's best, or
    MOPT_ISA). fallback=False turns every node without a native kernel into an error.
    sparse_max_density: block density at or below which a constant MatMul/Gemm weight runs the
    block-sparse kernel (default: the measured mopt.lower.block_sparse.MAX_DENSITY; 0: never).
    fp16=True stores the float32 weights as float16 (half the program; widened to float32 when a
    session loads it, so kernels still compute in float32). fp16_activations=True also stores the
    activations between the ops that take float16 as float16 (half their memory; arithmetic stays
    float32; see mopt.passes.precision), and implies fp16. winograd=False keeps -O3's 3x3
    convolutions direct (Winograd filters take 4x the bytes in the program).
    """
    if level not in (0, 1, 2, 3):
        raise InvalidArgumentError(f"optimization level must be 0, 1, 2 or 3, got {level!r}")
    t0 = time.perf_counter()
    isa = isa or _C.default_isa()
    if isa not in _C.available_isas():
        raise InvalidArgumentError(f"isa '{isa}' is not available here (available: {', '.join(_C.available_isas())})")
    graph = import_onnx(model, overridable_initializers=overridable_initializers)
    for v in graph.values():
        if v.dtype == DType.STRING:
            raise UnsupportedOpError(f"value '{v.name}' is a string tensor; mopt runs numeric tensors only")
    manager = PassManager(pipeline(level, winograd=winograd), log=log if (print_changes or explain) else None, explain=explain)
    records = manager.run(graph)
    compiled = lower(graph, isa=isa, sparse_max_density=sparse_max_density, fp16=fp16, fp16_activations=fp16_activations)
    if print_changes or explain:
        for c in compiled.sparse_choices:
            log(f"block-sparse: {c.describe()}")
    compiled.level = level
    compiled.records = records
    compiled.seconds = time.perf_counter() - t0
    unrunnable = [p for p in compiled.fallback_nodes if not p.runnable]
    if unrunnable:
        lines = [f"  node '{p.node}' ({p.op}): {p.reason}" for p in unrunnable[:20]]
        raise UnsupportedOpError(f"{len(unrunnable)} node(s) cannot run:\n" + "\n".join(lines))
    if compiled.fallback_nodes and not fallback:
        lines = [f"  '{p.node}' ({p.op}): {p.reason}" for p in compiled.fallback_nodes[:20]]
        more = len(compiled.fallback_nodes) - 20
        if more > 0:
            lines.append(f"  ... and {more} more")
        raise UnsupportedOpError(
            f"{len(compiled.fallback_nodes)} node(s) have no native kernel and the fallback is disabled:\n" + "\n".join(lines)
        )
    return compiled
