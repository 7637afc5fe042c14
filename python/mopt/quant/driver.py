"""mopt.quant.quantize: the whole flow, from an ONNX model and calibration data to a program.

prepare (import, -O2 fusions) -> calibrate (fp32 run, ranges per value) -> per-layer error of each
int8 layer on its own -> quantize every layer -> measure the whole model against fp32 on the
calibration data -> while the loss exceeds --max-accuracy-drop, put the worst layer back to fp32.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mopt import _C
from mopt.errors import InvalidArgumentError
from mopt.frontend.onnx_import import ModelSource, import_onnx
from mopt.ir.dtypes import DType, to_numpy
from mopt.ir.graph import Graph
from mopt.lower.program import CompiledModel, lower
from mopt.passes.manager import PassManager
from mopt.passes.pipelines import pipeline
from mopt.passes.precision import out_of_f16_range
from mopt.quant.calibrate import METHODS, batches, load_calibration, observe
from mopt.quant.rewrite import (
    PASSTHROUGH,
    cosine,
    find_targets,
    layer_error,
    observed_values,
    quantize_dynamic_graph,
    quantize_static_graph,
)


@dataclass
class LayerReport:
    name: str
    op: str
    sqnr_db: float
    cosine: float
    float_reason: str = ""  # why it stays fp32 ("" = int8)


@dataclass
class QuantResult:
    compiled: CompiledModel
    mode: str
    layers: list[LayerReport] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # Conv/Gemm/MatMul left in float, and why
    top1_agreement: float | None = None  # % of calibration samples whose top-1 class is unchanged
    output_cosine: float | None = None
    seconds: float = 0.0

    def table(self) -> str:
        lines = [f"{'layer':<28} {'op':<12} {'SQNR dB':>8} {'cosine':>9}  precision"]
        for r in self.layers:
            prec = "int8" if not r.float_reason else f"fp32 ({r.float_reason})"
            lines.append(f"{r.name[:28]:<28} {r.op[:12]:<12} {r.sqnr_db:8.2f} {r.cosine:9.5f}  {prec}")
        for name, why in self.skipped.items():
            lines.append(f"{name[:28]:<28} {'':<12} {'':>8} {'':>9}  fp32 ({why})")
        if self.output_cosine is not None:
            lines.append(f"model output vs fp32 on the calibration data: cosine {self.output_cosine:.5f}"
                         + (f", top-1 agreement {self.top1_agreement:.2f}%" if self.top1_agreement is not None else ""))
        return "\n".join(lines)


def _prepare(model: ModelSource) -> Graph:
    graph = import_onnx(model)
    PassManager(pipeline(2)).run(graph)
    return graph


def _calibration_feeds(graph: Graph, calibration: Any, batch: int,
                       log: Callable[[str], None] = print) -> tuple[dict[str, np.ndarray], int]:
    """The calibration arrays by input name, each in its input's dtype, and the batch to feed them
    in. A model whose inputs fix their first dimension (the light ONNX zoo models: 1) takes
    batches of exactly that size: the calibration samples are fed so, and a remainder that does
    not fill one is left out, with a note."""
    data = load_calibration(calibration, [v.name for v in graph.inputs])
    for v in graph.inputs:
        data[v.name] = np.asarray(data[v.name]).astype(to_numpy(v.dtype) if v.dtype is not None else np.float32, copy=False)
    fixed = {v.shape[0] for v in graph.inputs if v.shape is not None and len(v.shape) > 0 and isinstance(v.shape[0], int)}
    if len(fixed) == 1 and len(fixed) == len(graph.inputs) and (b := fixed.pop()) > 0:
        n = len(next(iter(data.values()))) if data else 0
        if n < b:
            raise InvalidArgumentError(f"the model takes batches of {b}; the calibration data has {n} samples")
        if n % b:
            log(f"quantize: the model takes batches of {b}; the last {n % b} calibration samples are left out")
            data = {k: v[: n - n % b] for k, v in data.items()}
        batch = b
    return data, batch


def _f16_out_of_range(graph: Graph, calibration: Any, isa: str, batch: int, threads: int,
                      show_progress: bool) -> dict[str, float]:
    """The float32 values computed in `graph` whose largest magnitude on the calibration data is out
    of float16's range (mopt.passes.precision.out_of_f16_range), with that magnitude."""
    data, batch = _calibration_feeds(graph, calibration, batch, lambda _: None)
    values = [o for n in graph.nodes for o in n.outputs if o.dtype == DType.FLOAT and not o.is_graph_output]
    model_outputs = list(graph.outputs)
    graph.outputs = model_outputs + values
    sess = _session(lower(graph, isa=isa), isa, threads)
    graph.outputs = model_outputs
    peak = dict.fromkeys((v.name for v in values), 0.0)
    chunks = batches(data, batch)
    for i, feeds in enumerate(chunks):
        outs = sess.run(None, feeds)[len(model_outputs):]
        for v, o in zip(values, outs, strict=True):
            finite = np.abs(o[np.isfinite(o)]) if o.size else o
            if finite.size:
                peak[v.name] = max(peak[v.name], float(finite.max()))
        if show_progress:
            print(f"\rfp16 ranges: batch {i + 1}/{len(chunks)}", end="", file=sys.stderr, flush=True)
    if show_progress:
        print(file=sys.stderr)
    return {name: m for name, m in peak.items() if out_of_f16_range(m)}


def _session(compiled: CompiledModel, isa: str, threads: int) -> Any:
    import mopt

    return mopt.Session(compiled, isa=isa, intra_op_threads=threads)


def quantize(
    model: ModelSource,
    calibration: Any = None,
    *,
    mode: str = "static",
    method: str = "minmax",
    max_accuracy_drop: float | None = None,
    isa: str | None = None,
    batch: int = 64,
    threads: int = 2,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
    fp16_activations: bool = False,
) -> QuantResult:
    """Quantizes an ONNX model and lowers it. mode: "static" int8 (needs calibration), "dynamic" int8
    (MatMul/Gemm, activations quantized per run) or "fp16" (float32 constants stored as float16,
    computed in float32; with fp16_activations, the activations between float16-capable ops are
    stored as float16 too)."""
    t0 = time.perf_counter()
    isa = isa or _C.default_isa()
    if fp16_activations and mode != "fp16":
        raise InvalidArgumentError("fp16_activations goes with mode='fp16'")
    if mode == "fp16":
        if calibration is not None and not fp16_activations:
            raise InvalidArgumentError("fp16 weights need no calibration data (it is for fp16_activations)")
        graph = _prepare(model)
        wide = _f16_out_of_range(graph, calibration, isa, batch, threads, show_progress) if fp16_activations and \
            calibration is not None else {}
        for name, m in wide.items():
            log(f"quantize: '{name}' reaches {m:.3g} on the calibration data, out of float16's range: it stays float32")
        res = QuantResult(lower(graph, isa=isa, fp16=True, fp16_activations=fp16_activations,
                                f32_values=frozenset(wide)), mode)
        res.skipped = {name: f"out of float16's range (max |v| {m:.3g})" for name, m in wide.items()}
        res.seconds = time.perf_counter() - t0
        return res
    if mode == "dynamic":
        graph = _prepare(model)
        names = quantize_dynamic_graph(graph)
        _, skipped = find_targets(graph)
        res = QuantResult(lower(graph, isa=isa), mode, [LayerReport(n, "QMatMul", float("nan"), float("nan")) for n in names], skipped)
        res.seconds = time.perf_counter() - t0
        return res
    if mode != "static":
        raise InvalidArgumentError(f"quantization mode must be 'static', 'dynamic' or 'fp16', got {mode!r}")
    if method not in METHODS:
        raise InvalidArgumentError(f"unknown calibration method '{method}' (choose from {', '.join(METHODS)})")
    if calibration is None:
        raise InvalidArgumentError("static quantization needs calibration data (--calibration), or use --dynamic")
    if max_accuracy_drop is not None and max_accuracy_drop < 0:
        raise InvalidArgumentError("--max-accuracy-drop must be >= 0 (percentage points)")

    # 1) fp32 run with every value the int8 layers read or write as an extra output
    graph = _prepare(model)
    data, batch = _calibration_feeds(graph, calibration, batch, log)
    targets, skipped = find_targets(graph)
    watched = observed_values(targets)
    if not watched:
        raise InvalidArgumentError("the model has no Conv, Gemm or MatMul with constant weights to quantize")
    model_outputs = list(graph.outputs)
    graph.outputs = model_outputs + [v for v in watched if not any(v is o for o in model_outputs)]
    extra = [v.name for v in graph.outputs]
    fp32 = _session(lower(graph, isa=isa), isa, threads)
    graph.outputs = model_outputs
    first: dict[str, np.ndarray] = {}
    ref_outputs: list[list[np.ndarray]] = []

    def run_fp32(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        outs = fp32.run(None, feeds)
        if not first:
            first.update(dict(zip(extra, outs, strict=True)))
        ref_outputs.append(outs[: len(model_outputs)])
        return outs

    obs = observe(run_fp32, extra, data, batch, show_progress)
    # graph inputs keep their full range whatever the method: an image is mostly 0 and 1 (digits),
    # and KL or percentile clipping would cut its strokes
    inputs = {v.name for v in graph.inputs}
    ranges = {name: o.range("minmax" if name in inputs else method) for name, o in obs.items()}

    # 2) each layer alone: its error when quantized
    def run_graph(g: Graph, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return _session(lower(g, isa=isa), isa, threads).run(None, feeds)[0]

    all_int8 = set(quantize_static_graph(_prepare(model), ranges, reasons=skipped))
    probe = _prepare(model)
    ptargets, _ = find_targets(probe)
    layers: list[LayerReport] = []
    for t in ptargets:
        if t.kind in PASSTHROUGH or t.node.name not in all_int8:
            continue
        out_u8 = not t.y.is_graph_output and all(
            n.op_type in ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "MaxPool") for n, _ in t.y.uses
        )
        s, c = layer_error(t, first, ranges, out_u8, run_graph)
        layers.append(LayerReport(t.node.name, t.node.op_type, s, c))

    # 3) whole model; fall back the worst layers while the loss is over budget
    def evaluate(exclude: set[str]) -> tuple[CompiledModel, float, float | None]:
        g = _prepare(model)
        quantize_static_graph(g, ranges, exclude)
        compiled = lower(g, isa=isa)
        sess = _session(compiled, isa, threads)
        cos, agree, total = [], 0, 0
        for feeds, ref in zip(batches(data, batch), ref_outputs, strict=True):
            got = sess.run(None, feeds)
            cos.append(min(cosine(r, o) for r, o in zip(ref, got, strict=True)))
            r0, g0 = ref[0], got[0]
            if r0.ndim == 2 and r0.shape[1] > 1:
                agree += int(np.sum(r0.argmax(1) == g0.argmax(1)))
                total += r0.shape[0]
        return compiled, float(min(cos)), (100.0 * agree / total if total else None)

    exclude: set[str] = set()
    compiled, out_cos, agreement = evaluate(exclude)
    order = sorted(layers, key=lambda r: r.sqnr_db)
    while max_accuracy_drop is not None and order:
        loss = (100.0 - agreement) if agreement is not None else 100.0 * (1.0 - out_cos)
        if loss <= max_accuracy_drop:
            break
        worst = order.pop(0)
        exclude.add(worst.name)
        worst.float_reason = "accuracy"
        log(f"quantize: {loss:.2f} points lost > {max_accuracy_drop}; keeping '{worst.name}' in fp32 (SQNR {worst.sqnr_db:.1f} dB)")
        compiled, out_cos, agreement = evaluate(exclude)
    res = QuantResult(compiled, mode, layers, skipped, agreement, out_cos)
    res.seconds = time.perf_counter() - t0
    return res


__all__ = ["LayerReport", "QuantResult", "quantize"]
