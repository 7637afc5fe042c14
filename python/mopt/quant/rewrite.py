"""Static and dynamic int8 quantization as a graph rewrite onto the native int8 kernels.

    Conv|FusedConv{Relu|Clip}(x, W, b)      ==>  com.mopt.QConv(q(x), W_int8, b){scales}
    Gemm|MatMul|Fused*(x, W, b)             ==>  com.mopt.QMatMul(q(x), W_int8 [K, N], b){scales}
    Fused{MatMul|Gemm}(x, W, b, r)          ==>  Add(QMatMul(q(x), W_int8, b) -> float, r)   (no activation)
    MaxPool(x) between int8 layers          ==>  com.mopt.QMaxPool(q(x))    (same scale: max is monotonic)
    QMaxPool{2x2/2}(QConv(x) -> uint8)      ==>  com.mopt.QConv{max_pool_2x2}(x)
    Reshape|Transpose|Flatten|Squeeze|Unsqueeze(x) between int8 layers
                                            ==>  the same op on q(x)        (moves bytes: same scale)
    Concat(x1, x2, ...) between int8 layers ==>  Concat(q(x1), q(x2), ...) at the output's scale, which
                                                 the layers writing x1, x2, ... requantize to
    x entering an int8 layer from float     ==>  QuantizeLinear(x)           (once per value)

An int8 layer writes uint8 (requantized in its epilogue) when every reader of its output is an
int8 layer too, else float (dequantized in its epilogue), so quantize/dequantize happen only at
float/int boundaries. Weights: symmetric int8 per output channel. Activations: asymmetric uint8
per tensor from calibration. Bias stays float in the IR; the kernel rounds it to int32 in
accumulator units (x_scale * w_scale) when it loads. Dynamic mode: MatMul/Gemm only, weights
ahead of time, the input's range measured on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mopt.errors import InvalidArgumentError
from mopt.ir.dtypes import DType
from mopt.ir.graph import Graph, Node, Value
from mopt.quant import accum
from mopt.quant.calibrate import fake_quant, qparams

CONV_OPS = ("Conv", "FusedConv")
MATMUL_OPS = ("Gemm", "FusedGemm", "MatMul", "FusedMatMul")
CONV_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad")


@dataclass
class Target:
    """A node the int8 kernels can run, with its weights in the kernel's layout."""

    node: Node
    kind: str  # "conv" | "matmul" | "maxpool" | "move"
    w: np.ndarray | None = None  # conv: [M, C/g, KH, KW]; matmul: [K, N]
    bias: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    residual: Value | None = None  # matmul: a fused residual (input 3), added after the int8 layer

    @property
    def x(self) -> Value:
        return self.node.inputs[0]  # type: ignore[return-value]

    @property
    def y(self) -> Value:
        return self.node.outputs[0]


# ops that only move elements: between int8 layers they move the uint8 values, scale unchanged
MOVE_OPS = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze")
# int8 in, int8 out, no weights: a pool or a move at its input's scale; a Concat at its output's,
# which the layers writing its inputs requantize to (they take any scale)
PASSTHROUGH = ("maxpool", "move", "concat")


def _const(node: Node, i: int) -> np.ndarray | None:
    v = node.inputs[i] if len(node.inputs) > i else None
    return None if v is None else v.const


def _activation(node: Node) -> dict[str, Any] | None:
    act = node.attr("activation")
    if act is None:
        return {}
    if act == "Relu":
        return {"activation": "Relu"}
    if act == "Clip":
        return {"activation": "Clip", "activation_alpha": float(node.attr("activation_alpha", -3.4e38)),
                "activation_beta": float(node.attr("activation_beta", 3.4e38))}
    return None


def as_target(node: Node) -> Target | str:
    """The node as an int8 target, or the reason it stays float."""
    op = node.op_type
    dom_ok = node.domain in ("", "com.mopt")
    if not dom_ok or op not in (*CONV_OPS, *MATMUL_OPS, "MaxPool", *MOVE_OPS, "Concat"):
        return "no int8 kernel"
    x = node.inputs[0] if node.inputs else None
    if x is None or x.dtype != DType.FLOAT:
        return "input is not float32"
    if op == "Concat":
        if node.domain != "" or any(v is None or v.dtype != DType.FLOAT or v.is_const for v in node.inputs):
            return "no int8 kernel"
        return Target(node, "concat", attrs={"axis": int(node.attr("axis", 0))})
    if op in MOVE_OPS:
        return Target(node, "move") if node.domain == "" else "no int8 kernel"
    if op == "MaxPool":
        if len(node.outputs) > 1 and (node.outputs[1].uses or node.outputs[1].is_graph_output):
            return "MaxPool indices are used"
        ks = node.attr("kernel_shape", [])
        if len(ks) != 2:
            return "not a 2-D MaxPool"
        attrs = {k: node.attrs[k] for k in ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad") if k in node.attrs}
        return Target(node, "maxpool", attrs=attrs)
    act = _activation(node)
    if act is None:
        return f"fused activation {node.attr('activation')} has no int8 epilogue"
    if op in CONV_OPS:
        if node.attr("maxpool_2x2", 0):
            return "a fused max pool (-O3) has no int8 form"
        if node.attr("shuffle_groups", 0):
            return "a fused channel shuffle (-O3) has no int8 form"
        w = _const(node, 1)
        if w is None or w.ndim != 4:
            return "weights are not a constant 4-D tensor"
        if len(node.inputs) > 3 and node.inputs[3] is not None and node.inputs[3].dtype != DType.FLOAT:
            return "the fused residual is not float32"
        b = _const(node, 2)
        if len(node.inputs) > 2 and node.inputs[2] is not None and b is None:
            return "bias is not constant"
        group = int(node.attr("group", 1))
        if group != 1 and not (w.shape[1] == 1 and group == w.shape[0]) and w.shape[1] < 4:
            return f"grouped convolution with {w.shape[1]} input channels per group (the int8 GEMM takes 4+)"
        attrs = {k: node.attrs[k] for k in CONV_ATTRS if k in node.attrs}
        return Target(node, "conv", w.astype(np.float32), None if b is None else b.astype(np.float32).reshape(-1), {**attrs, **act})
    w = _const(node, 1)
    if w is None or w.ndim != 2:
        return "B is not a constant 2-D matrix"
    if float(node.attr("alpha", 1.0)) != 1.0:
        return "alpha != 1"
    residual = node.inputs[3] if len(node.inputs) > 3 else None
    if residual is not None:
        # QMatMul has no residual input: the add is emitted after it, which is exact only when no
        # activation comes between, and only when the residual has the product's own shape (a
        # FusedGemm may read a [batch, seq, N] residual flattened)
        if act:
            return "a fused residual under an activation has no int8 epilogue"
        if residual.dtype != DType.FLOAT or residual.shape is None or node.outputs[0].shape is None \
                or list(residual.shape) != list(node.outputs[0].shape):
            return "the fused residual does not have the product's shape"
    b = None
    if op in ("Gemm", "FusedGemm"):
        if int(node.attr("transA", 0)):
            return "transA"
        if x.rank != 2:
            return "A is not 2-D"
        if int(node.attr("transB", 0)):
            w = w.T
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            c = _const(node, 2)
            if c is None or float(node.attr("beta", 1.0)) != 1.0 or c.size != w.shape[1] or (c.ndim == 2 and c.shape[0] != 1):
                return "C is not a constant per-column bias"
            b = c.reshape(-1)
    else:
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            c = _const(node, 2)
            if c is None or c.size != w.shape[1]:
                return "bias is not constant"
            b = c.reshape(-1)
    return Target(node, "matmul", np.ascontiguousarray(w, np.float32), None if b is None else b.astype(np.float32), dict(act),
                  residual)


def quantize_weights(w: np.ndarray, axis: int) -> tuple[np.ndarray, list[float]]:
    """Symmetric int8 per channel along `axis` ([-127, 127], so -w is representable)."""
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=red) if w.size else np.zeros(w.shape[axis])
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, [float(s) for s in scale]


def find_targets(graph: Graph) -> tuple[list[Target], dict[str, str]]:
    targets, skipped = [], {}
    for node in graph.nodes:
        t = as_target(node)
        if isinstance(t, Target):
            targets.append(t)
        elif node.op_type in (*CONV_OPS, *MATMUL_OPS):
            skipped[node.name] = t
    return targets, skipped


def observed_values(targets: list[Target]) -> list[Value]:
    """The float values whose ranges static quantization needs."""
    seen: dict[int, Value] = {}
    for t in targets:
        if t.kind == "concat":
            seen.setdefault(id(t.y), t.y)  # its inputs take its output's scale
        elif t.kind in PASSTHROUGH:
            seen.setdefault(id(t.x), t.x)  # its int8 input may come from a float op
        else:
            for v in (t.x, t.y, *t.node.inputs[3:4]):
                if v is not None and not v.is_const:
                    seen.setdefault(id(v), v)
    return list(seen.values())


def bias_overflows(t: Target, x_range: tuple[float, float]) -> bool:
    """True when the bias, in accumulator units (x_scale * w_scale), with the input zero point's
    correction, does not leave the int32 accumulator the kernels' headroom (accum.fits; activations
    that have decayed to 1e-20 make it astronomically large)."""
    if t.w is None:
        return False
    sx, zx = qparams(*x_range)
    wq, sw = quantize_weights(t.w, 0 if t.kind == "conv" else 1)
    if t.kind == "conv":
        group = int(t.node.attr("group", 1))
        depthwise = t.w.shape[1] == 1 and group == t.w.shape[0] > 1
        wsum = np.zeros(t.w.shape[0]) if depthwise else wq.reshape(wq.shape[0], -1).astype(np.float64).sum(axis=1)
    else:
        wsum = wq.astype(np.float64).sum(axis=0)
    return not accum.fits(t.bias, np.float64(sx) * np.asarray(sw, np.float64), zx, wsum)


def quantize_static_graph(graph: Graph, ranges: Mapping[str, tuple[float, float]], exclude: set[str] = frozenset(),
                          reasons: dict[str, str] | None = None) -> list[str]:
    """Rewrites the graph onto int8 kernels; returns the names of the nodes it quantized. `reasons`
    receives why eligible layers were left in float."""
    targets, _ = find_targets(graph)
    compute = {id(t.node): t for t in targets if t.kind not in PASSTHROUGH and t.node.name not in exclude
               and t.x.name in ranges and t.y.name in ranges}
    for key, t in list(compute.items()):
        if bias_overflows(t, ranges[t.x.name]):
            del compute[key]
            if reasons is not None:
                reasons[t.node.name] = "bias overflows int32 at this input scale"
    pools = {id(t.node): t for t in targets if t.kind in PASSTHROUGH and t.node.name not in exclude
             and (t.y if t.kind == "concat" else t.x).name in ranges}
    concats = {k for k, t in pools.items() if t.kind == "concat"}

    def readers_int8(v: Value, members: set[int]) -> bool:
        # read only as the data input of int8 layers (a residual input needs the float value); every
        # input of a Concat is data
        return not v.is_graph_output and bool(v.uses) and all(
            id(n) in members and (i == 0 or id(n) in concats) for n, i in v.uses)

    def bindable(t: Target, members: set[int], bound: dict[int, Value]) -> bool:
        # a Concat's inputs take its scale: each must come from a layer that can write any scale (or
        # from float, quantized at it), and no other Concat may claim it
        return all(not (v.producer is not None and id(v.producer) in members and id(v.producer) in pools)
                   and bound.get(id(v), t.y) is t.y for v in t.node.inputs)  # type: ignore[union-attr]

    # pools, moves and Concats stay int8 only between int8 readers (fixpoint: one may feed another)
    members = set(compute) | set(pools)
    bound: dict[int, Value] = {}  # a Concat input -> the Concat output whose scale it takes
    changed = True
    while changed:
        changed = False
        bound = {}
        for pid, t in list(pools.items()):
            if pid not in members:
                continue
            if not readers_int8(t.y, members) or (t.kind == "concat" and not bindable(t, members, bound)):
                members.discard(pid)
                changed = True
            elif t.kind == "concat":
                bound.update({id(v): t.y for v in t.node.inputs})  # type: ignore[union-attr]
    pools = {k: v for k, v in pools.items() if k in members}
    if not compute:
        return []

    def params(v: Value) -> tuple[float, int]:
        if id(v) in bound:
            return params(bound[id(v)])
        p = v.producer
        if p is not None and id(p) in pools and pools[id(p)].kind != "concat":
            return params(p.inputs[0])  # type: ignore[arg-type]
        lo, hi = ranges[alias.get(v.name, v.name)]
        return qparams(lo, hi)

    alias: dict[str, str] = {}  # a dequantized output's name -> the name it was calibrated under

    qmap: dict[int, tuple[Value, float, int]] = {}

    def quantized(x: Value, before: Node) -> tuple[Value, float, int]:
        if id(x) not in qmap:
            s, z = params(x)
            q = graph.new_value(x.name + "_u8", DType.UINT8, x.shape)
            graph.make_node("QuantizeLinear", [x, graph.add_const(np.array(s, np.float32), x.name + "_scale"),
                                               graph.add_const(np.array(z, np.uint8), x.name + "_zp")],
                            outputs=[q], name=x.name + "_quantize", before=before)
            qmap[id(x)] = (q, s, z)
        return qmap[id(x)]

    done: list[Node] = []
    for node in list(graph.nodes):
        t = compute.get(id(node)) or pools.get(id(node))
        if t is None:
            continue
        if t.kind == "concat":
            y = graph.new_value(t.y.name + "_u8", DType.UINT8, t.y.shape)
            ins = [quantized(v, node)[0] for v in node.inputs]  # type: ignore[arg-type]
            graph.make_node("Concat", ins, dict(node.attrs), outputs=[y], name=node.name, before=node)
            qmap[id(t.y)] = (y, *params(t.y))
            done.append(node)
            continue
        xq, sx, zx = quantized(t.x, node)
        if t.kind in PASSTHROUGH:
            y = graph.new_value(t.y.name + "_u8", DType.UINT8, t.y.shape)
            if t.kind == "maxpool":
                graph.make_node("QMaxPool", [xq], dict(t.attrs), outputs=[y], domain="com.mopt", name=node.name, before=node)
            else:
                graph.make_node(node.op_type, [xq, *node.inputs[1:]], dict(node.attrs), outputs=[y], name=node.name,
                                before=node)
            qmap[id(t.y)] = (y, sx, zx)
            done.append(node)
            continue
        residual = t.node.inputs[3] if t.kind == "conv" and len(t.node.inputs) > 3 else None
        out_u8 = readers_int8(t.y, members) and residual is None and t.residual is None
        axis = 0 if t.kind == "conv" else 1
        wq, sw = quantize_weights(t.w, axis)  # type: ignore[arg-type]
        attrs: dict[str, Any] = {**t.attrs, "x_scale": sx, "x_zero_point": zx, "w_scale": sw}
        sy, zy = params(t.y)
        if out_u8:
            attrs.update(y_scale=sy, y_zero_point=zy)
        y = graph.new_value(t.y.name + ("_u8" if out_u8 else "_deq"), DType.UINT8 if out_u8 else DType.FLOAT, t.y.shape)
        ins = [xq, graph.add_const(wq, node.name + "_w_int8")]
        if t.bias is not None or residual is not None:
            ins.append(None if t.bias is None else graph.add_const(t.bias, node.name + "_bias"))
        if residual is not None:
            ins.append(residual)
        graph.make_node("QConv" if t.kind == "conv" else "QMatMul", ins, attrs, outputs=[y], domain="com.mopt",
                        name=node.name, before=node)
        y = _add_residual(graph, t, y, node)
        if out_u8:
            qmap[id(t.y)] = (y, sy, zy)
        else:
            orig = alias.get(t.y.name, t.y.name)
            graph.replace_all_uses(t.y, y)  # (a graph output keeps its name: y may be renamed)
            alias[y.name] = orig
        done.append(node)
    graph.remove_nodes(done)
    fuse_qconv_readers(graph)
    graph.prune_constants()
    return [n.name for n in done if id(n) in compute]


def _mean_keepdims(node: Node, rank: int) -> bool | None:
    """keepdims when `node` averages a rank-4 value over exactly its two spatial axes, else None."""
    if node.domain != "":
        return None
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return None
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        if not node.inputs[1].is_const:
            return None
        axes = [int(a) for a in np.asarray(node.inputs[1].const).reshape(-1)]
    else:
        axes = [int(a) for a in node.attr("axes", [])]
    if sorted(a % rank for a in axes) != [2, 3]:
        return None
    return bool(node.attr("keepdims", 1))


def fuse_qconv_mean(graph: Graph) -> int:
    """ReduceMean{axes 2, 3} | GlobalAveragePool(QConv(x) -> float) ==> QConv{global_mean, keepdims}(x),
    for a group=1 QConv without a residual whose float output only the mean reads: the kernel
    averages each image's output while it is in cache instead of writing it out for a separate
    pass to read back. Returns how many it fused."""
    fused = 0
    for red in list(graph.nodes):
        x = red.inputs[0] if red.inputs else None
        conv = x.producer if x is not None else None
        if conv is None or conv.domain != "com.mopt" or conv.op_type != "QConv" or conv.attr("global_mean", 0):
            continue
        if x.dtype != DType.FLOAT or x.shape is None or len(x.shape) != 4:
            continue
        keep = _mean_keepdims(red, 4)
        if keep is None or len(x.uses) != 1 or x.is_graph_output:
            continue
        if int(conv.attr("group", 1)) != 1 or (len(conv.inputs) > 3 and conv.inputs[3] is not None):
            continue
        y = red.outputs[0]
        out = graph.new_value(y.name + "_mean", y.dtype, y.shape)
        graph.make_node("QConv", list(conv.inputs), {**dict(conv.attrs), "global_mean": 1, "keepdims": int(keep)},
                        outputs=[out], domain="com.mopt", name=conv.name, before=conv)
        graph.replace_all_uses(y, out)
        graph.remove_nodes([red, conv])
        fused += 1
    return fused


def _is_pool_2x2(node: Node, x: Value) -> bool:
    """`node` is a QMaxPool with a 2x2 window, stride 2, no padding or dilation, whose output is
    the floor-mode one (ceil_mode 0, or an even H and W)."""
    if node.domain != "com.mopt" or node.op_type != "QMaxPool":
        return False
    a = node.attr
    if list(a("kernel_shape", [])) != [2, 2] or list(a("strides", [1, 1])) != [2, 2]:
        return False
    if any(int(p) != 0 for p in a("pads", [0, 0, 0, 0])) or any(int(d) != 1 for d in a("dilations", [1, 1])):
        return False
    if a("auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID"):
        return False
    if int(a("ceil_mode", 0)):
        return x.shape is not None and len(x.shape) == 4 and all(isinstance(d, int) and d % 2 == 0 for d in x.shape[2:])
    return True


def fuse_qconv_pool(graph: Graph) -> int:
    """QMaxPool{2x2, stride 2}(QConv(x) -> uint8) ==> QConv{max_pool_2x2}(x), for a QConv that is not
    depthwise, has no residual or global mean, and whose output only the pool reads: the kernel
    pools in registers before it requantizes (the requantization is monotonic, so the values are
    the same), and the full-size output is never written. Returns how many it fused."""
    fused = 0
    for pool in list(graph.nodes):
        x = pool.inputs[0] if pool.inputs else None
        conv = x.producer if x is not None else None
        if conv is None or conv.domain != "com.mopt" or conv.op_type != "QConv" or not _is_pool_2x2(pool, x):
            continue
        if x.dtype != DType.UINT8 or len(x.uses) != 1 or x.is_graph_output:
            continue
        if conv.attr("global_mean", 0) or conv.attr("max_pool_2x2", 0) or (len(conv.inputs) > 3 and conv.inputs[3] is not None):
            continue
        w = conv.inputs[1]
        group = int(conv.attr("group", 1))
        if w is None or not w.is_const or (group > 1 and w.const.shape[1] == 1 and group == w.const.shape[0]):
            continue  # (depthwise)
        y = pool.outputs[0]
        out = graph.new_value(y.name + "_conv", y.dtype, y.shape)
        graph.make_node("QConv", list(conv.inputs), {**dict(conv.attrs), "max_pool_2x2": 1},
                        outputs=[out], domain="com.mopt", name=conv.name, before=conv)
        graph.replace_all_uses(y, out)
        graph.remove_nodes([pool, conv])
        fused += 1
    return fused


def fuse_qconv_readers(graph: Graph) -> int:
    """The QConv fusions of what reads its output (a pool, a spatial mean); how many it made."""
    return fuse_qconv_pool(graph) + fuse_qconv_mean(graph)


def _add_residual(graph: Graph, t: Target, y: Value, before: Node) -> Value:
    """y + the target's fused residual (a float Add after the int8 layer), or y when it has none."""
    if t.residual is None:
        return y
    s = graph.new_value(t.y.name + "_res", DType.FLOAT, t.y.shape)
    graph.make_node("Add", [y, t.residual], outputs=[s], name=before.name + "_residual", before=before)
    return s


def quantize_dynamic_graph(graph: Graph) -> list[str]:
    """MatMul/Gemm with constant weights ==> QMatMul{dynamic}: int8 weights, input quantized per run."""
    targets, _ = find_targets(graph)
    done: list[Node] = []
    for t in targets:
        if t.kind != "matmul":
            continue
        node = t.node
        wq, sw = quantize_weights(t.w, 1)  # type: ignore[arg-type]
        y = graph.new_value(t.y.name + "_deq", DType.FLOAT, t.y.shape)
        ins = [t.x, graph.add_const(wq, node.name + "_w_int8")]
        if t.bias is not None:
            ins.append(graph.add_const(t.bias, node.name + "_bias"))
        graph.make_node("QMatMul", ins, {**t.attrs, "dynamic": 1, "w_scale": sw}, outputs=[y], domain="com.mopt",
                        name=node.name, before=node)
        graph.replace_all_uses(t.y, _add_residual(graph, t, y, node))
        done.append(node)
    graph.remove_nodes(done)
    graph.prune_constants()
    return [n.name for n in done]


# -- per-layer error ----------------------------------------------------------------------------
def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64).reshape(-1)
    err = float(np.sum((ref - np.asarray(got, np.float64).reshape(-1)) ** 2))
    sig = float(np.sum(ref**2))
    if err == 0:
        return float("inf")
    return 10.0 * np.log10(max(sig, 1e-30) / err)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def layer_error(t: Target, captured: Mapping[str, np.ndarray], ranges: Mapping[str, tuple[float, float]], out_u8: bool,
                run: Callable[[Graph, dict[str, np.ndarray]], np.ndarray]) -> tuple[float, float]:
    """SQNR (dB) and cosine of this layer alone quantized (input, weights, output) vs its fp32 output."""
    x, y = captured[t.x.name], captured[t.y.name]
    g = Graph("layer")
    g.opset = dict(t.node.graph.opset)
    feeds = {"x": x}
    ins: list[Value | None] = [g.add_input("x", DType.FLOAT, x.shape)]
    for v in t.node.inputs[1:]:
        if v is not None and not v.is_const:  # a fused residual: fed its recorded value
            feeds["r"] = captured[v.name]
            ins.append(g.add_input("r", DType.FLOAT, feeds["r"].shape))
            continue
        ins.append(None if v is None else g.add_const(v.const, "c"))  # type: ignore[arg-type]
    node = g.make_node(t.node.op_type, ins, dict(t.node.attrs), domain=t.node.domain, name=t.node.name)
    node.outputs[0].dtype = DType.FLOAT
    node.outputs[0].shape = y.shape
    g.outputs = [node.outputs[0]]
    names = quantize_static_graph(g, {"x": ranges[t.x.name], node.outputs[0].name: ranges[t.y.name]})
    if not names:
        raise InvalidArgumentError(f"layer '{t.node.name}' could not be quantized on its own")
    got = run(g, feeds)
    if out_u8:
        got = fake_quant(got, *qparams(*ranges[t.y.name]))
    return sqnr_db(y, got), cosine(y, got)
