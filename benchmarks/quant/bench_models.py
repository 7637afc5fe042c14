"""int8 and fp16 on more models: the nine light CNNs of the onnx wheel (random weights) and
mobilenet_v2 with static int8 (calibrated on random inputs), bert_mini with --dynamic; each against
mopt fp32, ONNX Runtime fp32 and ONNX Runtime's own quantized model (QDQ static per-channel after
quant_pre_process, or quantize_dynamic), plus mopt --fp16 (weights stored as float16). All in this
process, same thread count, medians over rounds of one block per runtime. Cosines are of each
output against mopt fp32's on the same random input (the worst output where there are several).

    python benchmarks/quant/bench_models.py [--models bvlc_alexnet ... mobilenet_v2 bert_mini] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import onnx

SHARED = Path("/work/shared/models")
LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet", "vgg19",
         "zfnet512"]


def modernize(model: onnx.ModelProto) -> onnx.ModelProto:
    """The light models are opset 9 / IR 3 (every initializer also a graph input, so overridable):
    ORT's per-channel QDQ needs opset 13 and writes models ORT rejects from the old ones, and ORT
    will not fold an overridable initializer. Opset 17, IR 8, initializers not inputs: the same
    network, which every runtime here then reads alike."""
    from onnx import version_converter

    m = version_converter.convert_version(model, 17)
    m.ir_version = 8
    inits = {i.name for i in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    return m


def timed(runners: dict[str, Any], feeds: dict, runs: int, rounds: int, warmup: int = 2) -> dict[str, float]:
    """Medians; each runtime in its own block per round (spinning threads of one runtime would
    take the cores from the next if single calls alternated), after a pause: ONNX Runtime's
    workers spin on for a while after its last run, and took the cores from whichever block came
    next (mopt on ORT's digits QDQ model: 2.1-2.7 ms right after ORT's block, 1.5 ms alone)."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, s in runners.items():
            time.sleep(0.05)
            for _ in range(warmup):
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


def worst_cos(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    return min(cos(r, g) for r, g in zip(ref, got, strict=True))


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {(text[0] if text else '')[:150]}"


def ort_static(src: Path, iname: str, calib: np.ndarray, tmp: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / f"{src.stem}.pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # sympy is not installed here
    batches = [{iname: calib[i : i + 1]} for i in range(len(calib))]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    out = tmp / f"{src.stem}.qdq.onnx"
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[*LIGHT, "mobilenet_v2", "bert_mini"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calib", type=int, default=8, help="calibration samples (random, uniform [0, 1))")
    ap.add_argument("--shared", type=Path, default=SHARED, help="folder with mobilenet_v2.onnx and bert_mini.onnx")
    args = ap.parse_args()

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import mopt
    from mopt.quant import quantize
    from mopt.testing.models import LIGHT_MODELS, arange_input, expose_logits, light_path, randomize_weights

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    rows, notes = [], []
    tmp = Path(tempfile.mkdtemp())
    for name in args.models:
        t_model = time.perf_counter()
        rng = np.random.default_rng(0)
        ort_q: Path | None = None
        if name == "bert_mini":
            src = args.shared / "bert_mini.onnx"
            feeds = {"input_ids": rng.integers(0, 8192, (1, 128)).astype(np.int64), "attention_mask": np.ones((1, 128), np.int64)}
            res = quantize(str(src), mode="dynamic")
            try:
                ort_q = tmp / "bert_dyn.onnx"
                quantize_dynamic(str(src), str(ort_q), weight_type=QuantType.QInt8)
            except Exception as e:
                notes.append(f"{name}: ORT's quantize_dynamic fails: {first_line(e)}")
                ort_q = None
            kind = "dynamic"
        else:
            if name == "mobilenet_v2":
                model = onnx.load(str(args.shared / "mobilenet_v2.onnx"))
                iname, shape = "pixel_values", (1, 3, 224, 224)
            else:
                full = name if name.startswith("light_") else f"light_{name}"
                if full not in LIGHT_MODELS:
                    raise SystemExit(f"unknown model {name}")
                model = modernize(expose_logits(randomize_weights(onnx.load(str(light_path(full))), seed=0)))
                iname, x0 = arange_input(model)
                shape = x0.shape
            src = tmp / f"{name}.onnx"
            onnx.save(model, str(src))
            calib = rng.uniform(0, 1, (args.calib, *shape[1:])).astype(np.float32)
            feeds = {iname: rng.uniform(0, 1, shape).astype(np.float32)}
            # the light models have a fixed batch of 1; mobilenet_v2's is dynamic
            try:
                res = quantize(str(src), {iname: calib}, batch=8 if name == "mobilenet_v2" else 1, show_progress=False,
                               threads=args.threads)
            except Exception as e:
                traceback.print_exc()
                notes.append(f"{name}: mopt quantize fails: {first_line(e)}")
                continue
            try:
                ort_q = ort_static(src, iname, calib, tmp)
            except Exception as e:
                notes.append(f"{name}: ORT's quantize_static fails: {first_line(e)}")
            kind = "static"
        fp16 = quantize(str(src), mode="fp16")
        runners: dict[str, Any] = {
            "mopt fp32": mopt.Session(str(src), intra_op_threads=args.threads),
            "mopt int8": mopt.Session(res.compiled, intra_op_threads=args.threads),
            "mopt fp16": mopt.Session(fp16.compiled, intra_op_threads=args.threads),
            "ORT fp32": ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"]),
        }
        if ort_q is not None:
            try:  # ORT's quantizer writes models ORT itself rejects for some old-opset graphs
                o = ort.InferenceSession(str(ort_q), so, providers=["CPUExecutionProvider"])
                o.run(None, feeds)
                runners["ORT int8"] = o
            except Exception as e:
                notes.append(f"{name}: ORT's quantized model does not load or run in ORT: {first_line(e)}")
        outs = {k: s.run(None, feeds) for k, s in runners.items()}
        ref = outs["mopt fp32"]
        c = {k: worst_cos(ref, v) for k, v in outs.items()}
        c.setdefault("ORT int8", float("nan"))
        med = timed(runners, feeds, args.runs, args.rounds)
        med.setdefault("ORT int8", float("nan"))
        n_int8 = sum(1 for n in res.compiled.program["graph"]["nodes"] if n["op"] in ("QConv", "QMatMul"))
        n_all = sum(1 for n in res.compiled.graph.nodes if n.op_type in ("QConv", "QMatMul", "Conv", "FusedConv", "Gemm",
                                                                          "FusedGemm", "MatMul", "FusedMatMul"))
        fp32_size = len(mopt.compile(str(src), 2, log=lambda _: None).to_bytes())
        rows.append((name, kind, f"{n_int8}/{n_all}", med, c, len(fp16.compiled.to_bytes()) / fp32_size))
        print(f"{name}: done in {time.perf_counter() - t_model:.0f} s", flush=True)

    print(f"\n{args.threads} threads, batch 1, medians of {args.rounds} rounds x {args.runs} runs (ms); cosine of each output "
          "against mopt fp32's on the same random input (worst output)")
    heads = ["mode", "int8 ops", "fp32", "ORT fp32", "int8", "ORT int8", "int8/fp32", "int8/ORT8", "cos int8", "cos ORT8",
             "fp16", "fp16/fp32", "cos fp16", "fp16 size"]
    widths = [8, 9, 8, 8, 8, 8, 9, 9, 9, 9, 8, 9, 9, 9]
    print(f"{'model':<13} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)))
    for n, k, q, m, c, size in rows:
        cells = [k, q, f"{m['mopt fp32']:.2f}", f"{m['ORT fp32']:.2f}", f"{m['mopt int8']:.2f}", f"{m['ORT int8']:.2f}",
                 f"{m['mopt int8'] / m['mopt fp32']:.3f}", f"{m['mopt int8'] / m['ORT int8']:.3f}", f"{c['mopt int8']:.5f}",
                 f"{c['ORT int8']:.5f}", f"{m['mopt fp16']:.2f}", f"{m['mopt fp16'] / m['mopt fp32']:.3f}",
                 f"{c['mopt fp16']:.6f}", f"{size:.3f}"]
        print(f"{n:<13} " + " ".join(f"{x:>{w}}" for x, w in zip(cells, widths, strict=True)))
    print("int8 ops: Conv/Gemm/MatMul layers on int8 kernels / all of them; fp16 size: program bytes / fp32 program bytes")
    for line in notes:
        print("note:", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
