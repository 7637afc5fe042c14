"""Every op with a native kernel is claimed by a test module here (its OPS_COVERED list), so a kernel
added without tests fails this check."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from mopt import _C


def covered() -> set[str]:
    names: set[str] = set()
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("test_"):
            names.update(getattr(importlib.import_module(f".{info.name}", __package__), "OPS_COVERED", []))
    return names


def test_every_native_op_has_kernel_tests() -> None:
    native = {f"{d}.{op}" if d else op for d, op, _ in _C.native_ops()}
    missing = sorted(native - covered())
    assert not missing, f"native kernels without tests in tests/ops: {missing}"


def test_coverage_lists_name_real_ops() -> None:
    native = {f"{d}.{op}" if d else op for d, op, _ in _C.native_ops()}
    stale = sorted(covered() - native)
    assert not stale, f"OPS_COVERED names ops with no native kernel: {stale}"
