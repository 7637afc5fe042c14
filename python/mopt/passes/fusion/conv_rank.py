"""Which convolutions and pools the native kernels take: 1-D and 2-D windows. Others (3-D video or
volume models) run on the reference fallback, so fusions leave them as standard ops."""

from __future__ import annotations

from mopt.ir.graph import Node

NATIVE_SPATIAL = (1, 2)


def spatial_rank(node: Node) -> int | None:
    """Spatial dimensions of a Conv/pool: from W's rank, the kernel_shape, or the input's rank."""
    ks = node.attr("kernel_shape")
    if ks is not None:
        return len(ks)
    if node.op_type in ("Conv", "FusedConv") and len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].shape is not None:
        return len(node.inputs[1].shape) - 2
    x = node.inputs[0] if node.inputs else None
    if x is not None and x.shape is not None:
        return len(x.shape) - 2
    return None


def conv_is_native(node: Node) -> bool:
    r = spatial_rank(node)
    return r is None or r in NATIVE_SPATIAL
