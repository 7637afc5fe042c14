"""ONNX -> mopt IR.

Loading checks what a user can get wrong (a missing file, a file that is not ONNX, missing
external data) and says so. Models below the canonical opset are upgraded with
onnx.version_converter so passes and kernels see one set of semantics. Shapes come from ONNX
shape inference (best effort: unknown shapes stay unknown, they are resolved at run time).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from mopt.errors import InvalidArgumentError, InvalidModelError
from mopt.frontend.opset import CANONICAL_OPSET, upgrade_opset
from mopt.ir.graph import Attr, Graph, Value

ModelSource = str | os.PathLike | bytes | bytearray | memoryview | onnx.ModelProto


def load_onnx(source: ModelSource) -> onnx.ModelProto:
    """Reads an ONNX model (with its external data) from a path, bytes or a ModelProto."""
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, bytes | bytearray | memoryview):
        model = onnx.ModelProto()
        try:
            model.ParseFromString(bytes(source))
        except Exception as e:
            raise InvalidModelError(f"the bytes given are not an ONNX model: {e}") from None
        _check_looks_like_onnx(model, "the bytes given")
        return model
    path = Path(os.fspath(source))
    if not path.exists():
        raise InvalidArgumentError(f"no such model file: '{path}'")
    if path.is_dir():
        raise InvalidArgumentError(f"'{path}' is a directory, not an ONNX model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise InvalidModelError(f"'{path}' is not an ONNX model (it cannot be parsed: {_first_line(e)})") from None
    _check_looks_like_onnx(model, f"'{path}'")
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as e:
        raise InvalidModelError(f"'{path}': cannot read its external data ({_first_line(e)})") from None
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_looks_like_onnx(model: onnx.ModelProto, what: str) -> None:
    # protobuf parses many byte strings without complaint; a real model has a graph with outputs.
    if model.ir_version <= 0 or not model.HasField("graph") or len(model.graph.output) == 0:
        raise InvalidModelError(f"{what} is not an ONNX model (no IR version or no graph outputs)")


def import_onnx(
    source: ModelSource,
    *,
    canonical_opset: int = CANONICAL_OPSET,
    overridable_initializers: bool = False,
    infer_shapes: bool = True,
) -> Graph:
    """Builds the IR of an ONNX model.

    overridable_initializers: for models that list initializers among their graph inputs (IR < 4),
    keep those as inputs with defaults (the caller may feed them) instead of folding them as
    constants.
    """
    model = load_onnx(source)
    if len(model.functions) > 0:
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    # Opset conversion and shape inference serialize the model; they need the weights' shapes,
    # not their bytes, so they run on a skeleton and the IR takes the weights from `originals`.
    model, originals = _skeleton(model)
    model, opset_note = upgrade_opset(model, canonical_opset)
    if infer_shapes:
        model = _infer_shapes_with_proxies(model)
    types = _collect_types(model.graph)
    graph = Graph(model.graph.name or "main")
    graph.opset = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
    graph.doc = model.graph.doc_string
    graph.metadata = {p.key: p.value for p in model.metadata_props}
    graph.metadata["mopt.ir_version"] = str(model.ir_version)
    if opset_note:
        graph.metadata["mopt.opset_note"] = opset_note
    _build_graph(model.graph, graph, types, {}, overridable_initializers, originals)
    return graph


_STUB = "mopt-detached-weight"
_STUB_MIN_BYTES = 4096


def _skeleton(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """A copy of the model whose large initializers are stubs (external-data markers)."""
    big = [t for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL and t.ByteSize() > _STUB_MIN_BYTES]
    if not big:
        return model, {}
    sk = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(sk, field, getattr(model, field))
    sk.opset_import.extend(model.opset_import)
    sk.metadata_props.extend(model.metadata_props)
    g, src = sk.graph, model.graph
    g.name, g.doc_string = src.name, src.doc_string
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    originals: dict[str, onnx.TensorProto] = {}
    big_names = {t.name for t in big}
    for t in src.initializer:
        if t.name in big_names:
            stub = g.initializer.add()
            stub.name, stub.data_type = t.name, t.data_type
            stub.dims.extend(t.dims)
            stub.data_location = onnx.TensorProto.EXTERNAL
            stub.external_data.add(key="location", value=_STUB)
            originals[t.name] = t
        else:
            g.initializer.add().CopyFrom(t)
    return sk, originals


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.ByteSize() > 1_800_000_000:  # past protobuf's 2 GB limit shape inference cannot run in memory
        return model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return model  # shapes then stay unknown until run time


# Default-domain ops whose output has the type and shape of input 0 but that onnx's shape inference
# leaves untyped (GroupNormalization is a function op without an inference function): without a
# type, the node and everything after it would miss the native kernels.
_SAME_AS_INPUT = frozenset({"GroupNormalization"})


def _infer_shapes_with_proxies(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference with each _SAME_AS_INPUT node standing in as an Identity of its input 0 (one
    inference pass, however long a chain of them), then the real nodes put back."""
    idx = [
        i for i, n in enumerate(model.graph.node)
        if n.domain in ("", "ai.onnx") and n.op_type in _SAME_AS_INPUT and n.input and len(n.output) == 1
    ]
    if not idx:
        return _infer_shapes(model)
    proxy = onnx.ModelProto()
    proxy.CopyFrom(model)
    for i in idx:
        node = proxy.graph.node[i]
        del node.input[1:]
        node.ClearField("attribute")
        node.op_type, node.domain = "Identity", ""
    inferred = _infer_shapes(proxy)
    for i in idx:
        inferred.graph.node[i].CopyFrom(model.graph.node[i])
    return inferred


def _tensor_type(tp: onnx.TypeProto) -> tuple[int | None, tuple | None]:
    if not tp.HasField("tensor_type"):
        return None, None
    tt = tp.tensor_type
    dtype = int(tt.elem_type) or None
    if not tt.HasField("shape"):
        return dtype, None
    dims: list[Any] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dtype, tuple(dims)


def _collect_types(gp: onnx.GraphProto) -> dict[str, tuple[int | None, tuple | None]]:
    types: dict[str, tuple[int | None, tuple | None]] = {}
    for vi in list(gp.value_info) + list(gp.input) + list(gp.output):
        types[vi.name] = _tensor_type(vi.type)
    return types


def _to_array(t: onnx.TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(t)
    except Exception as e:
        raise InvalidModelError(f"tensor '{t.name}' cannot be read: {_first_line(e)}") from None


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    """The tensor a Constant node produces."""
    for a in node.attribute:
        if a.name == "value":
            return _to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
        if a.name == "value_string":
            return np.array(a.s.decode("utf-8", "replace"), dtype=object)
        if a.name == "value_strings":
            return np.array([s.decode("utf-8", "replace") for s in a.strings], dtype=object)
        if a.name == "sparse_value":
            from onnx import numpy_helper as nh

            values = nh.to_array(a.sparse_tensor.values)
            dense = np.zeros(tuple(a.sparse_tensor.dims), dtype=values.dtype)
            idx = nh.to_array(a.sparse_tensor.indices)
            if idx.ndim == 1:
                dense.reshape(-1)[idx] = values
            else:
                dense[tuple(idx.T)] = values
            return dense
    raise InvalidModelError(f"Constant node '{node.name}' has no value attribute")


def _convert_attr(a: onnx.AttributeProto, graph: Graph, scope: dict[str, Value], types: dict, overridable: bool) -> Attr:
    T = onnx.AttributeProto
    if a.ref_attr_name:
        raise InvalidModelError(f"attribute '{a.name}' refers to a function attribute outside a function")
    if a.type == T.INT:
        return Attr("int", int(a.i))
    if a.type == T.FLOAT:
        return Attr("float", float(a.f))
    if a.type == T.STRING:
        try:
            return Attr("string", a.s.decode("utf-8"))
        except UnicodeDecodeError:
            return Attr("string", bytes(a.s))
    if a.type == T.INTS:
        return Attr("ints", [int(x) for x in a.ints])
    if a.type == T.FLOATS:
        return Attr("floats", [float(x) for x in a.floats])
    if a.type == T.STRINGS:
        return Attr("strings", [s.decode("utf-8", "replace") for s in a.strings])
    if a.type == T.TENSOR:
        return Attr("tensor", _to_array(a.t))
    if a.type == T.TENSORS:
        return Attr("tensors", [_to_array(t) for t in a.tensors])
    if a.type == T.GRAPH:
        return Attr("graph", _subgraph(a.g, graph, scope, types, overridable))
    if a.type == T.GRAPHS:
        return Attr("graphs", [_subgraph(g, graph, scope, types, overridable) for g in a.graphs])
    return Attr("proto", onnx.AttributeProto.FromString(a.SerializeToString()))


def _subgraph(gp: onnx.GraphProto, parent: Graph, scope: dict[str, Value], types: dict, overridable: bool) -> Graph:
    sub = Graph(gp.name or "body", parent=parent)
    sub_types = dict(types)
    sub_types.update(_collect_types(gp))
    _build_graph(gp, sub, sub_types, scope, overridable)
    return sub


def _build_graph(
    gp: onnx.GraphProto,
    graph: Graph,
    types: dict[str, tuple[int | None, tuple | None]],
    outer: dict[str, Value],
    overridable: bool,
    originals: dict[str, onnx.TensorProto] | None = None,
) -> None:
    scope: dict[str, Value] = dict(outer)
    input_names = {i.name for i in gp.input}
    originals = originals or {}

    def payload(t: onnx.TensorProto) -> onnx.TensorProto:
        stubbed = any(e.key == "location" and e.value == _STUB for e in t.external_data)
        return originals[t.name] if stubbed and t.name in originals else t

    initializers: dict[str, np.ndarray] = {t.name: _to_array(payload(t)) for t in gp.initializer}
    for st in gp.sparse_initializer:
        from onnx import numpy_helper as nh

        values = nh.to_array(st.values)
        dense = np.zeros(tuple(st.dims), dtype=values.dtype)
        idx = nh.to_array(st.indices)
        if idx.ndim == 1:
            dense.reshape(-1)[idx] = values
        else:
            dense[tuple(idx.T)] = values
        initializers[st.values.name] = dense
    for name, arr in initializers.items():
        if name in input_names and overridable:
            continue
        scope[name] = graph.add_const(arr, name, exact_name=True)
    for inp in gp.input:
        if inp.name in initializers and not overridable:
            continue
        dtype, shape = _tensor_type(inp.type)
        if inp.name in scope and scope[inp.name].graph is graph:
            raise InvalidModelError(f"graph input '{inp.name}' is defined twice")
        v = graph.add_input(inp.name, dtype, shape)
        if inp.name in initializers:
            graph.input_defaults[inp.name] = initializers[inp.name]
        scope[inp.name] = v
    for k, np_ in enumerate(gp.node):
        label = f"node '{np_.name or f'#{k}'}' ({np_.op_type})"
        if np_.op_type == "Constant" and np_.domain in ("", "ai.onnx") and len(np_.output) == 1:
            arr = _constant_value(np_)
            out = np_.output[0]
            if out in scope and scope[out].graph is graph:
                raise InvalidModelError(f"{label} redefines value '{out}'")
            scope[out] = graph.add_const(arr, out, exact_name=True)
            continue
        inputs: list[Value | None] = []
        for name in np_.input:
            if name == "":
                inputs.append(None)
                continue
            if name not in scope:
                raise InvalidModelError(f"{label} reads '{name}', which no node, input or initializer defines")
            inputs.append(scope[name])
        attrs = {a.name: _convert_attr(a, graph, scope, types, overridable) for a in np_.attribute}
        outputs: list[Value] = []
        for name in np_.output:
            if name == "":
                outputs.append(graph.new_value("unused"))
                continue
            if name in scope and scope[name].graph is graph:
                raise InvalidModelError(f"{label} redefines value '{name}'")
            dtype, shape = types.get(name, (None, None))
            v = Value(graph, graph.names.claim(name), dtype, shape)
            outputs.append(v)
            scope[name] = v
        node = graph.make_node(np_.op_type, inputs, attrs, outputs=outputs, domain=np_.domain, name=np_.name)
        node.doc = np_.doc_string
    for out in gp.output:
        if out.name not in scope:
            raise InvalidModelError(f"graph output '{out.name}' is never computed")
        v = scope[out.name]
        dtype, shape = _tensor_type(out.type)
        if v.dtype is None and dtype is not None:
            v.dtype = _as_dtype(dtype)
        if v.shape is None and shape is not None and not v.is_const:
            v.shape = shape
        graph.outputs.append(v)


def _as_dtype(code: int):
    from mopt.ir.dtypes import DType

    try:
        return DType(code)
    except ValueError:
        return None
