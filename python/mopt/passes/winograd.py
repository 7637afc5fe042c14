"""Winograd F(4x4, 3x3) for the 3x3 convolutions that gain from it (-O3).

A 3x3 / stride-1 / undilated convolution of one group computes each 4x4 block of its output from a
6x6 input tile: 36 multiplications per tile and channel pair instead of 144, at the price of
transforming the input tiles and the results (linear maps, a few adds per value) and of 4x the
filter memory (36 values per filter instead of 9, transformed when the session loads). The kernel
runs the 36 products as GEMMs of [output channels x input channels] by [input channels x tiles].

The pass marks the convolutions that take it (attribute `winograd`); the kernel does the rest.
It is left out where the transforms and the tile padding cost more than the arithmetic saved:
few channels (the products are short GEMMs while the transforms cost the same per channel) or
small outputs (a 7x7 output is computed as 8x8, in 4 tiles padded to a vector of 16).

The results differ from the direct convolution by rounding only: the transforms' coefficients
(1/4, 1/6, 1/24, 2, 4, 8) amplify float32 rounding by a small factor, well inside the 1e-4
relative tolerance the tests hold the kernels to.
"""

from __future__ import annotations

from mopt.ir.dtypes import DType
from mopt.ir.graph import Graph, Node
from mopt.passes.manager import Pass, register_pass

# the fewest channels that gain (16 -> 64 at 56x56: 1.45x faster on 2 threads)
MIN_CHANNELS = 16
# the least arithmetic saved, counting the tiles the kernel pads to a whole vector of 16: below it
# the transforms and the short GEMMs cost what is saved (256 -> 256 channels, 2 threads: 14x14
# output saves 3.1x and runs 2.7x faster, 10x10 saves 1.6x and runs 1.0x, 8x8 1.0x and 0.94x)
MIN_SAVING = 2.0


def saving(oh: int, ow: int) -> float:
    """Multiplications of the direct convolution over those of Winograd F(4x4, 3x3) for one output
    channel and input channel, with the tiles padded to 16 as the kernel runs them."""
    tiles = -(-oh // 4) * -(-ow // 4)
    return 9 * oh * ow / (36 * (-(-tiles // 16) * 16))


def _ints(node: Node, name: str, default: list[int]) -> list[int]:
    v = node.attr(name, None)
    return [int(i) for i in v] if v is not None else default


def fits(node: Node) -> str | None:
    """Why `node` cannot run as Winograd F(4x4, 3x3), or None when it can."""
    if node.op_type not in ("Conv", "FusedConv") or node.domain not in ("", "com.mopt"):
        return "not a convolution"
    if node.domain == "" and node.op_type != "Conv":
        return "not a convolution"
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if w is None or not w.is_const or w.const.ndim != 4 or tuple(w.const.shape[2:]) != (3, 3):
        return "not a constant 3x3 filter"
    if node.outputs[0].dtype not in (None, DType.FLOAT):
        return "not float32"
    if int(node.attr("group", 1)) != 1:
        return "grouped"
    if _ints(node, "strides", [1, 1]) != [1, 1] or _ints(node, "dilations", [1, 1]) != [1, 1]:
        return "strided or dilated"
    if node.attr("maxpool_2x2", 0):
        return "pools"
    return None


def gains(node: Node) -> str | None:
    """Why Winograd would not be faster for `node` (None: it would)."""
    m, c = (int(d) for d in node.inputs[1].const.shape[:2])
    if min(m, c) < MIN_CHANNELS:
        return f"{c} -> {m} channels: too few for the transforms to pay"
    shape = node.outputs[0].shape
    if shape is not None and len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
        if saving(shape[2], shape[3]) < MIN_SAVING:
            return f"{shape[2]}x{shape[3]} output: {saving(shape[2], shape[3]):.2f}x fewer multiplications"
    return None


@register_pass(min_level=3)
class ChooseWinograd(Pass):
    """Marks the 3x3 convolutions that run as Winograd F(4x4, 3x3)."""

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in graph.nodes:
            if node.attr("winograd") is not None or fits(node) is not None:
                continue
            why = gains(node)
            if why is not None:
                self.note(f"{node.name}: direct ({why})")
                continue
            node.set_attr("winograd", 1)
            self.note(f"{node.name}: Winograd F(4x4, 3x3)")
            changed = True
        return changed
