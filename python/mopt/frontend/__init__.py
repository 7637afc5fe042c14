"""ONNX in and out of mopt's IR."""

from mopt.frontend.onnx_export import export_onnx
from mopt.frontend.onnx_import import import_onnx, load_onnx
from mopt.frontend.opset import CANONICAL_OPSET

__all__ = ["CANONICAL_OPSET", "export_onnx", "import_onnx", "load_onnx"]
