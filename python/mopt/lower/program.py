"""IR -> program: value slots, kernel calls with typed attributes, and the weight blob.

Each node becomes one kernel call. Nodes the native runtime has no kernel for (or cannot run with
these dtypes or semantics) become `mopt.Fallback` calls that carry a one-node ONNX model, run by
onnx.reference at run time; the compile report lists them. Constant inputs that a kernel packs
(Conv weights, Gemm/MatMul B) are packed here, by the kernel's own packer, for the target ISA.

With fp16=True, float32 constants (weights, packed or plain, and other tables of 16 or more
values) are stored as float16, halving the blob; the runtime widens them back to float32 once,
when a session loads the program, so every kernel still computes and accumulates in float32.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from mopt import _C
from mopt.frontend.opset import CANONICAL_OPSET
from mopt.ir.dtypes import DType, c_contiguous
from mopt.passes.fusion.conv_rank import conv_is_native, spatial_rank
from mopt.passes.precision import half_or_none, store_activations_f16
from mopt.ir.graph import Attr, Graph, Node, Value
from mopt.lower import block_sparse, mopt_format
from mopt.reference import encode_model, node_inputs, node_model

FALLBACK_OP = "Fallback"
FALLBACK_DOMAIN = "mopt"


def native_ops() -> dict[tuple[str, str], set[int]]:
    table: dict[tuple[str, str], set[int]] = {}
    for domain, op, dtypes in _C.native_ops():
        table[(domain, op)] = set(dtypes)
    return table


@dataclass
class Placement:
    """Why a node runs where it runs."""

    node: str
    op: str
    native: bool
    reason: str = ""
    runnable: bool = True  # False: neither a native kernel nor the reference fallback can run it


@dataclass
class CompiledModel:
    """A lowered program, ready to be written as model.mopt or loaded into a Session."""

    program: dict[str, Any]
    chunks: list[tuple[int, np.ndarray | bytes]]
    blob_size: int
    placements: list[Placement]
    isa: str
    graph: Graph | None = None
    level: int = 2
    records: list[Any] = field(default_factory=list)
    seconds: float = 0.0
    sparse_choices: list[block_sparse.SparseChoice] = field(default_factory=list)
    fp16: bool = False  # some float32 constants are stored as float16

    @property
    def version(self) -> int:
        return mopt_format.FORMAT_VERSION_F16 if self.fp16 else mopt_format.FORMAT_VERSION

    @property
    def flags(self) -> int:
        return mopt_format.FLAG_NEEDS_FALLBACK if self.fallback_nodes else 0

    @property
    def fallback_nodes(self) -> list[Placement]:
        return [p for p in self.placements if not p.native]

    def save(self, path: str) -> int:
        """Writes model.mopt; returns its size in bytes."""
        with open(path, "wb") as f:
            return mopt_format.write(f, self.program, self.chunks, self.blob_size, self.flags, self.version)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        mopt_format.write(buf, self.program, self.chunks, self.blob_size, self.flags, self.version)
        return buf.getvalue()

    def fallback_summary(self) -> str:
        ops: dict[str, int] = {}
        for p in self.fallback_nodes:
            ops[p.op] = ops.get(p.op, 0) + 1
        return ", ".join(f"{op} x{n}" for op, n in sorted(ops.items()))


def _reference_knows(node: Node, opset: int) -> bool:
    """True when onnx.reference has an implementation the fallback can call."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    if domain not in ("", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training", "com.microsoft", "experimental"):
        return False
    return not (domain == "" and not onnx.defs.has(node.op_type, domain))


def _schema_changed(node: Node, opset: int) -> bool:
    """True when the node's semantics at `opset` differ from those at the canonical opset."""
    if node.domain != "" or opset >= CANONICAL_OPSET:
        return False
    try:
        old = onnx.defs.get_schema(node.op_type, opset, "").since_version
        new = onnx.defs.get_schema(node.op_type, CANONICAL_OPSET, "").since_version
    except Exception:
        return True
    return old != new


def _qdq_unsupported(node: Node) -> str:
    """The native QuantizeLinear/DequantizeLinear: float32 <-> uint8/int8 (and int32 in), per tensor or per axis."""
    if int(node.attr("block_size", 0) or 0):
        return "blocked quantization has no native kernel"
    q = node.outputs[0] if node.op_type == "QuantizeLinear" else node.inputs[0]
    if q is None or q.dtype not in (DType.UINT8, DType.INT8, DType.INT32) or (node.op_type == "QuantizeLinear" and q.dtype == DType.INT32):
        return "only uint8/int8 quantized types have a native kernel"
    scale = node.inputs[1] if len(node.inputs) > 1 else None
    if scale is None or scale.dtype != DType.FLOAT or (scale.rank is not None and scale.rank > 1):
        return "only float32 scalar or 1-D scales have a native kernel"
    return ""


def _declined(node: Node) -> str:
    """Why a node whose op has a native kernel still runs on the reference, or "" when it does not."""
    if node.op_type == "DFT" and node.domain == "":
        inverse = node.attrs.get("inverse")
        onesided = node.attrs.get("onesided")
        if inverse is not None and inverse.value and not (onesided is not None and onesided.value):
            # numpy transforms complex64 in single precision; the native kernel's double-precision
            # result differs from it by more than the conformance atol on outputs near zero
            return "the complex inverse DFT stays on the reference (single-precision round-off)"
    return ""


def placement(node: Node, table: dict[tuple[str, str], set[int]], opset: int) -> Placement:
    def no(reason: str) -> Placement:
        if not _reference_knows(node, opset):
            where = f"domain '{node.domain}'" if node.domain else "the ONNX default domain"
            return Placement(
                node.name,
                node.qualified_op,
                False,
                f"{reason}; no operator '{node.op_type}' exists in {where} for the reference fallback either",
                runnable=False,
            )
        return Placement(node.name, node.qualified_op, False, reason)

    key = (node.domain, node.op_type)
    if key not in table:
        return no("no native kernel")
    if node.op_type in ("Conv", "FusedConv") and not conv_is_native(node):
        return no(f"{spatial_rank(node)}-D windows: the native kernels take 1-D and 2-D")
    training = _training_mode(node)
    if training:
        return no(training)
    if node.op_type == "PRelu" and node.domain == "" and not _broadcastable(node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None):
        return no("the slope does not broadcast numpy-style (a legacy per-channel slope, as old exporters wrote it)")
    if any(True for _ in node.subgraphs()):
        why = _control_flow_declined(node, opset)
        if why:
            return no(why)
    elif _schema_changed(node, opset):
        return no(f"opset {opset} semantics differ from opset {CANONICAL_OPSET}")
    used_outputs = [v for v in node.outputs if v.uses or v.is_graph_output]
    for v in [*node.inputs, *used_outputs]:
        if v is not None and (v.dtype is None or v.dtype in (DType.STRING, DType.UNDEFINED)):
            return no(f"value '{v.name}' has {'no known' if v.dtype is None else 'string'} type")
    if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.domain == "":
        why = _qdq_unsupported(node)
        if why:
            return no(why)
    declined = _declined(node)
    if declined:
        return no(declined)
    dtypes = table[key]
    first = node.inputs[0] if node.inputs else None
    if dtypes and first is not None and int(first.dtype) not in dtypes:  # type: ignore[arg-type]
        return no(f"no native kernel for {first.dtype.name.lower()} inputs")  # type: ignore[union-attr]
    return Placement(node.name, node.qualified_op, True)


CONTROL_FLOW_SINCE = {"If": 1, "Loop": 11, "Scan": 9}  # the versions the native kernels implement


def body_captures(node: Node) -> list[Value]:
    """The non-constant outer values the node's bodies read: every body takes them, in this order,
    after its own inputs (constants are stored in the blob and read directly)."""
    caps: list[Value] = []
    seen: set[int] = set()
    for g in node.subgraphs():
        for v in g.captured_values():
            if id(v) not in seen and not v.is_const:
                seen.add(id(v))
                caps.append(v)
    return caps


def _tensor_typed(v: Value | None) -> bool:
    return v is not None and v.dtype is not None and v.dtype not in (DType.STRING, DType.UNDEFINED)


def _control_flow_declined(node: Node, opset: int) -> str:
    """Why a node with subgraphs stays on the reference fallback, or "" when If/Loop/Scan run it."""
    since = CONTROL_FLOW_SINCE.get(node.op_type) if node.domain == "" else None
    if since is None:
        return "has subgraphs (only If, Loop and Scan run natively)"
    try:
        version = onnx.defs.get_schema(node.op_type, opset, "").since_version
    except Exception:
        version = 0
    if version < since:
        return f"{node.op_type}-{version} semantics differ from those of the native kernel ({node.op_type}-{since}+)"
    bodies = list(node.subgraphs())
    values = [x for x in node.inputs if x is not None] + list(node.outputs) + body_captures(node)
    for g in bodies:
        values += list(g.inputs) + list(g.outputs)
    for v in values:
        if not _tensor_typed(v):
            kind = "no known" if v.dtype is None else v.dtype.name.lower()
            return f"value '{v.name}' has {kind} type (the native {node.op_type} carries tensors only)"
    return ""


def _broadcastable(x: Value | None, y: Value | None) -> bool:
    """False only when both static shapes are known and numpy cannot broadcast y against x."""
    if x is None or y is None or x.shape is None or y.shape is None:
        return True
    for a, b in zip(reversed(x.shape), reversed(y.shape)):
        if isinstance(a, int) and isinstance(b, int) and a != b and a != 1 and b != 1:
            return False
    return True


def _training_mode(node: Node) -> str | None:
    """Why a node in training mode (batch statistics, random dropout) leaves the inference kernels."""
    if node.domain != "":
        return None
    if node.op_type == "BatchNormalization" and node.attr("training_mode", 0):
        return "training_mode=1 (batch statistics) has no native kernel"
    if node.op_type == "Dropout" and len(node.inputs) > 2 and node.inputs[2] is not None:
        t = node.inputs[2]
        if not t.is_const or t.const is None or bool(np.asarray(t.const).reshape(-1)[0]):
            return "training_mode may be true (random dropout) and has no native kernel"
    return None


def _tensor_json(arr: np.ndarray) -> dict[str, Any]:
    from mopt.ir.dtypes import from_numpy

    a = c_contiguous(arr)
    return {"dtype": int(from_numpy(a.dtype)), "shape": list(a.shape), "hex": a.tobytes().hex()}


def attr_json(a: Attr) -> Any:
    k, v = a.kind, a.value
    if k == "int":
        return int(v)
    if k == "float":
        return float(v)
    if k == "string":
        return v if isinstance(v, str) else v.decode("latin-1")
    if k == "ints":
        return [int(x) for x in v]
    if k == "floats":
        return [float(x) for x in v]
    if k == "strings":
        return [x if isinstance(x, str) else x.decode("latin-1") for x in v]
    if k == "tensor":
        return _tensor_json(v)
    if k == "tensors":
        return [_tensor_json(t) for t in v]
    raise ValueError(f"attribute kind {k} cannot go to a native kernel")


def _dims_json(v: Value) -> list[Any] | None:
    if v.shape is None:
        return None
    # a negative size is a shape inference could not settle (an uneven Split in a branch never taken)
    return [None if isinstance(d, int) and d < 0 else d if isinstance(d, int | str) else None for d in v.shape]


_GEMMS = ("Gemm", "MatMul", "FusedGemm", "FusedMatMul")


_VIEWS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")  # the runtime's aliases of their input


def _only_attention_reads(v: Value) -> bool:
    """Whether every reader of v, looking through views, is a fused attention."""
    readers = v.consumers()
    if not readers or v.is_graph_output:
        return False
    for r in readers:
        if r.domain == "com.mopt" and r.op_type == "Attention":
            continue
        if r.domain != "" or r.op_type not in _VIEWS or r.inputs[0] is not v or not _only_attention_reads(r.outputs[0]):
            return False
    return True


def _layout_hints(node: Node) -> dict[str, Any]:
    """What the compiler knows that a kernel uses to pick its data layout: for a convolution, the
    number of output pixels when the output shape is static (it decides which way round the GEMM
    goes, and so how the weights are packed); for a product that only fused attentions read (the
    Q/K/V projection), that its result is read at once (it is then stored through the caches)."""
    if node.op_type in _GEMMS and node.outputs:
        return {"_cache_c": 1} if _only_attention_reads(node.outputs[0]) else {}
    if node.op_type not in ("Conv", "FusedConv") or not node.outputs or node.outputs[0].shape is None:
        return {}
    spatial = list(node.outputs[0].shape)[2:]
    if not spatial or not all(isinstance(d, int) for d in spatial):
        return {}
    return {"_out_pixels": int(np.prod(spatial))}


def _semantic_hints(node: Node, opset: int) -> dict[str, Any]:
    """Defaults that changed between opsets without a schema the kernel could tell apart: DFT's
    axis defaults to 1 before opset 20 (an attribute) and to -2 from it on (an input)."""
    if node.op_type == "DFT" and node.domain == "":
        return {"_axis_default": -2 if opset >= 20 else 1}
    return {}


class _Blob:
    def __init__(self) -> None:
        self.chunks: list[tuple[int, np.ndarray | bytes]] = []
        self.size = 0

    def add(self, data: np.ndarray | bytes) -> tuple[int, int]:
        n = data.nbytes if isinstance(data, np.ndarray) else len(data)
        off = mopt_format.align(self.size)
        self.chunks.append((off, data))
        self.size = off + n
        return off, n


F16_MIN_SIZE = 16  # smaller float constants (scalars, clip bounds, eps) stay float32: they save nothing


def as_f16(arr: np.ndarray) -> np.ndarray | None:
    """`arr` as float16 when it is float32 storage worth halving and every finite value stays finite
    (a -3.4e38 mask would become -inf, which changes arithmetic); else None."""
    if arr.dtype != np.float32 or arr.size < F16_MIN_SIZE:
        return None
    return half_or_none(arr)


def lower(graph: Graph, *, isa: str, sparse_max_density: float | None = None, fp16: bool = False,
          fp16_activations: bool = False, f32_values: frozenset[str] = frozenset()) -> CompiledModel:
    """Lowers a graph to a program for a target ISA (the one whose kernels pack the weights).

    sparse_max_density: constant MatMul/Gemm weights whose 1x8 block density is at or below it run
    the block-sparse kernel (default: block_sparse.MAX_DENSITY, measured; 0 turns it off).
    fp16: store float32 constants as float16 (see the module docstring).
    fp16_activations: also store the activations between float16-capable ops as float16
    (mopt.passes.precision; the graph is rewritten in place); implies fp16. f32_values: the values
    whose producers stay float32 (measured out of float16's range).
    """
    limit = block_sparse.MAX_DENSITY if sparse_max_density is None else sparse_max_density
    table = native_ops()
    if fp16_activations:
        store_activations_f16(graph, table, f32_values)
    lowering = _Lowering(table, graph.opset, isa, limit, fp16 or fp16_activations)
    graph_json = lowering.graph_json(graph, [])
    defaults = []
    for name, arr in graph.input_defaults.items():
        a = c_contiguous(arr)
        off, n = lowering.blob.add(a)
        from mopt.ir.dtypes import from_numpy

        defaults.append({"name": name, "dtype": int(from_numpy(a.dtype)), "shape": list(a.shape), "offset": off, "nbytes": n})
    program = {
        "format": mopt_format.FORMAT_VERSION_F16 if lowering.stored_f16 else mopt_format.FORMAT_VERSION,
        "producer": "mopt 0.1.0",
        "isa": isa,
        "opset": {k: int(v) for k, v in graph.opset.items()},
        "graph": graph_json,
        "input_defaults": defaults,
    }
    blob = lowering.blob
    cm = CompiledModel(
        program, blob.chunks, mopt_format.align(blob.size), lowering.placements, isa, graph, fp16=lowering.stored_f16
    )
    cm.sparse_choices = lowering.sparse_choices
    return cm


class _Lowering:
    """Lowers a graph and, recursively, the bodies of its control-flow nodes into one program: each
    graph has its own value table, all of them share the weight blob."""

    def __init__(
        self, table: dict[tuple[str, str], set[int]], opsets: dict[str, int], isa: str, sparse_limit: float, fp16: bool
    ) -> None:
        self.table = table
        self.fp16 = fp16
        self.stored_f16 = False
        self.sparse_limit = sparse_limit
        self.sparse_choices: list[block_sparse.SparseChoice] = []
        self.opsets = opsets
        self.opset = opsets.get("", CANONICAL_OPSET)
        self.isa = isa
        self.blob = _Blob()
        self.placements: list[Placement] = []
        self.stored: dict[int, dict[str, Any]] = {}  # id(constant) -> its const entry (where its bytes are)
        self.packed: dict[tuple[int, str], dict[str, Any]] = {}  # (id(constant), format) -> packed bytes

    def _put(self, arr: np.ndarray) -> dict[str, Any]:
        """Adds bytes to the blob (as float16 when asked and lossless enough); the const entry."""
        half = as_f16(arr) if self.fp16 else None
        off, n = self.blob.add(arr if half is None else half)
        const: dict[str, Any] = {"offset": off, "nbytes": n}
        if half is not None:
            const["storage"] = "f16"
            self.stored_f16 = True
        return const

    def _store(self, v: Value) -> tuple[list[int], dict[str, Any]]:
        arr = c_contiguous(v.const)
        if arr.dtype == object:
            raise ValueError(f"string constant '{v.name}' cannot be stored in the weight blob")
        if id(v) not in self.stored:
            self.stored[id(v)] = self._put(arr)
        return list(arr.shape), dict(self.stored[id(v)])

    def graph_json(self, graph: Graph, captures: list[Value]) -> dict[str, Any]:
        """The program description of `graph`, whose inputs are its own followed by `captures` (the
        outer values a body reads)."""
        values: list[dict[str, Any]] = []
        ids: dict[int, int] = {}
        packed_ids: dict[tuple[int, str], int] = {}

        def value_id(v: Value) -> int:
            if id(v) in ids:
                return ids[id(v)]
            entry: dict[str, Any] = {"name": v.name, "dtype": int(v.dtype or 0)}
            if v.is_const:
                shape, const = self._store(v)
                entry["shape"] = shape
                entry["const"] = const
            elif v.shape is not None:
                entry["shape"] = _dims_json(v)
            ids[id(v)] = len(values)
            values.append(entry)
            return ids[id(v)]

        def packed_id(v: Value, node: Node, index: int, attrs: dict[str, Any]) -> int | None:
            arr = v.const
            if arr is None or arr.dtype != np.float32:
                return None
            res = _C.prepack(node.domain, node.op_type, json.dumps(attrs), index, c_contiguous(arr), int(DType.FLOAT), self.isa)
            if res is None:
                return None
            data, fmt = res
            if self.fp16 and fmt.startswith("wino43"):
                # Winograd filters in float16 would carry float16 rounding through the output
                # transform (30x the error of direct float16 weights): the plain filters are stored
                # as float16 and transformed when the session loads
                return None
            key = (id(v), fmt)
            if key not in packed_ids:
                if key not in self.packed:
                    self.packed[key] = self._put(np.frombuffer(data, np.float32))  # packed panels are float32
                packed_ids[key] = len(values)
                values.append(
                    {
                        "name": f"{v.name}@{fmt}",
                        "dtype": int(DType.FLOAT),
                        "shape": list(arr.shape),
                        "const": {**self.packed[key], "format": fmt},
                    }
                )
            return packed_ids[key]

        def out_id(v: Value) -> int:
            # an output nobody reads gets no slot: the kernel writes it to a throwaway buffer
            return value_id(v) if (v.uses or v.is_graph_output) else -1

        inputs = [value_id(v) for v in [*graph.inputs, *captures]]
        nodes_json: list[dict[str, Any]] = []
        for node in graph.nodes:
            place = placement(node, self.table, self.opset)
            self.placements.append(place)
            if place.native:
                attrs: dict[str, Any] = {}
                caps = body_captures(node)
                for k, a in node.attrs.items():
                    if a.kind == "graph":
                        attrs[k] = self.graph_json(a.value, caps)
                    else:
                        attrs[k] = attr_json(a)
                if caps:
                    attrs["_captures"] = len(caps)
                attrs.update(_layout_hints(node))
                attrs.update(_semantic_hints(node, self.opset))
                hints, choice = block_sparse.choose(node, self.sparse_limit)
                attrs.update(hints)
                if choice is not None:
                    self.sparse_choices.append(choice)
                ins: list[int] = []
                for i, x in enumerate(node.inputs):
                    if x is None:
                        ins.append(-1)
                        continue
                    pid = packed_id(x, node, i, attrs) if x.is_const else None
                    ins.append(pid if pid is not None else value_id(x))
                ins.extend(value_id(v) for v in caps)
                nodes_json.append(
                    {
                        "name": node.name,
                        "op": node.op_type,
                        "domain": node.domain,
                        "attrs": attrs,
                        "inputs": ins,
                        "outputs": [out_id(v) for v in node.outputs],
                    }
                )
            else:
                model = node_model(node, self.opsets)
                nodes_json.append(
                    {
                        "name": node.name,
                        "op": FALLBACK_OP,
                        "domain": FALLBACK_DOMAIN,
                        "attrs": {"onnx": encode_model(model), "op": node.qualified_op, "reason": place.reason},
                        "inputs": [-1 if x is None else value_id(x) for x in node_inputs(node)],
                        "outputs": [out_id(v) for v in node.outputs],
                    }
                )
        outputs = [value_id(v) for v in graph.outputs]
        return {"values": values, "nodes": nodes_json, "inputs": inputs, "outputs": outputs}


def iter_fallbacks(program: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for n in program["graph"]["nodes"]:
        if n["op"] == FALLBACK_OP and n.get("domain") == FALLBACK_DOMAIN:
            yield n
