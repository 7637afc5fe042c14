"""int8 on more models: the onnx wheel's light CNNs (random weights) and mobilenet_v2 with static
int8, bert_mini with --dynamic; each against mopt fp32 and ONNX Runtime's quantized model (QDQ
static per-channel, or quantize_dynamic), in this process, same thread count, medians over
rounds of one block per runtime. Prints cosine(int8, fp32) of the output and the latency ratios.

    python benchmarks/quant/bench_models.py --models squeezenet shufflenet mobilenet_v2 bert_mini
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

SHARED = Path("/work/shared/models")


def timed(runners: dict, feeds: dict, runs: int, rounds: int = 3) -> dict[str, float]:
    """Medians; each runtime in its own block per round (spinning threads of one runtime would
    take the cores from the next if single calls alternated)."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, s in runners.items():
            for _ in range(3):
                s.run(None, feeds)
            for _ in range(runs):
                t = time.perf_counter()
                s.run(None, feeds)
                times[k].append(time.perf_counter() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a / (np.abs(a).max() or 1.0), b / (np.abs(b).max() or 1.0)  # mobilenet_v2's logits are ~1e-22
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["squeezenet", "shufflenet", "mobilenet_v2", "bert_mini"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--calib", type=int, default=8, help="calibration samples (random, uniform [0, 1))")
    args = ap.parse_args()

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import mopt
    from mopt.quant import quantize
    from mopt.testing.models import LIGHT_MODELS, arange_input, expose_logits, light_path, randomize_weights

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    rows = []
    tmp = Path(tempfile.mkdtemp())
    for name in args.models:
        rng = np.random.default_rng(0)
        if name == "bert_mini":
            src = SHARED / "bert_mini.onnx"
            feeds = {"input_ids": rng.integers(0, 8192, (1, 128)).astype(np.int64), "attention_mask": np.ones((1, 128), np.int64)}
            res = quantize(str(src), mode="dynamic")
            ort_q = tmp / "bert_dyn.onnx"
            quantize_dynamic(str(src), str(ort_q), weight_type=QuantType.QInt8)
            kind = "dynamic"
        else:
            if name == "mobilenet_v2":
                model = onnx.load(str(SHARED / "mobilenet_v2.onnx"))
                iname, shape = "pixel_values", (1, 3, 224, 224)
            else:
                full = name if name.startswith("light_") else f"light_{name}"
                if full not in LIGHT_MODELS:
                    raise SystemExit(f"unknown model {name}")
                model = expose_logits(randomize_weights(onnx.load(str(light_path(full))), seed=0))
                iname, x0 = arange_input(model)
                shape = x0.shape
            src = tmp / f"{name}.onnx"
            onnx.save(model, str(src))
            calib = rng.uniform(0, 1, (args.calib, *shape[1:])).astype(np.float32)
            feeds = {iname: rng.uniform(0, 1, shape).astype(np.float32)}
            # the light models have a fixed batch of 1; mobilenet_v2's is dynamic
            res = quantize(str(src), {iname: calib}, batch=8 if name == "mobilenet_v2" else 1, show_progress=False)
            pre = tmp / f"{name}.pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            batches = [{iname: calib[i : i + 1]} for i in range(len(calib))]

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.it = iter(batches)

                def get_next(self):
                    return next(self.it, None)

            ort_q = tmp / f"{name}.qdq.onnx"
            try:  # ORT's quantizer fails on some of the old-opset light models
                quantize_static(str(pre), str(ort_q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            except Exception as e:
                print(f"{name}: ORT's quantize_static fails: {str(e).splitlines()[0][:160]}")
            kind = "static"
        runners = {
            "mopt fp32": mopt.Session(str(src), intra_op_threads=args.threads),
            "mopt int8": mopt.Session(res.compiled, intra_op_threads=args.threads),
        }
        try:  # ORT's quantizer writes invalid models for some old-opset graphs
            o = ort.InferenceSession(str(ort_q), so, providers=["CPUExecutionProvider"])
            o.run(None, feeds)
            runners["ORT int8"] = o
        except Exception as e:
            print(f"{name}: ORT's quantized model does not load or run: {str(e).splitlines()[0][:160]}")
        ref = runners["mopt fp32"].run(None, feeds)[0]
        c_mopt = cos(ref, runners["mopt int8"].run(None, feeds)[0])
        c_ort = cos(ref, runners["ORT int8"].run(None, feeds)[0]) if "ORT int8" in runners else float("nan")
        med = timed(runners, feeds, args.runs)
        med.setdefault("ORT int8", float("nan"))
        n_int8 = sum(1 for n in res.compiled.program["graph"]["nodes"] if n["op"] in ("QConv", "QMatMul"))
        rows.append((name, kind, n_int8, med["mopt fp32"], med["mopt int8"], med["ORT int8"], c_mopt, c_ort))
        print(f"{name}: done", flush=True)
    print(f"\n{args.threads} threads, medians of 3 rounds x {args.runs} runs (ms); cosine vs mopt fp32 output")
    heads = ("int8 ops", "fp32", "int8", "ORT int8", "int8/fp32", "int8/ORT", "cos mopt")
    print(f"{'model':<14} {'mode':<8} " + " ".join(f"{h:>9}" for h in heads) + f" {'cos ORT':>8}")
    for n, k, q, f, i, o, cm, co in rows:
        print(f"{n:<14} {k:<8} {q:>9} {f:9.2f} {i:9.2f} {o:9.2f} {i / f:9.3f} {i / o:9.3f} {cm:9.5f} {co:8.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
