"""Where the time goes: per-node and per-op latency of a compiled model, with achieved GFLOP/s.

    python benchmarks/models/profile_model.py light_resnet50 --threads 2 --level 2
    python benchmarks/models/profile_model.py path/to/model.onnx --dim batch=1 --top 15

A light_* name means the onnx wheel's model with random weights. Times are medians over --runs
runs (after warm-up), taken inside the runtime around each kernel call.
"""

from __future__ import annotations

import argparse
import sys
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
    kernels = sess.kernels()
    flops_by_name = {n.name: node_flops(n) for n in cm.graph.nodes} if cm.graph is not None else {}

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
    top = [
        [name[:40], op, impl[:44], f"{t * 1e3:.3f}", f"{f / 1e6:.1f}" if f else "-", f"{f / t / 1e9:.1f}" if f and t > 0 else "-"]
        for t, name, op, impl, f in rows[: args.top]
    ]
    print(table(top, ["node", "op", "kernel", "ms", "MFLOP", "GFLOP/s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
