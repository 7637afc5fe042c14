"""mopt against ONNX Runtime on the nine CNNs that ship inside the onnx wheel.

For each model: its constant-filled weights are made random (same graph, seed 0), mopt compiles it
(timed), writes the .mopt and loads a Session from it (timed: what a deployment pays at start-up),
ONNX Runtime builds an InferenceSession from the same ONNX bytes (timed, ORT_ENABLE_ALL), the
outputs are compared, and each runtime is timed in its own block with the same thread count.
Each model runs in a fresh Python process, so no runtime's threads or caches from an earlier model
are around while the next one is timed. Prints one table; --json writes the figures too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import mopt
from mopt.bench import measure_all, ort_session, stderr_if_tty, table
from mopt.testing.models import LIGHT_MODELS, arange_input, expose_logits, light_path, randomize_weights


def bench_one(name: str, *, level: int, threads: int, runs: int, warmup: int, workdir: Path) -> dict:
    # random weights, and the logits as an extra output: a saturated softmax would agree trivially
    model = expose_logits(randomize_weights(onnx.load(str(light_path(name))), seed=0))
    input_name, x = arange_input(model)
    feeds = {input_name: x}

    t0 = time.perf_counter()
    compiled = mopt.compile(model, level)
    compile_s = time.perf_counter() - t0
    path = workdir / f"{name}.mopt"
    compiled.save(str(path))

    t0 = time.perf_counter()
    sess = mopt.Session(str(path), intra_op_threads=threads)
    mopt_load_s = time.perf_counter() - t0

    data = model.SerializeToString()
    t0 = time.perf_counter()
    ort = ort_session(data, threads)
    ort_load_s = time.perf_counter() - t0

    got, want = sess.run(None, feeds), ort.run(None, feeds)
    # worst output, in units of its tolerance (max abs error <= 1e-4 * max|ref| + 1e-5)
    err, tol = max(
        ((float(np.abs(g.astype(np.float64) - w).max()), 1e-4 * float(np.abs(w).max()) + 1e-5) for g, w in zip(got, want, strict=True)),
        key=lambda et: et[0] / et[1],
    )

    res = measure_all(
        {"mopt": lambda: sess.run(None, feeds), "onnxruntime": lambda: ort.run(None, feeds)},
        runs=runs,
        warmup=warmup,
        loads={"mopt": mopt_load_s, "onnxruntime": ort_load_s},
        progress=stderr_if_tty(),
    )
    m, o = res["mopt"], res["onnxruntime"]
    return {
        "model": name,
        "isa": sess.isa,
        "fallback_nodes": len(compiled.fallback_nodes),
        "max_abs_error": err,
        "tolerance": tol,
        "compile_s": compile_s,
        "mopt_load_ms": mopt_load_s * 1e3,
        "ort_load_ms": ort_load_s * 1e3,
        "mopt_p50_ms": m.p50 * 1e3,
        "mopt_p90_ms": m.p90 * 1e3,
        "ort_p50_ms": o.p50 * 1e3,
        "ort_p90_ms": o.p90 * 1e3,
        "speedup": o.p50 / m.p50,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=LIGHT_MODELS, choices=LIGHT_MODELS, metavar="NAME")
    p.add_argument("--level", type=int, default=2, choices=[0, 1, 2, 3], help="mopt optimization level (default 2)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for both runtimes (default 2)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--one", choices=LIGHT_MODELS, help=argparse.SUPPRESS)  # one model, JSON on stdout (used per subprocess)
    args = p.parse_args(argv)

    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_one(args.one, level=args.level, threads=args.threads, runs=args.runs, warmup=args.warmup, workdir=Path(tmp))
        print(json.dumps(r))
        return 0

    rows, results = [], []
    for name in args.models:
        print(f"{name} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--one", name, "--level", str(args.level), "--threads", str(args.threads)]
        cmd += ["--runs", str(args.runs), "--warmup", str(args.warmup)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        rows.append(
            [
                name.removeprefix("light_"),
                f"{r['mopt_p50_ms']:.2f}",
                f"{r['ort_p50_ms']:.2f}",
                f"{r['speedup']:.2f}x",
                f"{r['compile_s']:.2f}",
                f"{r['mopt_load_ms']:.1f}",
                f"{r['ort_load_ms']:.1f}",
                f"{r['max_abs_error']:.1e} / {r['tolerance']:.0e}" + ("" if r["max_abs_error"] <= r["tolerance"] else " MISMATCH"),
            ]
        )
    isa = results[0]["isa"] if results else "?"
    print(
        f"mopt -O{args.level} ({isa}) vs onnxruntime {_ort_version()} (ORT_ENABLE_ALL), {args.threads} threads, batch 1, "
        f"p50 of {args.runs} runs after {args.warmup} warm-up, each runtime timed in its own block"
    )
    header = ["model", "mopt ms", "ORT ms", "ORT/mopt", "compile s", "mopt load ms", "ORT load ms", "max err / tol"]
    print(table(rows, header))
    speedups = [r["speedup"] for r in results]
    if speedups:
        print(f"geometric-mean speed-up (ORT p50 / mopt p50): {float(np.exp(np.mean(np.log(speedups)))):.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"level": args.level, "threads": args.threads, "runs": args.runs, "results": results}, indent=2))
    return 0 if all(r["max_abs_error"] <= r["tolerance"] for r in results) else 1


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    sys.exit(main())
