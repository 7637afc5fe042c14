"""mopt against ONNX Runtime on the exported transformers of ../shared/models (BERT, GPT-2, ViT).

    python benchmarks/models/bench_transformers_vs_ort.py --sizes 1x128 8x128 --threads 2

For each model and (batch, sequence) size: compile once at --level (default 3), check the outputs
against ONNX Runtime (ORT_ENABLE_ALL) on the same random inputs, then time each runtime with the
same thread count, in blocks that take turns (--rounds). ViT has no sequence axis: its size is the
batch alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

import mopt
from mopt.bench import measure_all, ort_session, stderr_if_tty, table

MODELS = ["bert_mini", "gpt2_small4", "vit_small4"]
SHARED = Path(__file__).resolve().parents[3] / "shared" / "models"


def feeds_for(name: str, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name.startswith("vit"):
        return {"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    feeds = {"input_ids": rng.integers(0, 8192, (batch, seq)).astype(np.int64)}
    if name.startswith("bert"):
        feeds["attention_mask"] = np.ones((batch, seq), np.int64)
    return feeds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--models-dir", type=Path, default=SHARED)
    p.add_argument("--sizes", nargs="+", default=["1x128", "8x128"], help="BATCHxSEQ")
    p.add_argument("--level", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10, help="blocks per runtime, taking turns (the runs split over them)")
    args = p.parse_args(argv)
    rows, ok = [], True
    for name in args.models:
        path = args.models_dir / f"{name}.onnx"
        if not path.exists():
            print(f"{path} not found: skipped", file=sys.stderr)
            continue
        model = onnx.load(str(path))
        t0 = time.perf_counter()
        compiled = mopt.compile(model, args.level)
        compile_s = time.perf_counter() - t0
        sess = mopt.Session(compiled, intra_op_threads=args.threads)
        ort = ort_session(model, args.threads)
        for size in args.sizes:
            batch, seq = (int(v) for v in size.split("x"))
            feeds = feeds_for(name, batch, seq)
            got, want = sess.run(None, feeds), ort.run(None, feeds)
            err = max(float(np.abs(g - w).max() / (np.abs(w).max() + 1e-30)) for g, w in zip(got, want, strict=True))
            ok &= err <= 1e-4
            res = measure_all(
                {"mopt": lambda s=sess, f=feeds: s.run(None, f), "onnxruntime": lambda o=ort, f=feeds: o.run(None, f)},
                runs=args.runs,
                warmup=args.warmup,
                loads={},
                progress=stderr_if_tty(),
                rounds=args.rounds,
            )
            m, o = res["mopt"].p50, res["onnxruntime"].p50
            label = f"{batch}" if name.startswith("vit") else f"{batch}x{seq}"
            rows.append(
                [
                    name,
                    label,
                    f"{m * 1e3:.2f}",
                    f"{o * 1e3:.2f}",
                    f"{o / m:.2f}x",
                    f"{err:.1e}",
                    str(len(compiled.fallback_nodes)),
                    f"{compile_s:.2f}",
                ]
            )
    print(f"mopt -O{args.level} vs onnxruntime (ORT_ENABLE_ALL), {args.threads} threads, p50 of {args.runs} runs, timed in {args.rounds} blocks each, taking turns")
    print(table(rows, ["model", "size", "mopt ms", "ORT ms", "ORT/mopt", "max rel err", "fallback nodes", "compile s"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
