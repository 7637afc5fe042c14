"""Deterministic random test data."""

from __future__ import annotations

import numpy as np

ISAS = ["scalar", "avx2", "avx512"]


def random_input(
    shape: tuple[int, ...], dtype: type | np.dtype = np.float32, seed: int = 0, low: float = -2.0, high: float = 2.0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = np.dtype(dtype)
    if d.kind == "f":
        return rng.uniform(low, high, shape).astype(d)
    if d.kind in "iu":
        return rng.integers(int(low), int(high) + 1, shape).astype(d)
    if d.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    raise TypeError(f"no random data for {d}")


def available_isas() -> list[str]:
    from mopt import _C

    return list(_C.available_isas())
