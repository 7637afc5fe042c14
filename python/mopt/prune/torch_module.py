"""An ONNX graph as a torch.nn.Module whose float weights are trainable, and back again.

Covers the ops small CNNs and MLP heads use; anything else raises UnsupportedOpError naming the
node. Needs PyTorch (pip install 'mopt[distill]').
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from mopt.errors import UnsupportedOpError

TRAINABLE_INPUTS = {"Conv": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "BatchNormalization": (1, 2), "PRelu": (1,), "Add": (0, 1), "Mul": (0, 1)}


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads(pads: list[int] | None, nd: int) -> tuple[list[int], bool]:
    """ONNX pads [b1, b2, ..., e1, e2] -> (symmetric torch padding, or F.pad list, is_symmetric)."""
    pads = list(pads or [0] * (2 * nd))
    begin, end = pads[:nd], pads[nd:]
    if begin == end:
        return begin, True
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        out += [b, e]
    return out, False


class OnnxModule(torch.nn.Module):
    """Runs one ONNX graph in torch; `weights` are the float initializers of weight-like inputs."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        self.graph = model.graph
        self.nodes = list(model.graph.node)
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        trainable: set[str] = set()
        for n in self.nodes:
            if n.domain not in ("", "ai.onnx"):
                raise UnsupportedOpError(f"node '{n.name}' ({n.domain}.{n.op_type}): custom domains cannot be trained")
            if n.op_type not in OPS:
                raise UnsupportedOpError(
                    f"node '{n.name or n.output[0]}' ({n.op_type}): no torch translation for training; supported: {', '.join(sorted(OPS))}"
                )
            for i in TRAINABLE_INPUTS.get(n.op_type, ()):
                if i < len(n.input) and n.input[i] in inits and inits[n.input[i]].dtype == np.float32 and inits[n.input[i]].size > 1:
                    trainable.add(n.input[i])
        self.names = sorted(trainable)
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(torch.from_numpy(inits[k].copy())) for k in self.names])
        self.consts = {k: torch.from_numpy(np.array(v)) for k, v in inits.items() if k not in trainable}
        for n in self.nodes:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(n.attribute[0].t)))
        self.inputs = [i.name for i in model.graph.input if i.name not in inits]
        self.outputs = [o.name for o in model.graph.output]

    def forward(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        env: dict[str, Any] = dict(self.consts)
        env.update(zip(self.names, self.weights, strict=True))
        env.update(zip(self.inputs, xs, strict=True))
        for n in self.nodes:
            if n.op_type == "Constant":
                continue
            ins = [env[i] if i else None for i in n.input]
            try:
                outs = OPS[n.op_type](ins, _attrs(n))
            except UnsupportedOpError:
                raise
            except Exception as e:
                raise UnsupportedOpError(f"node '{n.name or n.output[0]}' ({n.op_type}) failed in torch: {e}") from None
            if not isinstance(outs, tuple):
                outs = (outs,)
            env.update(zip(n.output, outs, strict=False))
        return [env[o] for o in self.outputs]

    def write_back(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of `model` with the trained weights as its initializers."""
        out = onnx.ModelProto()
        out.CopyFrom(model)
        trained = {k: p.detach().cpu().numpy() for k, p in zip(self.names, self.weights, strict=True)}
        for t in out.graph.initializer:
            if t.name in trained:
                t.CopyFrom(numpy_helper.from_array(trained[t.name].astype(np.float32), t.name))
        return out


def _conv(ins: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    nd = w.dim() - 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedOpError("Conv auto_pad other than NOTSET")
    pad, sym = _pads(a.get("pads"), nd)
    if not sym:
        x, pad = F.pad(x, pad), [0] * nd
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, w, b, a.get("strides", 1), pad, a.get("dilations", 1), a.get("group", 1))


def _pool(kind: str) -> Any:
    def run(ins: list[Any], a: dict[str, Any]) -> torch.Tensor:
        x = ins[0]
        nd = x.dim() - 2
        k = a["kernel_shape"]
        pad, sym = _pads(a.get("pads"), nd)
        if not sym:
            x, pad = F.pad(x, pad, value=float("-inf") if kind == "max" else 0.0), [0] * nd
        s, ceil = a.get("strides", [1] * nd), bool(a.get("ceil_mode", 0))
        if kind == "max":
            return {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd](x, k, s, pad, a.get("dilations", 1), ceil)
        return {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd](x, k, s, pad, ceil, bool(a.get("count_include_pad", 0)))

    return run


def _gemm(ins: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x, w = ins[0], ins[1]
    if a.get("transA", 0):
        x = x.t()
    if a.get("transB", 0):
        w = w.t()
    y = a.get("alpha", 1.0) * (x @ w)
    if len(ins) > 2 and ins[2] is not None:
        y = y + a.get("beta", 1.0) * ins[2]
    return y


def _reduce(fn: Any) -> Any:
    def run(ins: list[Any], a: dict[str, Any]) -> torch.Tensor:
        x = ins[0]
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = [int(v) for v in ins[1].reshape(-1)]
        axes = list(range(x.dim())) if not axes else [int(v) % x.dim() for v in axes]
        return fn(x, dim=axes, keepdim=bool(a.get("keepdims", 1)))

    return run


def _reshape(ins: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x, shape = ins[0], [int(v) for v in ins[1].reshape(-1)]
    shape = [x.shape[i] if v == 0 and not a.get("allowzero", 0) else v for i, v in enumerate(shape)]
    return x.reshape(shape)


def _clip(ins: list[Any], a: dict[str, Any]) -> torch.Tensor:
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
    lo = None if lo is None else float(lo)
    hi = None if hi is None else float(hi)
    return torch.clamp(ins[0], lo, hi)


def _bn(ins: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x, s, b, m, v = ins[:5]
    return F.batch_norm(x, m, v, s, b, training=False, eps=a.get("epsilon", 1e-5))


OPS: dict[str, Any] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda i, a: i[0] @ i[1],
    "Relu": lambda i, a: F.relu(i[0]),
    "LeakyRelu": lambda i, a: F.leaky_relu(i[0], a.get("alpha", 0.01)),
    "Clip": _clip,
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "Tanh": lambda i, a: torch.tanh(i[0]),
    "Erf": lambda i, a: torch.erf(i[0]),
    "Gelu": lambda i, a: F.gelu(i[0], approximate="tanh" if a.get("approximate", b"none") in (b"tanh", "tanh") else "none"),
    "HardSigmoid": lambda i, a: torch.clamp(a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda i, a: F.hardswish(i[0]),
    "PRelu": lambda i, a: torch.where(i[0] >= 0, i[0], i[0] * i[1]),
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
    "Sqrt": lambda i, a: torch.sqrt(i[0]),
    "Pow": lambda i, a: torch.pow(i[0], i[1]),
    "Neg": lambda i, a: -i[0],
    "Identity": lambda i, a: i[0],
    "Dropout": lambda i, a: i[0],
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=tuple(range(2, i[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda i, a: i[0].amax(dim=tuple(range(2, i[0].dim())), keepdim=True),
    "ReduceMean": _reduce(torch.mean),
    "ReduceSum": _reduce(torch.sum),
    "Flatten": lambda i, a: i[0].reshape(int(np.prod(i[0].shape[: a.get("axis", 1)])), -1),
    "Reshape": _reshape,
    "Transpose": lambda i, a: i[0].permute(*(a.get("perm") or reversed(range(i[0].dim())))),
    "Concat": lambda i, a: torch.cat(list(i), dim=a["axis"]),
    "Softmax": lambda i, a: torch.softmax(i[0], dim=a.get("axis", -1)),
    "BatchNormalization": _bn,
    "Constant": lambda i, a: None,
}
