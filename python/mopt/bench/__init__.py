"""Timing mopt against ONNX Runtime in one process, with the same inputs and thread count."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Timing:
    """Latencies (seconds) of repeated calls, and the time it took to get ready."""

    name: str
    load_s: float
    samples: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) if self.samples else float("nan")

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p90(self) -> float:
        return self.pct(90)

    @property
    def p99(self) -> float:
        return self.pct(99)

    def throughput(self, batch: int = 1) -> float:
        return batch / self.p50 if self.samples and self.p50 > 0 else float("nan")


def _progress(label: str, i: int, n: int, stream: Any) -> None:
    if stream is None:
        return
    width = 24
    done = int(width * i / max(n, 1))
    stream.write(f"\r  {label:<12} [{'#' * done}{'.' * (width - done)}] {i}/{n}")
    if i == n:
        stream.write("\n")
    stream.flush()


# Before each block: onnxruntime's worker threads spin for a while after a call, and on a 2-core
# machine they take the second core from whatever runs next (mopt's GEMM at 2 threads measured 0.48
# to 0.61 ms right after an onnxruntime call, 0.32 ms alone). They burn about 47 ms of CPU after a
# call (onnxruntime 1.32, GPT-2 at 1 x 128: process time over a sleep), so a 50 ms pause left them
# spinning into the next block now and then: mopt's block medians ranged 4.2-8.3 ms beside
# onnxruntime and 4.4-4.8 ms alone. The pause is several times that.
PAUSE_S = 0.25


def time_calls(name: str, fn: Callable[[], Any], *, runs: int, warmup: int, load_s: float = 0.0, progress: Any = None) -> Timing:
    """Pauses (PAUSE_S), calls fn warmup times untimed, then `runs` times timed."""
    time.sleep(PAUSE_S)
    for _ in range(warmup):
        fn()
    t = Timing(name, load_s)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        t.samples.append(time.perf_counter() - t0)
        _progress(name, i + 1, runs, progress)
    return t


def measure_all(
    fns: dict[str, Callable[[], Any]],
    *,
    runs: int,
    warmup: int,
    loads: dict[str, float],
    progress: Any = None,
    rounds: int = 1,
) -> dict[str, Timing]:
    """Times each callable in its own block (warm-up, then `runs` timed calls).

    Blocks, not alternation: on a small machine one runtime's spinning worker threads steal the
    cores from the other when calls alternate (measured: mopt 48 ms alone, 76 ms alternated with
    onnxruntime on ResNet-50, 2 cores), which no user running one runtime would see.

    With rounds > 1 the runs are split into that many blocks per callable, the blocks taking turns
    (a, b, a, b, ...), each after the pause and one untimed call: a slow spell of a shared host then
    falls on both runtimes' samples instead of on one block.
    """
    rounds = max(1, min(rounds, runs))
    out = {k: Timing(k, loads.get(k, 0.0)) for k in fns}
    for r in range(rounds):
        n = runs // rounds + (1 if r < runs % rounds else 0)
        for k, fn in fns.items():
            t = time_calls(k, fn, runs=n, warmup=warmup if r == 0 else min(warmup, 1), progress=progress if rounds == 1 else None)
            out[k].samples.extend(t.samples)
    return out


def ort_session(model: Any, threads: int, level: str = "all") -> Any:
    """An onnxruntime session with `threads` intra-op threads (ORT_ENABLE_ALL by default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
    so.log_severity_level = 3
    src = model if isinstance(model, str | bytes) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def format_ms(s: float) -> str:
    return f"{s * 1e3:8.2f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def stderr_if_tty() -> Any:
    return sys.stderr if sys.stderr.isatty() else None
