"""Structured (channel) pruning of ONNX models: a smaller dense model, valid ONNX, faster anywhere.

Analysis walks the graph once and gives every channel of every tensor an id:

    Conv(group=1) / Gemm / MatMul with constant weights   ->  fresh ids for its output channels (a *source*)
    Relu, Clip, BatchNormalization, pools, depthwise Conv  ->  output channels = input channels
    Add/Mul/... of two channel tensors (residuals, GELU)   ->  the two channels at each index are unioned
    Concat on the channel axis                             ->  the inputs' ids, concatenated
    ReduceMean over non-channel axes, Flatten, Reshape     ->  the ids move to the new channel axis
    Conv / Gemm / MatMul reading a channel tensor           ->  a *consumer*: its weight loses the input columns
    anything else, and graph outputs                       ->  the channels are pinned (never pruned)

Channels unioned together form one *class*: a class is kept or removed as a whole, so residual
additions, concatenations and depthwise groups stay consistent. Removing a class is exactly the
same as zeroing its input columns in every consumer (`zero_channels` builds that model, the tests
compare the two).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mopt.errors import InvalidArgumentError, InvalidModelError

PASS_THROUGH = {
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Erf",
    "Gelu", "Identity", "Dropout", "Neg", "Abs", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "PRelu",
}  # fmt: skip
BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum"}
REDUCE = {"ReduceMean", "ReduceMax", "ReduceSum", "ReduceMin"}


@dataclass
class _Slice:
    """A constant input of a node that loses entries along `axis` when channels of `tensor` go."""

    node: int  # index into graph.node
    input: int  # which input of the node holds the constant
    axis: int  # axis of the constant to slice
    tensor: str  # tensor whose channel ids decide what is kept


@dataclass
class Source:
    """A node that makes channels: its output channels can be removed."""

    node: int
    name: str
    op: str
    channels: int


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, n: int) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return list(range(start, start + n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class ChannelAnalysis:
    """What can be pruned in a model, and how the channels of its tensors relate."""

    model: onnx.ModelProto
    ids: dict[str, tuple[int, list[int]]]  # tensor -> (channel axis, channel id per index)
    sources: list[Source]
    source_ids: dict[int, list[int]]  # source node index -> ids of its output channels
    slices: list[_Slice]
    consumers: list[tuple[int, str]]  # (node index, input tensor) of Conv/Gemm/MatMul reading channel tensors
    pinned: dict[int, str]  # class root -> why it cannot be pruned
    uf: _UnionFind
    group_updates: list[tuple[int, str]] = field(default_factory=list)  # depthwise convs: (node, input tensor)

    def root(self, cid: int) -> int:
        return self.uf.find(cid)

    def classes(self) -> dict[int, list[tuple[int, int]]]:
        """Class root -> [(source node, output channel)] of the source channels in it."""
        out: dict[int, list[tuple[int, int]]] = {}
        for n, ids in self.source_ids.items():
            for c, cid in enumerate(ids):
                out.setdefault(self.root(cid), []).append((n, c))
        return out

    def components(self) -> list[list[int]]:
        """Prunable units that share classes: lists of source node indices, each sorted."""
        parent = {n: n for n in self.source_ids}

        def find(a: int) -> int:
            while parent[a] != a:
                a = parent[a]
            return a

        for members in self.classes().values():
            first = find(members[0][0])
            for n, _ in members[1:]:
                r = find(n)
                if r != first:
                    parent[max(r, first)] = min(r, first)
                    first = min(r, first)
        comps: dict[int, list[int]] = {}
        for n in self.source_ids:
            comps.setdefault(find(n), []).append(n)
        return [sorted(v) for _, v in sorted(comps.items())]

    def prunable_classes(self, component: Sequence[int]) -> list[int]:
        """Roots of the classes of a component that may be removed, in order of first appearance."""
        seen: dict[int, None] = {}
        for n in component:
            for cid in self.source_ids[n]:
                r = self.root(cid)
                if r not in self.pinned:
                    seen[r] = None
        return list(seen)


def _consts(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as e:
        raise InvalidModelError(f"shape inference failed on the model to prune: {e}") from None
    out: dict[str, list[int | None]] = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for t in g.initializer:
        out[t.name] = list(t.dims)
    return out


def analyze(model: onnx.ModelProto) -> ChannelAnalysis:
    """Channel ids of every tensor, the sources, the consumers and what is pinned (see module doc)."""
    g = model.graph
    consts = _consts(model)
    shapes = _shapes(model)
    uses: dict[str, int] = {}
    for node in g.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    uf = _UnionFind()
    ids: dict[str, tuple[int, list[int]]] = {}
    sources: list[Source] = []
    source_ids: dict[int, list[int]] = {}
    slices: list[_Slice] = []
    consumers: list[tuple[int, str]] = []
    group_updates: list[tuple[int, str]] = []
    pin: dict[int, str] = {}

    def pin_tensor(name: str, why: str) -> None:
        if name in ids:
            for cid in ids[name][1]:
                pin.setdefault(cid, why)

    def const_ok(name: str) -> bool:
        # a weight we slice must be a constant read by this node alone
        return name in consts and uses.get(name, 0) == 1 and name not in {i.name for i in g.input}

    def rank(name: str) -> int | None:
        s = shapes.get(name)
        return len(s) if s is not None else None

    for k, node in enumerate(g.node):
        op, ins, outs = node.op_type, list(node.input), list(node.output)
        label = f"'{node.name or outs[0]}' ({op})"
        x = ins[0] if ins else ""
        handled: set[str] = set()
        if node.domain not in ("", "ai.onnx"):
            pass
        elif op == "Conv" and len(ins) >= 2 and const_ok(ins[1]) and (len(ins) < 3 or not ins[2] or const_ok(ins[2])):
            w = consts[ins[1]]
            group = int(_attr(node, "group", 1))  # type: ignore[arg-type]
            if group == 1:
                if x in ids and ids[x][0] == 1:
                    slices.append(_Slice(k, 1, 1, x))
                    consumers.append((k, x))
                    handled.add(x)
                cids = uf.new(int(w.shape[0]))
                ids[outs[0]] = (1, cids)
                sources.append(Source(k, node.name or outs[0], op, int(w.shape[0])))
                source_ids[k] = cids
                slices.append(_Slice(k, 1, 0, outs[0]))
                if len(ins) > 2 and ins[2]:
                    slices.append(_Slice(k, 2, 0, outs[0]))
            elif x in ids and ids[x][0] == 1 and group == len(ids[x][1]) and w.shape[0] == group:
                # depthwise with multiplier 1: channel c out depends on channel c in only
                ids[outs[0]] = ids[x]
                slices.append(_Slice(k, 1, 0, x))
                if len(ins) > 2 and ins[2]:
                    slices.append(_Slice(k, 2, 0, x))
                group_updates.append((k, x))
                handled.add(x)
        elif op == "Gemm" and len(ins) >= 2 and const_ok(ins[1]) and not _attr(node, "transA", 0):
            b = consts[ins[1]]
            trans_b = bool(_attr(node, "transB", 0))
            c_ok = len(ins) < 3 or not ins[2] or const_ok(ins[2])
            if x in ids and ids[x][0] == 1:
                slices.append(_Slice(k, 1, 1 if trans_b else 0, x))
                consumers.append((k, x))
                handled.add(x)
            if c_ok:
                n = int(b.shape[0] if trans_b else b.shape[1])
                c = consts[ins[2]] if len(ins) > 2 and ins[2] else None
                if c is None or c.size == 1 or (c.shape[-1] == n and c.size == n):
                    cids = uf.new(n)
                    ids[outs[0]] = (1, cids)
                    sources.append(Source(k, node.name or outs[0], op, n))
                    source_ids[k] = cids
                    slices.append(_Slice(k, 1, 0 if trans_b else 1, outs[0]))
                    if c is not None and c.size == n and n > 1:
                        slices.append(_Slice(k, 2, c.ndim - 1, outs[0]))
        elif op == "MatMul" and len(ins) == 2 and const_ok(ins[1]) and consts[ins[1]].ndim == 2:
            b = consts[ins[1]]
            r = rank(x)
            if x in ids and r is not None and ids[x][0] == r - 1:
                slices.append(_Slice(k, 1, 0, x))
                consumers.append((k, x))
                handled.add(x)
            if r is not None and r >= 2:
                cids = uf.new(int(b.shape[1]))
                ids[outs[0]] = (r - 1, cids)
                sources.append(Source(k, node.name or outs[0], op, int(b.shape[1])))
                source_ids[k] = cids
                slices.append(_Slice(k, 1, 1, outs[0]))
        elif op in PASS_THROUGH and x in ids:
            extra = [i for i in ins[1:] if i]
            if op == "PRelu":
                slope = consts.get(ins[1]) if len(ins) > 1 else None
                if slope is None or (slope.size != 1 and not const_ok(ins[1])):
                    extra = ["?"]
                elif slope.size != 1:
                    axis = ids[x][0] - (rank(x) or 0) + slope.ndim
                    if axis < 0 or slope.shape[axis] != len(ids[x][1]):
                        extra = ["?"]
                    else:
                        slices.append(_Slice(k, 1, axis, x))
                        extra = []
            if all(e in consts and consts[e].size == 1 for e in extra):
                ids[outs[0]] = ids[x]
                handled.add(x)
        elif op == "BatchNormalization" and x in ids and ids[x][0] == 1 and all(const_ok(i) for i in ins[1:5]):
            ids[outs[0]] = ids[x]
            slices.extend(_Slice(k, j, 0, x) for j in range(1, 5))
            handled.add(x)
        elif op in BINARY and len(ins) == 2 and len(outs) == 1:
            a, b = ins
            ro = rank(outs[0])
            if a in ids and b in ids and ro is not None and rank(a) == ro and rank(b) == ro:
                (ax, ia), (bx, ib) = ids[a], ids[b]
                if ax == bx and len(ia) == len(ib):
                    for p, q in zip(ia, ib, strict=True):
                        uf.union(p, q)
                    ids[outs[0]] = ids[a]
                    handled.update((a, b))
            elif (a in ids) != (b in ids) and ro is not None:
                t, other, j = (a, b, 1) if a in ids else (b, a, 0)
                if rank(t) == ro and other in consts:
                    cv = consts[other]
                    axis = ids[t][0] - ro + cv.ndim
                    if cv.size == 1 or axis < 0 or cv.shape[axis] == 1:
                        ids[outs[0]] = ids[t]
                        handled.add(t)
                    elif cv.shape[axis] == len(ids[t][1]) and const_ok(other):
                        ids[outs[0]] = ids[t]
                        slices.append(_Slice(k, j, axis, t))
                        handled.add(t)
        elif op in REDUCE and x in ids:
            r = rank(x)
            axes = _attr(node, "axes", None)
            if axes is None and len(ins) > 1 and ins[1]:
                axes = consts.get(ins[1])
                axes = None if axes is None else [int(v) for v in np.asarray(axes).ravel()]
            if r is not None and axes is not None and len(axes) > 0:
                axes = [int(a) % r for a in axes]  # type: ignore[union-attr]
                ax = ids[x][0]
                if ax not in axes:
                    keep = bool(_attr(node, "keepdims", 1))
                    new_ax = ax if keep else ax - sum(1 for a in axes if a < ax)
                    ids[outs[0]] = (new_ax, ids[x][1])
                    handled.add(x)
        elif op in ("Flatten", "Reshape") and x in ids and ids[x][0] == 1:
            s = shapes.get(x)
            ok = s is not None and all(isinstance(d, int) and d > 0 for d in s[2:])
            if op == "Flatten":
                ok = ok and int(_attr(node, "axis", 1)) == 1  # type: ignore[arg-type]
            else:
                target = consts.get(ins[1])
                ok = ok and target is not None and target.size == 2 and int(target.ravel()[1]) == -1
                ok = ok and int(target.ravel()[0]) in (0, s[0] if s and s[0] else -2)  # type: ignore[union-attr,index]
            if ok:
                spatial = int(np.prod(s[2:])) if s and len(s) > 2 else 1  # type: ignore[arg-type]
                ids[outs[0]] = (1, [cid for cid in ids[x][1] for _ in range(spatial)])
                handled.add(x)
        elif op == "Concat" and any(i in ids for i in ins):
            r = rank(outs[0])
            axis = int(_attr(node, "axis", 0))  # type: ignore[arg-type]
            axis = axis % r if r else axis
            if all(i in ids and ids[i][0] == axis for i in ins if i in ids) and all(shapes.get(i) for i in ins):
                merged: list[int] = []
                for i in ins:
                    if i in ids:
                        merged.extend(ids[i][1])
                    else:
                        n = shapes[i][axis]
                        if not isinstance(n, int):
                            merged = []
                            break
                        fresh = uf.new(n)
                        for cid in fresh:
                            pin.setdefault(cid, f"input '{i}' of concat {label} has no prunable producer")
                        merged.extend(fresh)
                if merged:
                    ids[outs[0]] = (axis, merged)
                    handled.update(i for i in ins if i in ids)
        for i in ins:
            if i in ids and i not in handled:
                pin_tensor(i, f"read by {label}, which pruning does not rewrite")
    for o in g.output:
        pin_tensor(o.name, f"graph output '{o.name}'")
    pinned: dict[int, str] = {}
    for cid, why in pin.items():
        pinned.setdefault(uf.find(cid), why)
    return ChannelAnalysis(model, ids, sources, source_ids, slices, consumers, pinned, uf, group_updates)


def _keep_index(an: ChannelAnalysis, tensor: str, removed: set[int]) -> np.ndarray:
    return np.array([i for i, cid in enumerate(an.ids[tensor][1]) if an.root(cid) not in removed], dtype=np.int64)


def _check_removed(an: ChannelAnalysis, removed: set[int]) -> None:
    bad = [r for r in removed if r in an.pinned]
    if bad:
        raise InvalidArgumentError(f"channel class {bad[0]} cannot be pruned: {an.pinned[bad[0]]}")
    for n, cids in an.source_ids.items():
        if all(an.root(c) in removed for c in cids):
            raise InvalidArgumentError(f"pruning would remove every output channel of '{an.model.graph.node[n].name}'")


def apply_pruning(an: ChannelAnalysis, removed: set[int], means: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A new model without the channel classes in `removed` (class roots from `an`).

    means: tensor -> mean value per channel index (from calibration data). A consumer reading a
    tensor listed there gets the removed channels' mean contribution added to its bias, so a
    removed channel counts as its average instead of as zero (exact for Gemm/MatMul and 1x1 Conv
    without padding; for padded Conv the border pixels get the interior's compensation).
    """
    _check_removed(an, removed)
    model = onnx.ModelProto()
    model.CopyFrom(an.model)
    g = model.graph
    holders = _holders(model)
    arrays: dict[str, np.ndarray] = {}
    if means:
        _compensate(an, model, holders, arrays, removed, means)
    for s in an.slices:
        name = g.node[s.node].input[s.input]
        arr = arrays.get(name)
        if arr is None:
            arr = numpy_helper.to_array(holders[name])
        arrays[name] = np.take(arr, _keep_index(an, s.tensor, removed), axis=s.axis)
    for name, arr in arrays.items():
        holders[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    for k, x in an.group_updates:
        node = g.node[k]
        for a in node.attribute:
            if a.name == "group":
                a.i = len(_keep_index(an, x, removed))
    del g.value_info[:]
    try:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:  # a bug in the analysis, never a user error
        raise InvalidModelError(f"pruning produced an invalid model (please report): {e}") from None
    return model


def _compensate(
    an: ChannelAnalysis,
    model: onnx.ModelProto,
    holders: dict[str, onnx.TensorProto],
    arrays: dict[str, np.ndarray],
    removed: set[int],
    means: dict[str, np.ndarray],
) -> None:
    g = model.graph
    for k, x in an.consumers:
        if x not in means:
            continue
        node = g.node[k]
        gone = np.array([i for i, cid in enumerate(an.ids[x][1]) if an.root(cid) in removed], dtype=np.int64)
        if gone.size == 0 or node.op_type == "MatMul":
            continue  # MatMul has no bias input to carry the compensation
        s = next(s for s in an.slices if s.node == k and s.tensor == x)
        w = numpy_helper.to_array(holders[node.input[1]]).astype(np.float64)
        m = means[x][gone].astype(np.float64)
        wg = np.take(w, gone, axis=s.axis)  # Conv: [out, gone, kh, kw]; Gemm: [n, gone] or [gone, n]
        if node.op_type == "Conv":
            delta = np.einsum("oi...,i->o...", wg, m).reshape(wg.shape[0], -1).sum(1)
        elif s.axis == 1:
            delta = wg @ m
        else:
            delta = m @ wg
        delta *= float(_attr(node, "alpha", 1.0)) if node.op_type == "Gemm" else 1.0  # type: ignore[arg-type]
        n = delta.shape[0]
        if len(node.input) > 2 and node.input[2]:
            bname = node.input[2]
            b = numpy_helper.to_array(holders[bname]).astype(np.float64)
            if node.op_type == "Gemm":
                b = b * float(_attr(node, "beta", 1.0))  # type: ignore[arg-type]
                for a in node.attribute:
                    if a.name == "beta":
                        a.f = 1.0
            if b.size != n:
                if k in an.source_ids:
                    continue  # a scalar bias on a source layer: leave it (cannot slice a broadcast bias)
                b = np.broadcast_to(b.reshape(-1), (n,)).copy()
            b = b.reshape(-1) + delta
            holders[bname].CopyFrom(numpy_helper.from_array(b.astype(np.float32).reshape(-1), bname))
        else:
            if k in an.source_ids:
                continue  # the new bias would need slicing as well; keep zero semantics here
            bname = f"{node.name or node.output[0]}_prune_bias"
            t = numpy_helper.from_array(delta.astype(np.float32), bname)
            g.initializer.append(t)
            holders[bname] = g.initializer[-1]
            while len(node.input) < 2:
                node.input.append("")
            node.input.append(bname)
            if node.op_type == "Gemm":
                for a in node.attribute:
                    if a.name == "beta":
                        a.f = 1.0


def zero_channels(an: ChannelAnalysis, removed: set[int]) -> onnx.ModelProto:
    """The original model with the input columns of `removed` zeroed in every consumer.

    Same shapes as the original; its outputs equal those of `apply_pruning(an, removed)`.
    """
    _check_removed(an, removed)
    model = onnx.ModelProto()
    model.CopyFrom(an.model)
    g = model.graph
    holders = _holders(model)
    for k, x in an.consumers:
        s = next(s for s in an.slices if s.node == k and s.tensor == x)
        name = g.node[k].input[s.input]
        arr = numpy_helper.to_array(holders[name]).copy()
        gone = np.array([i for i, cid in enumerate(an.ids[x][1]) if an.root(cid) in removed], dtype=np.int64)
        idx: list[object] = [slice(None)] * arr.ndim
        idx[s.axis] = gone
        arr[tuple(idx)] = 0
        holders[name].CopyFrom(numpy_helper.from_array(arr, name))
    return model


def _holders(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Name -> the TensorProto holding a constant (initializer or Constant node), editable in place."""
    out = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = n.attribute[0].t
    return out
