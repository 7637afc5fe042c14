"""mopt: a compiler for trained neural networks (ONNX in, optimized native program out)."""

from __future__ import annotations

__version__ = "0.1.0"

from mopt import _C  # noqa: F401  (the native runtime; fails loudly if the build is broken)
from mopt.compiler import compile  # noqa: A004
from mopt.errors import (
    ExecutionError,
    InternalError,
    InvalidArgumentError,
    InvalidModelError,
    MoptError,
    UnsupportedOpError,
)
from mopt.lower.program import CompiledModel
from mopt.runtime import NodeArg, Session

__all__ = [
    "CompiledModel",
    "NodeArg",
    "Session",
    "compile",
    "ExecutionError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidModelError",
    "MoptError",
    "UnsupportedOpError",
    "__version__",
]
