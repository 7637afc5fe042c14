"""3x3 convolution layers (Conv + Relu, batch 1): mopt -O2 (im2col + GEMM), mopt -O3 (Winograd
F(4x4, 3x3) where the pass chooses it) and ONNX Runtime, same process, same thread count.

    python benchmarks/kernels/bench_conv.py [--threads 2] [--runs 30]

Each runtime is timed in its own block after a pause (mopt.bench.time_calls); the outputs are
checked against ONNX Runtime's before timing (max abs error <= 1e-4 * max|ref| + 1e-5).
"""

from __future__ import annotations

import argparse

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.bench import ort_session, time_calls

# (input channels, output channels, output side): VGG, ResNet, SqueezeNet and DenseNet layers, and
# sizes the pass leaves direct (10x10 and 7x7)
LAYERS = [(64, 64, 224), (256, 256, 56), (64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 14),
          (64, 256, 13), (128, 32, 14), (16, 64, 56), (256, 256, 10), (512, 512, 7)]


def conv_model(cin: int, cout: int, side: int):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv3x3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, side, side])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    print(f"{'Cin->Cout @ side':>18} {'-O2 ms':>8} {'-O3 ms':>8} {'ORT ms':>8} {'O2/O3':>6} {'ORT/O3':>7}  -O3 kernel")
    for cin, cout, side in LAYERS:
        model = conv_model(cin, cout, side)
        feeds = {"x": np.random.default_rng(1).standard_normal((1, cin, side, side)).astype(np.float32)}
        o2 = mopt.Session(mopt.compile(model, 2), intra_op_threads=args.threads)
        o3 = mopt.Session(mopt.compile(model, 3), intra_op_threads=args.threads)
        ort = ort_session(model.SerializeToString(), args.threads)
        want = ort.run(None, feeds)[0]
        for s in (o2, o3):
            got = s.run(None, feeds)[0]
            assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max() + 1e-5, "result differs from onnxruntime"
        t2, t3, to = (time_calls("", lambda s=s: s.run(None, feeds), runs=args.runs, warmup=3).p50 * 1e3 for s in (o2, o3, ort))
        kernel = o3.kernels()[0][2].split(":")[0]
        print(f"{f'{cin}->{cout} @ {side}':>18} {t2:8.3f} {t3:8.3f} {to:8.3f} {t2 / t3:6.2f} {to / t3:7.2f}  {kernel}", flush=True)


if __name__ == "__main__":
    main()
