"""Quantization: calibration, static and dynamic int8 passes onto the native int8 kernels."""

from mopt.quant.driver import LayerReport, QuantResult, quantize

__all__ = ["LayerReport", "QuantResult", "quantize"]
