"""mopt.Session: run a compiled model. The API follows onnxruntime.InferenceSession:

sess = mopt.Session("model.onnx")            # compiles at -O2 in memory
sess = mopt.Session("model.mopt")            # maps a compiled model
outputs = sess.run(None, {"x": array})
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mopt import _C
from mopt.errors import InvalidArgumentError
from mopt.ir.dtypes import DType, c_contiguous, from_numpy, onnx_type_string, to_numpy
from mopt.ir.dtypes import name as dtype_name
from mopt.lower import mopt_format

if TYPE_CHECKING:
    from mopt.lower.program import CompiledModel


def _is_compiled(obj: Any) -> bool:
    """isinstance(obj, CompiledModel) without importing the compiler (and onnx) to ask."""
    program = sys.modules.get("mopt.lower.program")
    return program is not None and isinstance(obj, program.CompiledModel)


@dataclass(frozen=True)
class NodeArg:
    """An input or output of a model, as onnxruntime.NodeArg describes it."""

    name: str
    type: str
    shape: list[int | str | None] | None
    dtype: np.dtype

    def describe(self) -> str:
        return f"'{self.name}' ({self.dtype} {self.shape})"


def _node_arg(desc: tuple[str, int, list | None]) -> NodeArg:
    name, code, dims = desc
    try:
        np_dtype = to_numpy(code)
    except TypeError:
        np_dtype = np.dtype(object)
    return NodeArg(name, onnx_type_string(code) if code else "tensor(undefined)", dims, np_dtype)


def fallback_runner(name: str, model_b64: str):
    """Makes the callable the native runtime calls for a node without a native kernel."""
    from mopt.reference import NodeRunner, decode_model

    runner = NodeRunner(decode_model(model_b64))

    def run(args: list[tuple[np.ndarray, int, list[int]] | None]) -> list[tuple[np.ndarray, list[int], int]]:
        xs: list[np.ndarray | None] = []
        for a in args:
            if a is None:
                xs.append(None)
                continue
            raw, code, shape = a
            arr = raw.view(to_numpy(code)).reshape(shape)
            arr.flags.writeable = False
            xs.append(arr)
        result = []
        for o in runner(xs):
            o = c_contiguous(o)
            result.append((o.reshape(-1).view(np.uint8), list(o.shape), int(from_numpy(o.dtype))))
        return result

    return run


def _threads(intra_op_threads: int | None, sess_options: Any) -> int:
    if intra_op_threads is not None:
        if intra_op_threads < 0:
            raise InvalidArgumentError(f"intra_op_threads must be >= 0, got {intra_op_threads}")
        return intra_op_threads
    n = getattr(sess_options, "intra_op_num_threads", 0) if sess_options is not None else 0
    return int(n) if n and n > 0 else 0


class Session:
    """A compiled model bound to the native runtime."""

    def __init__(
        self,
        model: str | os.PathLike | bytes | CompiledModel | Any,
        sess_options: Any = None,
        providers: Sequence[Any] | None = None,
        *,
        level: int = 2,
        intra_op_threads: int | None = None,
        isa: str | None = None,
        fallback: bool = True,
        **compile_options: Any,
    ) -> None:
        del providers  # mopt has one CPU runtime; accepted for onnxruntime compatibility
        self.compiled: CompiledModel | None = None
        if isa is None:
            isa = _C.default_isa()
        if _is_compiled(model):
            self.compiled = model
        elif isinstance(model, str | os.PathLike) and mopt_format.is_mopt_file(model):
            self._program = _C.Program.from_file(os.fspath(model))
            self._program_json = mopt_format.read_header(model)["program"]
            self._defaults_source: Any = Path(os.fspath(model))
        elif isinstance(model, bytes | bytearray) and bytes(model[:8]) == mopt_format.MAGIC:
            self._program = _C.Program.from_bytes(bytes(model))
            self._program_json = _json_from_bytes(bytes(model))
            self._defaults_source = bytes(model)
        else:
            from mopt.compiler import compile as _compile

            self.compiled = _compile(model, level, isa=isa, fallback=fallback, **compile_options)
        if self.compiled is not None:
            self._program = _load_compiled(self.compiled)
            self._program_json = self.compiled.program
            self._defaults_source = self.compiled
        self._sess = _C.Session(self._program, _threads(intra_op_threads, sess_options), isa, fallback_runner if fallback else None)
        self._inputs = [_node_arg(d) for d in self._sess.inputs()]
        self._outputs = [_node_arg(d) for d in self._sess.outputs()]
        self._input_index = {a.name: i for i, a in enumerate(self._inputs)}
        self._output_index = {a.name: i for i, a in enumerate(self._outputs)}
        self._defaults = self._read_defaults()

    # -- description -----------------------------------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return ["MoptCPU"]

    @property
    def isa(self) -> str:
        return self._sess.isa

    @property
    def num_threads(self) -> int:
        return self._sess.num_threads

    def kernels(self) -> list[tuple[str, str, str]]:
        """(node name, op, kernel implementation) per node, in run order."""
        return [(name, f"{dom}.{op}" if dom else op, impl) for name, dom, op, impl in self._sess.nodes()]

    def stats(self) -> dict[str, int]:
        """Run and memory-planner counters: runs, plans, arena_bytes, arena_grows, dynamic_allocs."""
        return dict(self._sess.stats())

    # -- running ---------------------------------------------------------------------------------
    def run(
        self,
        output_names: Sequence[str] | None,
        input_feed: Mapping[str, Any],
        run_options: Any = None,
        *,
        profile: list[float] | None = None,
    ) -> list[np.ndarray]:
        """Runs the model. output_names=None returns every output, in model order.

        profile: a list that receives the seconds spent in each node, in run order.
        """
        del run_options
        if not isinstance(input_feed, Mapping):
            raise InvalidArgumentError(f"inputs must be a dict of name -> array, got {type(input_feed).__name__}")
        wanted = self._wanted(output_names)
        feeds: list[tuple[np.ndarray, int] | None] = [None] * len(self._inputs)
        for name, value in input_feed.items():
            if name not in self._input_index:
                known = ", ".join(a.describe() for a in self._inputs)
                raise InvalidArgumentError(f"unknown input '{name}'; the model's inputs are: {known}")
            arg = self._inputs[self._input_index[name]]
            if arg.dtype == np.dtype(object):
                raise InvalidArgumentError(f"input '{name}' is not a tensor (an ONNX sequence, map or optional); mopt takes tensors only")
            try:
                arr = value if isinstance(value, np.ndarray) else np.asarray(value)
            except ValueError as e:  # a ragged list: a sequence of tensors, not one tensor
                raise InvalidArgumentError(f"input '{name}' is not one tensor ({e}); mopt takes tensors only") from None
            if arr.dtype != arg.dtype:
                raise InvalidArgumentError(f"input '{name}' expects {arg.dtype}, got {arr.dtype} (mopt does not cast inputs)")
            arr = c_contiguous(arr)
            feeds[self._input_index[name]] = (arr, int(from_numpy(arr.dtype)))
        for i, f in enumerate(feeds):
            if f is None:
                arg = self._inputs[i]
                if arg.name in self._defaults:
                    arr = self._defaults[arg.name]
                    feeds[i] = (arr, int(from_numpy(arr.dtype)))
                else:
                    raise InvalidArgumentError(f"missing input {arg.describe()}")
        results, prof = self._sess.run(feeds, wanted, profile is not None)
        if profile is not None:
            profile[:] = prof
        out = []
        for raw, code, shape in results:
            out.append(raw.view(to_numpy(code)).reshape(shape))
        return out

    def _wanted(self, output_names: Sequence[str] | None) -> list[int]:
        if output_names is None:
            return list(range(len(self._outputs)))
        if isinstance(output_names, str):
            raise InvalidArgumentError("output_names must be a list of names (or None), not a string")
        idx = []
        for n in output_names:
            if n not in self._output_index:
                known = ", ".join(f"'{a.name}'" for a in self._outputs)
                raise InvalidArgumentError(f"unknown output '{n}'; the model's outputs are: {known}")
            idx.append(self._output_index[n])
        return idx

    def _read_defaults(self) -> dict[str, np.ndarray]:
        entries = self._program_json.get("input_defaults", [])
        if not entries:
            return {}
        out: dict[str, np.ndarray] = {}
        src = self._defaults_source
        if _is_compiled(src):
            graph = src.graph
            return {k: np.asarray(v) for k, v in (graph.input_defaults.items() if graph else [])}
        blob_off = _blob_offset(src)
        for e in entries:
            dt = to_numpy(e["dtype"])
            if isinstance(src, Path):
                with src.open("rb") as f:
                    f.seek(blob_off + e["offset"])
                    data = f.read(e["nbytes"])
            else:
                data = src[blob_off + e["offset"] : blob_off + e["offset"] + e["nbytes"]]
            out[e["name"]] = np.frombuffer(data, dtype=dt).reshape(e["shape"]).copy()
        return out

    def __repr__(self) -> str:
        ins = ", ".join(a.describe() for a in self._inputs)
        return f"mopt.Session({ins}; isa={self.isa}, threads={self.num_threads})"


def _blob_offset(src: Path | bytes) -> int:
    head = src.open("rb").read(mopt_format.HEADER.size) if isinstance(src, Path) else src[: mopt_format.HEADER.size]
    return mopt_format.HEADER.unpack(head)[5]


def _json_from_bytes(data: bytes) -> dict[str, Any]:
    import json

    _, _, _, json_off, json_size, _, _ = mopt_format.HEADER.unpack(data[: mopt_format.HEADER.size])
    return json.loads(data[json_off : json_off + json_size])


def _load_compiled(compiled: CompiledModel) -> Any:
    """Writes the program to a temporary file and maps it: weights are never held twice."""
    fd, path = tempfile.mkstemp(suffix=".mopt", prefix="mopt-")
    try:
        with os.fdopen(fd, "wb") as f:
            mopt_format.write(f, compiled.program, compiled.chunks, compiled.blob_size, compiled.flags, compiled.version)
        return _C.Program.from_file(path)
    finally:
        os.unlink(path)  # the mapping keeps the data alive


__all__ = ["DType", "NodeArg", "Session", "dtype_name"]
