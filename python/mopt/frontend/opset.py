"""The canonical opset: models below it are upgraded so every pass and kernel sees the semantics of
opset >= 18 (axes as inputs for Squeeze/Unsqueeze/Reduce*/Split, Clip bounds as inputs, Slice
starts/ends as inputs, single-axis Softmax)."""

from __future__ import annotations

import warnings

import onnx
from onnx import version_converter

CANONICAL_OPSET = 18


def default_opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def upgrade_opset(model: onnx.ModelProto, target: int = CANONICAL_OPSET) -> tuple[onnx.ModelProto, str]:
    """Returns the model at opset >= target when it can be converted, and a note when it cannot.

    A model that cannot be upgraded keeps its opset; the lowering then runs every op whose
    semantics changed through the reference fallback (correct, slower) and the note says so.
    """
    current = default_opset(model)
    if current >= target:
        return model, ""
    if model.ir_version < 4:
        # IR < 4 requires every initializer among the graph inputs; exporters often left them out,
        # and the converter then rejects the model. Their meaning is the same at IR 4.
        fixed = onnx.ModelProto()
        fixed.CopyFrom(model)
        fixed.ir_version = 4
        model = fixed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = version_converter.convert_version(model, target)
        return converted, ""
    except Exception as e:
        text = str(e).strip().splitlines()
        return model, f"opset {current} could not be upgraded to {target}: {text[0] if text else type(e).__name__}"
