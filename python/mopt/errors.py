"""Exceptions raised by mopt. Every native error arrives as one of these, never as a crash."""

from __future__ import annotations


class MoptError(Exception):
    """Base class of every mopt error."""


class InvalidModelError(MoptError, ValueError):
    """The model (ONNX or .mopt) is malformed, truncated or inconsistent."""


class InvalidArgumentError(MoptError, ValueError):
    """A caller's argument is wrong: an input's name, shape or dtype, an option."""


class UnsupportedOpError(MoptError, NotImplementedError):
    """An op, dtype or attribute mopt cannot run (with the fallback disabled, or not at all)."""


class ExecutionError(MoptError, RuntimeError):
    """A failure while running a node (shapes that do not fit, a failing fallback)."""


class InternalError(MoptError, RuntimeError):
    """A bug in mopt. Please report it with the model that triggers it."""
