"""Quantization: calibration, static and dynamic int8 passes onto the native int8 kernels, and
QDQ models lowered onto the same kernels (qdq.py, part of the -O1 pipeline)."""

from __future__ import annotations

from typing import Any

__all__ = ["LayerReport", "QuantResult", "quantize"]


def __getattr__(name: str) -> Any:
    # lazy: the pass pipeline imports mopt.quant.qdq, and the driver imports the pipeline
    if name in __all__:
        from mopt.quant import driver

        return getattr(driver, name)
    raise AttributeError(name)
