"""Calibration: activation ranges from representative data.

Data comes from an .npz (arrays by input name), an .npy (the one input), or a folder of either,
each array batched along axis 0. The fp32 program runs with the observed values as extra outputs;
per value the observer keeps the exact min/max and a bounded sample, from which a method picks
the range: min-max, percentile (99.99%), entropy (KL divergence of the clipped, 128-level
histogram against the original, TensorRT's criterion) or MSE (the range whose uint8 quantization
error is smallest).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from mopt.errors import InvalidArgumentError

METHODS = ("minmax", "percentile", "entropy", "mse")
SAMPLE_CAP = 1 << 20


def load_calibration(source: str | Path | Mapping[str, np.ndarray] | np.ndarray, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays for the model's inputs: by name, or by position when the model has one input."""
    if isinstance(source, Mapping):
        arrays = {k: np.asarray(v) for k, v in source.items()}
    elif isinstance(source, np.ndarray):
        arrays = {"": source}
    else:
        path = Path(source)
        if not path.exists():
            raise InvalidArgumentError(f"calibration data '{path}' does not exist")
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy")) if path.is_dir() else [path]
        if not files:
            raise InvalidArgumentError(f"calibration folder '{path}' holds no .npz or .npy file")
        parts: dict[str, list[np.ndarray]] = {}
        for f in files:
            if f.suffix == ".npz":
                with np.load(f) as z:
                    for k in z.files:
                        parts.setdefault(k, []).append(z[k])
            elif f.suffix == ".npy":
                parts.setdefault("", []).append(np.load(f))
            else:
                raise InvalidArgumentError(f"calibration file '{f}' is neither .npz nor .npy")
        arrays = {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in parts.items()}
    out: dict[str, np.ndarray] = {}
    for name in input_names:
        if name in arrays:
            out[name] = arrays[name]
    if len(out) < len(input_names):
        if len(input_names) == 1 and len(arrays) >= 1:
            key = "" if "" in arrays else ("calib" if "calib" in arrays else next(iter(arrays)))
            if len(arrays) > 1 and key not in ("", "calib"):
                raise InvalidArgumentError(
                    f"calibration data has arrays {sorted(arrays)}; none is named after the input '{input_names[0]}'"
                )
            out = {input_names[0]: arrays[key]}
        else:
            missing = [n for n in input_names if n not in out]
            raise InvalidArgumentError(f"calibration data lacks arrays for the inputs {missing} (it has {sorted(arrays)})")
    counts = {len(v) for v in out.values()}
    if len(counts) != 1 or 0 in counts:
        raise InvalidArgumentError(f"calibration arrays must share a non-zero batch size, got {sorted(counts)}")
    return out


def batches(data: Mapping[str, np.ndarray], batch: int) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(data.values())))
    return [{k: np.ascontiguousarray(v[i : i + batch]) for k, v in data.items()} for i in range(0, n, batch)]


class Observer:
    """Min, max and a bounded, evenly strided sample of everything a value held."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf
        self.samples: list[np.ndarray] = []
        self.count = 0
        self.rng = np.random.default_rng(0)

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).reshape(-1)
        if x.size == 0:
            return
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        # a uniform random sample: a strided one would see the same channels and pixels each batch
        keep = SAMPLE_CAP // 16
        self.samples.append(x[self.rng.integers(0, x.size, keep)] if x.size > keep else x.copy())
        self.count += x.size
        if sum(s.size for s in self.samples) > SAMPLE_CAP:
            merged = np.concatenate(self.samples)
            self.samples = [merged[self.rng.integers(0, merged.size, SAMPLE_CAP // 2)]]

    def data(self) -> np.ndarray:
        return np.concatenate(self.samples) if self.samples else np.zeros(1, np.float32)

    def range(self, method: str) -> tuple[float, float]:
        if self.count == 0 or not np.isfinite(self.lo) or not np.isfinite(self.hi):
            return 0.0, 0.0
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        if method == "minmax" or hi - lo == 0:
            return lo, hi
        x = self.data()
        if method == "percentile":
            plo, phi = np.percentile(x, [0.01, 99.99])
            return min(float(plo), 0.0), max(float(phi), 0.0)
        if method == "mse":
            return _mse_range(x, lo, hi)
        if method == "entropy":
            return _entropy_range(x, lo, hi)
        raise InvalidArgumentError(f"unknown calibration method '{method}' (choose from {', '.join(METHODS)})")


def qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric uint8 scale and zero point for [lo, hi] (0 included, so 0.0 is exact)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0
    if scale <= 0 or not np.isfinite(scale):
        return 1.0, 0
    zp = int(np.clip(np.rint(-lo / scale), 0, 255))
    return float(scale), zp


def fake_quant(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    q = np.clip(np.rint(x / scale) + zp, 0, 255)
    return ((q - zp) * scale).astype(np.float32)


def _mse_range(x: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    best, best_err = (lo, hi), np.inf
    for f in np.linspace(0.3, 1.0, 36):
        clo, chi = lo * f, hi * f
        s, z = qparams(clo, chi)
        err = float(np.mean((fake_quant(x, s, z) - x) ** 2))
        if err < best_err:
            best, best_err = (clo, chi), err
    return best


def _entropy_range(x: np.ndarray, lo: float, hi: float, bins: int = 2048, levels: int = 128) -> tuple[float, float]:
    """KL-optimal clipping of the larger side (activations are mostly one-sided), the other side
    scaled alike."""
    side_hi = hi >= -lo
    mag = np.abs(x[x > 0] if side_hi else x[x < 0])  # exact zeros (after Relu) would swamp the histogram
    top = hi if side_hi else -lo
    if mag.size == 0 or top <= 0:
        return lo, hi
    hist, _ = np.histogram(mag, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    best_i, best_kl = bins, np.inf
    for i in range(levels, bins + 1, 16):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        if p.sum() == 0:
            continue
        chunks = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        raw = hist[:i]  # Q spreads the unclipped bins; P also holds the clipped tail in its last bin
        for c in chunks:
            nz = raw[c] != 0
            if nz.any():
                q[c[nz]] = raw[c].sum() / nz.sum()
        pn, qn = p / p.sum(), q / max(q.sum(), 1e-12)
        m = pn > 0
        kl = float(np.sum(pn[m] * np.log(pn[m] / np.maximum(qn[m], 1e-12))))
        if kl < best_kl:
            best_i, best_kl = i, kl
    f = best_i / bins
    return lo * f, hi * f


def progress(done: int, total: int, what: str, stream=sys.stderr) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    stream.write(f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        stream.write("\n")
    stream.flush()


def observe(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], names: Sequence[str], data: Mapping[str, np.ndarray],
            batch: int = 64, show_progress: bool = True) -> dict[str, Observer]:
    """Runs `run` on every calibration batch; its outputs are the values `names`, in order."""
    obs = {n: Observer() for n in names}
    chunks = batches(data, batch)
    for i, feeds in enumerate(chunks):
        outs = run(feeds)
        for n, v in zip(names, outs, strict=True):
            obs[n].add(v)
        if show_progress:
            progress(i + 1, len(chunks), "calibrating")
    return obs
