"""float16 storage: mopt fp32, --fp16 (weights stored as float16), --fp16-activations (weights
and the activations between float16-capable ops stored as float16; arithmetic float32) and the
same with --calibration (4 random inputs: values out of float16's range stay float32) on the
light CNNs of the onnx wheel (weights randomized as in bench_models.py), mobilenet_v2, vit_small4
and bert_mini. Per model: latency (medians, each runtime in its own block per round, same process
and threads), the session's activation arena after warm-up, program bytes, and the cosine of the
output against mopt fp32's on the same random input.

    python benchmarks/quant/bench_fp16.py [--models resnet50 ... vit_small4 bert_mini] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import LIGHT, SHARED, modernize, timed, worst_cos  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[*LIGHT, "mobilenet_v2", "vit_small4", "bert_mini"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shared", type=Path, default=SHARED)
    args = ap.parse_args()

    import mopt
    from mopt.quant import quantize
    from mopt.testing.models import arange_input, expose_logits, light_path, randomize_weights

    tmp = Path(tempfile.mkdtemp())
    rows = []
    for name in args.models:
        rng = np.random.default_rng(0)
        if name == "bert_mini":
            src = args.shared / "bert_mini.onnx"
            feeds = {"input_ids": rng.integers(0, 8192, (1, 128)).astype(np.int64),
                     "attention_mask": np.ones((1, 128), np.int64)}
        elif name in ("mobilenet_v2", "vit_small4"):
            src = args.shared / f"{name}.onnx"
            inp = onnx.load(str(src)).graph.input[0]
            feeds = {inp.name: rng.uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)}
        else:
            model = modernize(expose_logits(randomize_weights(onnx.load(str(light_path(f"light_{name}"))), seed=0)))
            iname, x0 = arange_input(model)
            src = tmp / f"{name}.onnx"
            onnx.save(model, str(src))
            feeds = {iname: rng.uniform(0, 1, x0.shape).astype(np.float32)}
        compiled = {
            "fp32": mopt.compile(str(src), 2, log=lambda _: None),
            "fp16": mopt.compile(str(src), 2, fp16=True, log=lambda _: None),
            "fp16 act": mopt.compile(str(src), 2, fp16_activations=True, log=lambda _: None),
            "act+cal": quantize(str(src), {k: np.concatenate([v] * 4) * rng.uniform(0.5, 1.0) if v.dtype == np.float32
                                           else np.concatenate([v] * 4) for k, v in feeds.items()},
                                mode="fp16", fp16_activations=True, batch=1, show_progress=False, log=lambda _: None).compiled,
        }
        sessions = {k: mopt.Session(cm, intra_op_threads=args.threads) for k, cm in compiled.items()}
        outs = {k: s.run(None, feeds) for k, s in sessions.items()}
        med = timed(sessions, feeds, args.runs, args.rounds)
        arena = {k: s.stats()["arena_bytes"] for k, s in sessions.items()}
        size = {k: len(cm.to_bytes()) for k, cm in compiled.items()}
        cosines = {k: worst_cos(outs["fp32"], o) for k, o in outs.items()}
        rows.append((name, med, arena, size, cosines))
        print(f"{name}: done", flush=True)

    print(f"\n{args.threads} threads, batch 1, medians of {args.rounds} rounds x {args.runs} runs (ms); arena: activation "
          "bytes after warm-up; size: program bytes; cos: worst output against mopt fp32's")
    heads = ["fp32", "fp16", "fp16 act", "fp16/fp32", "act/fp32", "arena act/fp32", "size fp16/fp32", "cos fp16", "cos act",
             "act+cal/fp32", "arena a+c/fp32", "cos act+cal"]
    print(f"{'model':<13} " + " ".join(f"{h:>14}" for h in heads))
    for name, m, a, s, c in rows:
        cells = [f"{m['fp32']:.2f}", f"{m['fp16']:.2f}", f"{m['fp16 act']:.2f}", f"{m['fp16'] / m['fp32']:.3f}",
                 f"{m['fp16 act'] / m['fp32']:.3f}", f"{a['fp16 act'] / max(a['fp32'], 1):.3f}",
                 f"{s['fp16'] / s['fp32']:.3f}", f"{c['fp16']:.6f}", f"{c['fp16 act']:.6f}",
                 f"{m['act+cal'] / m['fp32']:.3f}", f"{a['act+cal'] / max(a['fp32'], 1):.3f}", f"{c['act+cal']:.6f}"]
        print(f"{name:<13} " + " ".join(f"{x:>14}" for x in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
