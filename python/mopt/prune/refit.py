"""Least-squares refit of the layers that lost input channels (needs calibration data).

For each consumer of pruned channels, in graph order: with the inputs the *pruned* model now
feeds it, solve (ridge-regularized normal equations) for the weights and bias that best
reproduce the *original* model's output of that layer on the calibration data. Later layers are
refit on inputs that already include the earlier refits, so errors do not pile up. Conv (2-D,
any group=1 geometry), Gemm and MatMul are refit; others keep the mean-compensated weights.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mopt.prune.structured import ChannelAnalysis, _keep_index

MAX_ROWS = 200_000  # rows of the regression (pixels x items); more are subsampled


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _im2col(x: np.ndarray, node: onnx.NodeProto, kh: int, kw: int) -> np.ndarray | None:
    """[N, C, H, W] -> [N * OH * OW, C * kh * kw] for the Conv's pads/strides/dilations."""
    if x.ndim != 4 or _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    pads = list(_attr(node, "pads", [0, 0, 0, 0]))  # type: ignore[call-overload]
    sh, sw = list(_attr(node, "strides", [1, 1]))  # type: ignore[call-overload]
    dh, dw = list(_attr(node, "dilations", [1, 1]))  # type: ignore[call-overload]
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    n, c, h, w = xp.shape
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, oh, ow, c, kh, kw), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
            cols[:, :, :, :, i, j] = patch.transpose(0, 2, 3, 1)
    return cols.reshape(n * oh * ow, c * kh * kw)


def _solve(a: np.ndarray, y: np.ndarray, bias: bool, ridge: float) -> tuple[np.ndarray, np.ndarray | None]:
    """min ||a w + b - y||^2 + ridge * trace-scaled ||w||^2; returns (w [K, M], b [M] or None)."""
    a64 = a.astype(np.float64)
    if bias:
        a64 = np.concatenate([a64, np.ones((a64.shape[0], 1))], 1)
    ata = a64.T @ a64
    lam = ridge * float(np.trace(ata)) / ata.shape[0]
    reg = np.eye(ata.shape[0]) * lam
    if bias:
        reg[-1, -1] = 0.0
    sol = np.linalg.solve(ata + reg, a64.T @ y.astype(np.float64))
    return (sol[:-1], sol[-1]) if bias else (sol, None)


def refit(
    original: onnx.ModelProto,
    an: ChannelAnalysis,
    pruned: onnx.ModelProto,
    removed: set[int],
    feeds: dict[str, np.ndarray],
    ridge: float = 1e-3,
    seed: int = 0,
) -> onnx.ModelProto:
    """`pruned` (from apply_pruning(an, removed)) with its consumers refit; a new model."""
    from mopt.prune.search import _run

    model = onnx.ModelProto()
    model.CopyFrom(pruned)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    rng = np.random.default_rng(seed)
    todo = [(k, x) for k, x in an.consumers if any(an.root(c) in removed for c in an.ids[x][1])]
    if not todo:
        return model
    targets = dict(zip([k for k, _ in todo], _run(original, feeds, [g.node[k].output[0] for k, _ in todo]), strict=True))
    for k, x in todo:
        node = g.node[k]
        if node.input[1] not in inits or (len(node.input) > 2 and node.input[2] and node.input[2] not in inits):
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        has_b = len(node.input) > 2 and bool(node.input[2])
        xin = _run(model, feeds, [x])[0]
        y = targets[k]
        if k in an.source_ids:  # this layer lost output channels too: fit the kept ones
            y = np.take(y, _keep_index(an, node.output[0], removed), axis=an.ids[node.output[0]][0])
        if node.op_type == "Conv":
            if int(_attr(node, "group", 1)) != 1:  # type: ignore[call-overload]
                continue
            cols = _im2col(xin, node, w.shape[2], w.shape[3]) if w.ndim == 4 else None
            if cols is None:
                continue
            ymat = y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])
            if has_b and numpy_helper.to_array(inits[node.input[2]]).size != w.shape[0]:
                continue
        elif node.op_type == "Gemm":
            cols, ymat = xin.reshape(-1, xin.shape[-1]), y.reshape(-1, y.shape[-1])
            if has_b and numpy_helper.to_array(inits[node.input[2]]).size != ymat.shape[1]:
                continue
        elif node.op_type == "MatMul":
            cols, ymat = xin.reshape(-1, xin.shape[-1]), y.reshape(-1, y.shape[-1])
        else:
            continue
        if cols.shape[0] > MAX_ROWS:
            pick = rng.choice(cols.shape[0], MAX_ROWS, replace=False)
            cols, ymat = cols[pick], ymat[pick]
        sol_w, sol_b = _solve(cols, ymat, has_b, ridge)
        if node.op_type == "Conv":
            new_w = sol_w.T.reshape(w.shape)
        elif node.op_type == "Gemm":
            alpha = float(_attr(node, "alpha", 1.0))  # type: ignore[arg-type]
            new_w = (sol_w.T if _attr(node, "transB", 0) else sol_w) / alpha
            if sol_b is not None:
                sol_b = sol_b / float(_attr(node, "beta", 1.0))  # type: ignore[arg-type]
        else:
            new_w = sol_w
        if new_w.shape != w.shape or not np.isfinite(new_w).all():
            continue
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(new_w.astype(np.float32), node.input[1]))
        if sol_b is not None:
            old_b = numpy_helper.to_array(inits[node.input[2]])
            inits[node.input[2]].CopyFrom(numpy_helper.from_array(sol_b.astype(np.float32).reshape(old_b.shape), node.input[2]))
    return model
