"""Before/after table for `mopt prune` and `mopt distill`: parameters, FLOPs, latency, accuracy."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from mopt.errors import InvalidArgumentError


def load_array(spec: str) -> np.ndarray:
    """FILE.npy, or FILE.npz:KEY (FILE.npz alone when it holds one array)."""
    path, _, key = spec.partition(":") if ".npz:" in spec else (spec, "", "")
    if not Path(path).exists():
        raise InvalidArgumentError(f"no such data file: '{path}'")
    if path.endswith(".npz"):
        with np.load(path) as z:
            if not key:
                if len(z.files) != 1:
                    raise InvalidArgumentError(f"'{path}' holds {', '.join(z.files)}: say which with {path}:KEY")
                key = z.files[0]
            if key not in z.files:
                raise InvalidArgumentError(f"'{path}' has no array '{key}' (it has {', '.join(z.files)})")
            return np.asarray(z[key])
    try:
        return np.asarray(np.load(path))
    except Exception as e:
        raise InvalidArgumentError(f"cannot read '{path}' as a .npy/.npz array: {e}") from None


def input_name(model: onnx.ModelProto) -> str:
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if len(names) != 1:
        raise InvalidArgumentError(f"data files feed models with one input; this one has {len(names)} ({', '.join(names)})")
    return names[0]


def check_data(model: onnx.ModelProto, x: np.ndarray, what: str) -> None:
    inp = next(i for i in model.graph.input if i.name == input_name(model))
    dims = inp.type.tensor_type.shape.dim
    want = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if x.ndim != len(want) or any(w is not None and w != s for w, s in zip(want[1:], x.shape[1:], strict=True)):
        raise InvalidArgumentError(f"{what}: shape {list(x.shape)} does not fit input '{inp.name}' {want} (first axis = items)")
    if x.dtype != np.float32:
        raise InvalidArgumentError(f"{what}: dtype {x.dtype}, the model takes float32")


def median_latency(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    from mopt.bench import time_calls

    return time_calls("", fn, runs=runs, warmup=warmup).p50


def accuracy(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray, threads: int | None = None) -> float:
    import mopt

    sess = mopt.Session(model, intra_op_threads=threads)
    logits = np.concatenate([sess.run(None, {input_name(model): x[i : i + 256]})[0] for i in range(0, len(x), 256)])
    if logits.ndim != 2 or logits.shape[0] != len(labels):
        raise InvalidArgumentError(f"labels need [items, classes] logits; the model gives {list(logits.shape)}")
    return float((logits.argmax(1) == labels.reshape(-1)).mean())


def measure(
    models: dict[str, onnx.ModelProto],
    batch_x: np.ndarray,
    *,
    threads: int | None = None,
    runs: int = 20,
    eval_x: np.ndarray | None = None,
    eval_y: np.ndarray | None = None,
    ort: bool = True,
) -> dict[str, dict[str, float]]:
    """Per model: params, flops, mopt_ms, ort_ms (when installed), accuracy (when labels are given).

    Each runtime is timed in its own block per model (median of `runs`), all in this process.
    """
    import mopt
    from mopt.prune.search import model_cost

    threads = threads or os.cpu_count() or 1
    out: dict[str, dict[str, float]] = {}
    for name, m in models.items():
        row: dict[str, float] = {}
        row["params"], row["flops"] = (float(v) for v in model_cost(m))
        feeds = {input_name(m): batch_x}
        sess = mopt.Session(m, level=3, intra_op_threads=threads)
        row["mopt_ms"] = median_latency(lambda s=sess, f=feeds: s.run(None, f), runs) * 1e3
        if ort:
            try:
                from mopt.bench import ort_session

                o = ort_session(m, threads)
                row["ort_ms"] = median_latency(lambda o=o, f=feeds: o.run(None, f), runs) * 1e3
            except ImportError:
                pass
        if eval_x is not None and eval_y is not None:
            row["accuracy"] = accuracy(m, eval_x, eval_y, threads)
        out[name] = row
    return out


def format_table(res: dict[str, dict[str, float]], batch: int, threads: int | None) -> str:
    from mopt.bench import table

    names = list(res)
    base = res[names[0]]
    rows = []
    fmts = [
        ("parameters", "params", lambda v: f"{int(v):,}"),
        ("FLOPs / item", "flops", lambda v: f"{v / 1e6:.2f} M"),
        (f"mopt ms (batch {batch})", "mopt_ms", lambda v: f"{v:.2f}"),
        (f"onnxruntime ms (batch {batch})", "ort_ms", lambda v: f"{v:.2f}"),
        ("accuracy", "accuracy", lambda v: f"{100 * v:.2f}%"),
    ]
    for label, key, f in fmts:
        if key not in base:
            continue
        row = [label]
        for n in names:
            v = res[n].get(key)
            cell = "-" if v is None else f(v)
            if v is not None and n != names[0] and key != "accuracy" and base[key]:
                cell += f" ({v / base[key]:.2f}x)"
            row.append(cell)
        rows.append(row)
    return table(rows, ["", *names]) + f"\n(latency: median of the runs, {threads or os.cpu_count()} thread(s), same process)"
