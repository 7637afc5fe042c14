"""The int8 kernels' accumulator headroom, checked before a layer is put on them.

A channel's bias is held in accumulator units (x_scale * w_scale) together with the input zero
point's correction, bias - x_zp * sum(w); the kernels refuse a layer where that exceeds half the
int32 range (the products need the other half). Quantizers consult this first and keep such a
layer float: its input scale has decayed to nothing (activations of ~1e-9), so the bias in those
units is astronomical.
"""

from __future__ import annotations

import numpy as np

LIMIT = 2147483647.0 / 2  # as the kernels' make_requant


def fits(bias: np.ndarray | None, unit: np.ndarray, x_zp: int, wsum: np.ndarray) -> bool:
    """Whether every channel's round(bias / unit) - x_zp * wsum stays within LIMIT. `unit` is
    x_scale * w_scale per channel; `wsum` the int8 weights summed per channel (zeros for a
    depthwise conv, whose kernel subtracts the zero point from its input instead)."""
    unit = np.asarray(unit, np.float64)
    b = np.zeros_like(unit) if bias is None else np.rint(np.asarray(bias, np.float64).reshape(-1) / unit)
    return bool(np.all(np.abs(b - float(x_zp) * np.asarray(wsum, np.float64)) < LIMIT))
