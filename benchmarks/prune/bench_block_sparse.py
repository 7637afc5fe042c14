"""Issue #7: the block-sparse kernel against the dense one on a large Gemm, same process.

For each batch M and sparsity s, B [K x N] gets a fraction s of its 1x8 blocks zeroed (by block
norm, as `mopt prune --sparsity s --block 1x8` does) and one Gemm (+ bias) model is timed three
ways: mopt with the dense kernel (sparse_max_density=0), mopt with the block-sparse kernel
(sparse_max_density=1) and ONNX Runtime (dense; for reference). Each is timed in its own block,
`--rounds` rounds of `--runs` runs, median of all; the max error is against float64 numpy.

    python benchmarks/prune/bench_block_sparse.py --threads 2
    python benchmarks/prune/bench_block_sparse.py --threads 2 --sweep   # density sweep for the threshold
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.bench import ort_session, table
from mopt.lower.block_sparse import block_density


def gemm_model(w: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    k, n = w.shape
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"])
    g = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def block_pruned(rng: np.random.Generator, k: int, n: int, sparsity: float) -> np.ndarray:
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    norms = np.linalg.norm(w.reshape(k, n // 8, 8), axis=2)
    cut = int(round(sparsity * norms.size))
    if cut:
        drop = np.argsort(norms, axis=None, kind="stable")[:cut]
        mask = np.ones(norms.size, bool)
        mask[drop] = False
        w *= np.repeat(mask.reshape(k, n // 8), 8, axis=1)
    return w


def timed(fns: dict[str, object], rounds: int, runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(2):
                fn()  # type: ignore[operator]
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()  # type: ignore[operator]
                samples[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1e3 for k, v in samples.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batches", default="1,64,128")
    ap.add_argument("--sparsity", default="0.5,0.7,0.9")
    ap.add_argument("--sweep", action="store_true", help="sparsity 0.0..0.9 in steps of 0.1 (threshold measurement), no ORT")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.n % 8:
        ap.error("--n must be a multiple of 8 (whole 1x8 blocks)")

    rng = np.random.default_rng(0)
    sparsities = [round(0.1 * i, 1) for i in range(10)] if args.sweep else [float(s) for s in args.sparsity.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for s in sparsities:
        w = block_pruned(rng, args.k, args.n, s)
        bias = rng.standard_normal(args.n).astype(np.float32)
        m = gemm_model(w, bias)
        dense = mopt.Session(m, level=3, intra_op_threads=args.threads, sparse_max_density=0.0)
        sparse = mopt.Session(m, level=3, intra_op_threads=args.threads, sparse_max_density=1.0)
        assert any(c.sparse for c in sparse.compiled.sparse_choices) or s == 0.0  # type: ignore[union-attr]
        ort = None if args.sweep else ort_session(m, args.threads)
        for mb in batches:
            x = rng.standard_normal((mb, args.k)).astype(np.float32)
            want = x.astype(np.float64) @ w.astype(np.float64) + bias
            fns: dict[str, object] = {
                "dense": lambda x=x: dense.run(None, {"x": x}),
                "sparse": lambda x=x: sparse.run(None, {"x": x}),
            }
            if ort is not None:
                fns["ort"] = lambda x=x: ort.run(None, {"x": x})
            err = max(float(np.abs(sess.run(None, {"x": x})[0] - want).max()) for sess in (dense, sparse))
            t = timed(fns, args.rounds, args.runs)
            row = [f"{s:.1f}", f"{block_density(w):.2f}", str(mb), f"{t['dense']:.3f}", f"{t['sparse']:.3f}"]
            row.append(f"{t['dense'] / t['sparse']:.2f}x")
            if ort is not None:
                row += [f"{t['ort']:.3f}", f"{t['ort'] / t['sparse']:.2f}x"]
            row.append(f"{err:.1e}")
            rows.append(row)
            print("  " + "  ".join(row), file=sys.stderr, flush=True)
    header = ["sparsity", "block density", "M", "mopt dense ms", "mopt sparse ms", "dense/sparse"]
    if not args.sweep:
        header += ["ort dense ms", "ort/sparse"]
    header.append("max |err|")
    print(f"Gemm [M x {args.k}] x [{args.k} x {args.n}] + bias, 1x8 blocks zeroed by norm; {args.threads} threads, median of "
          f"{args.rounds}x{args.runs} runs, same process (cpu count {os.cpu_count()})")
    print(table(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
