"""Where the time goes: per-node and per-op latency of a compiled model, with achieved GFLOP/s.

    python benchmarks/models/profile_model.py light_resnet50 --threads 2 --level 2
    python benchmarks/models/profile_model.py path/to/model.onnx --dim batch=1 --top 15

A light_* name means the onnx wheel's model with random weights. Times are medians over --runs
runs (after warm-up), taken inside the runtime around each kernel call.

--ort adds ONNX Runtime's time for the same node (its profiler, same thread count, ORT_ENABLE_ALL),
matched by the last node each runtime fused: mopt keeps its name, ORT names its node after that
node's output (or keeps the name). Nodes the two runtimes fuse differently show "-". ORT's profiler
adds a few microseconds per node, so its small nodes look slower than they run.
--peak adds each node's share of the machine's fp32 peak (measured FMA throughput x threads).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

import mopt
from mopt.bench import table
from mopt.cli import random_feeds
from mopt.report import node_flops
from mopt.testing.models import LIGHT_MODELS, arange_input, light_path, randomize_weights


def load(name: str) -> tuple[onnx.ModelProto, str]:
    if name in LIGHT_MODELS or f"light_{name}" in LIGHT_MODELS:
        full = name if name.startswith("light_") else f"light_{name}"
        return randomize_weights(onnx.load(str(light_path(full))), seed=0), full
    return onnx.load(name), Path(name).stem


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--level", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--isa", default=None)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--dim", action="append", default=[], help="NAME=SIZE for symbolic dims")
    p.add_argument("--ort", action="store_true", help="ONNX Runtime's time for the same nodes")
    p.add_argument("--peak", action="store_true", help="GFLOP/s as a share of the measured fp32 peak")
    args = p.parse_args(argv)

    model, label = load(args.model)
    cm = mopt.compile(model, args.level, isa=args.isa)
    sess = mopt.Session(cm, intra_op_threads=args.threads, isa=args.isa)
    if args.model.endswith(".onnx"):
        dims = {k: int(v) for k, v in (d.split("=") for d in args.dim)}
        feeds = random_feeds(sess, dims)
    else:
        name, x = arange_input(model)
        feeds = {name: x}
    for _ in range(args.warmup):
        sess.run(None, feeds)
    samples = []
    for _ in range(args.runs):
        prof: list[float] = []
        sess.run(None, feeds, profile=prof)
        samples.append(prof)
    per_node = np.median(np.array(samples), axis=0)
    # ORT after mopt, in a block of its own: runs taking turns evicted each other's weights from
    # the caches (SqueezeNet's node times summed to 7.4 ms against 4.5 run back to back)
    ort_sess = None
    if args.ort:
        time.sleep(0.05)
        ort_sess = ort_profiling_session(model, args.threads)
        for _ in range(args.warmup + args.runs):
            ort_sess.run(None, feeds)
    kernels = sess.kernels()
    flops_by_name = {n.name: node_flops(n) for n in cm.graph.nodes} if cm.graph is not None else {}
    # a fused node keeps the name of the last node it took in (plus "__k"); ORT names its fused
    # nodes after their output, or keeps the node's name
    output_of = {n.name: n.output[0] for n in model.graph.node if n.output}
    ort_ms = ort_node_times(ort_sess, args.warmup) if ort_sess is not None else {}
    peak = measured_peak() * sess.num_threads if args.peak else 0.0

    total = float(per_node.sum())
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0.0])
    rows = []
    for (name, op, impl), t in zip(kernels, per_node, strict=True):
        f = flops_by_name.get(name) or 0
        agg = by_op[op]
        agg[0] += t
        agg[1] += 1
        agg[2] += f
        rows.append((t, name, op, impl, f))
    print(f"{label}: -O{args.level}, {sess.num_threads} threads, isa {sess.isa}, sum of node medians {total * 1e3:.2f} ms")
    op_rows = [
        [op, str(int(n)), f"{t * 1e3:.2f}", f"{100 * t / total:.1f}", f"{f / t / 1e9:.1f}" if f and t > 0 else "-"]
        for op, (t, n, f) in sorted(by_op.items(), key=lambda kv: -kv[1][0])
    ]
    print(table(op_rows, ["op", "nodes", "ms", "%", "GFLOP/s"]))
    print()
    rows.sort(key=lambda r: -r[0])
    header = ["node", "op", "kernel", "ms", "MFLOP", "GFLOP/s"] + (["% peak"] if peak else []) + (["ORT ms", "ORT/mopt"] if args.ort else [])
    top = []
    for t, name, op, impl, f in rows[: args.top]:
        row = [name[:40], op, impl[:44], f"{t * 1e3:.3f}", f"{f / 1e6:.1f}" if f else "-", f"{f / t / 1e9:.1f}" if f and t > 0 else "-"]
        if peak:
            row.append(f"{100 * f / t / 1e9 / peak:.0f}" if f and t > 0 else "-")
        if args.ort:
            base = name.split("__")[0]
            o = ort_ms.get(output_of.get(base, ""), ort_ms.get(base))
            row += [f"{o:.3f}", f"{o / (t * 1e3):.2f}"] if o is not None else ["-", "-"]
        top.append(row)
    if peak:
        print(f"peak: {peak:.1f} GFLOP/s ({sess.num_threads} threads x the measured fp32 FMA throughput of one)")
    print(table(top, header))
    return 0


def ort_profiling_session(model: onnx.ModelProto, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.enable_profiling = True
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_node_times(sess, warmup: int) -> dict[str, float]:
    """ONNX Runtime's median kernel time (ms) per node over its runs after `warmup`, keyed by the
    node's name (its output)."""
    import json
    import os

    path = sess.end_profiling()
    with open(path) as fh:
        events = json.load(fh)
    os.remove(path)
    times: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"].removesuffix("_kernel_time").removesuffix("_nchwc")
            times[name].append(e["dur"] / 1e3)
    return {k: float(np.median(v[warmup:] if len(v) > warmup else v)) for k, v in times.items()}


def measured_peak() -> float:
    """One thread's fp32 FMA throughput (GFLOP/s) on the widest ISA, measured."""
    from mopt import _C

    return float(_C.measure_peak(_C.default_isa(), 0.3)["fma_gflops"])


if __name__ == "__main__":
    sys.exit(main())
