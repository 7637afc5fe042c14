"""digits_cnn: accuracy and batch-64 latency of mopt fp32, mopt int8, ONNX Runtime fp32 and ONNX
Runtime's QDQ model (quant_pre_process + quantize_static, per-channel, MinMax, QDQ), and that QDQ
model compiled by mopt onto its int8 kernels ("mopt QDQ"), all in this
process with the same thread count. Latencies are medians over rounds in which each runtime runs in
its own block after a pause (so one runtime's spinning threads do not take the cores from another),
repeated so that load from other processes hits them alike.

    python benchmarks/quant/bench_digits.py [--threads 2] [--runs 20] [--rounds 3] [--method minmax]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import timed  # noqa: E402

MODELS = Path("/work/shared/models")


def ort_qdq(src: Path, calib: np.ndarray, dst_dir: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"image": calib[i : i + 64]} for i in range(0, len(calib), 64)])

        def get_next(self):
            return next(self.it, None)

    pre = dst_dir / "pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # sympy is not installed here
    out = dst_dir / "qdq.onnx"
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=MODELS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--method", default="minmax")
    ap.add_argument("--max-accuracy-drop", type=float, default=None)
    args = ap.parse_args()

    import onnxruntime as ort

    import mopt
    from mopt.quant import quantize

    src = args.models / "digits_cnn.onnx"
    data = np.load(args.models / "digits_data.npz")
    calib, images, labels = data["calib"], data["test_images"], data["test_labels"]

    t0 = time.perf_counter()
    res = quantize(str(src), {"image": calib}, method=args.method, max_accuracy_drop=args.max_accuracy_drop, show_progress=False)
    print(f"mopt quantize ({args.method}): {time.perf_counter() - t0:.1f} s")
    print(res.table())
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        qdq = ort_qdq(src, calib, Path(tmp))
        runners = {
            "mopt fp32": mopt.Session(str(src), intra_op_threads=args.threads),
            "mopt int8": mopt.Session(res.compiled, intra_op_threads=args.threads),
            "ORT fp32": ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"]),
            "ORT QDQ": ort.InferenceSession(str(qdq), so, providers=["CPUExecutionProvider"]),
            "mopt QDQ": mopt.Session(str(qdq), intra_op_threads=args.threads),  # ORT's model on mopt's int8 kernels
        }
    print(f"\naccuracy on the {len(labels)} test images:")
    for name, s in runners.items():
        logits = np.concatenate([s.run(None, {"image": images[i : i + 64]})[0] for i in range(0, len(images), 64)])
        print(f"  {name:<10} {100 * np.mean(logits.argmax(1) == labels):6.2f}%")
        if name == "mopt int8":
            int8_acc = 100 * np.mean(logits.argmax(1) == labels)

    batch = np.ascontiguousarray(images[:64])
    med = timed(runners, {"image": batch}, args.runs, args.rounds, warmup=5)
    print(f"\nbatch 64, {args.threads} threads, median of {args.rounds} x {args.runs} runs (one block per runtime per round):")
    for k, v in med.items():
        print(f"  {k:<10} {v:8.3f} ms")
    r_fp32 = med["mopt int8"] / med["mopt fp32"]
    r_ort = med["mopt int8"] / med["ORT QDQ"]
    print(f"\nmopt int8 / mopt fp32 = {r_fp32:.3f}   (target <= 0.5)")
    print(f"mopt int8 / ORT QDQ   = {r_ort:.3f}   (target <= 0.6)")
    print(f"mopt int8 accuracy    = {int8_acc:.2f}%  (target >= 98.5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
