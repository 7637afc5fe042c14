"""mopt: a compiler for trained neural networks (ONNX in, optimized native program out)."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from mopt import _C  # noqa: F401  (the native runtime; fails loudly if the build is broken)
from mopt.errors import (
    ExecutionError,
    InternalError,
    InvalidArgumentError,
    InvalidModelError,
    MoptError,
    UnsupportedOpError,
)
from mopt.runtime import NodeArg, Session

if TYPE_CHECKING:
    from mopt.compiler import compile
    from mopt.lower.program import CompiledModel


def __getattr__(name: str) -> Any:
    """The compiler (and with it the onnx package) loads on first use: running a .mopt needs neither."""
    if name == "compile":
        from mopt.compiler import compile as fn

        return fn
    if name == "CompiledModel":
        from mopt.lower.program import CompiledModel

        return CompiledModel
    raise AttributeError(f"module 'mopt' has no attribute '{name}'")


__all__ = [
    "CompiledModel",
    "ExecutionError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidModelError",
    "MoptError",
    "NodeArg",
    "Session",
    "UnsupportedOpError",
    "__version__",
    "compile",
]
