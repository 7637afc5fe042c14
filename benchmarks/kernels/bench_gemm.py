"""sgemm with prepacked B against this machine's measured fp32 peak, and against ONNX Runtime.

    python benchmarks/kernels/bench_gemm.py [--runs 30] [--threads 1 2]

The peak is measured, not looked up: one core's FMA throughput on the widest ISA (12 independent
FMA chains), the core clock (a chain of dependent integer adds), and from the two the FMA units
(flops per cycle / (lanes x 2)); peak = units x lanes x 2 x clock, per thread. Each GEMM is a
MatMul model with a constant B (packed at compile time in mopt, prepacked by ORT too), median of
--runs runs after warm-up; results are checked against ORT's before they are timed.
"""

from __future__ import annotations

import argparse

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt import _C
from mopt.bench import time_calls

SHAPES = [(1024, 1024, 1024), (1, 1024, 1024), (2, 1024, 1024), (4, 1024, 1024), (8, 1024, 1024), (16, 1024, 1024),
          (1, 4096, 1024), (16, 4096, 1024), (128, 256, 256), (128, 256, 1024), (128, 1024, 256)]


def matmul_model(M: int, K: int, N: int):
    w = numpy_helper.from_array((np.random.default_rng(0).standard_normal((K, N)) / np.sqrt(K)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])],
        [w],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def median_ms(fn, runs: int) -> float:
    return time_calls("", fn, runs=runs, warmup=3).p50 * 1e3


def peak() -> dict:
    isa = _C.default_isa()
    lanes = {"avx512": 16, "avx2": 8, "neon": 4}.get(isa, 1)
    try:
        m = _C.measure_peak(isa, 0.3)
    except Exception:  # noqa: BLE001 - scalar builds have no probe
        return {"isa": isa, "lanes": lanes, "gflops": float("nan"), "clock": 0.0, "units": float("nan")}
    per_cycle = m["fma_gflops"] / m["clock_ghz"] if m["clock_ghz"] else float("nan")
    units = per_cycle / (2 * lanes)
    return {"isa": isa, "lanes": lanes, "gflops": m["fma_gflops"], "clock": m["clock_ghz"], "units": units}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    import onnxruntime as ort

    pk = peak()
    units = round(pk["units"]) if np.isfinite(pk["units"]) else float("nan")
    core_peak = units * pk["lanes"] * 2 * pk["clock"]
    print(
        f"peak per core ({pk['isa']}): measured FMA throughput {pk['gflops']:.1f} GFLOP/s at a measured clock of "
        f"{pk['clock']:.2f} GHz = {pk['gflops'] / pk['clock'] if pk['clock'] else float('nan'):.1f} flop/cycle -> "
        f"{units} FMA units x {pk['lanes']} lanes x 2 x {pk['clock']:.2f} GHz = {core_peak:.1f} GFLOP/s"
    )
    hdr = f"{'M x K x N':>16} {'thr':>3} {'mopt ms':>8} {'GF/s':>6} {'%peak':>6} {'ORT ms':>8} {'GF/s':>6} {'ORT/mopt':>8}"
    print(hdr)
    print("-" * len(hdr))
    for threads in args.threads:
        for M, K, N in SHAPES:
            model = matmul_model(M, K, N)
            x = np.random.default_rng(1).standard_normal((M, K)).astype(np.float32)
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            o = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            s = mopt.Session(model, level=3, intra_op_threads=threads)
            want, got = o.run(None, {"x": x})[0], s.run(None, {"x": x})[0]
            err = float(np.abs(got - want).max() / (np.abs(want).max() + 1e-30))
            assert err < 1e-4, f"{M}x{K}x{N}: mopt differs from ORT by {err:.2e}"
            tm = median_ms(lambda: s.run(None, {"x": x}), args.runs)
            to = median_ms(lambda: o.run(None, {"x": x}), args.runs)
            gf = 2.0 * M * K * N / 1e6
            print(
                f"{f'{M}x{K}x{N}':>16} {threads:>3} {tm:8.3f} {gf / tm:6.1f} {100 * gf / tm / (core_peak * threads):5.0f}% "
                f"{to:8.3f} {gf / to:6.1f} {to / tm:7.2f}x"
            )


if __name__ == "__main__":
    main()
