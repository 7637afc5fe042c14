"""FuseConvMaxPool (-O3): a 2x2 / stride-2 MaxPool after a convolution with one input channel per
group (a 1-channel stem, depthwise, or a channel multiplier) becomes com.mopt.FusedConv{maxpool_2x2};
other pools, other convolutions, a convolution read elsewhere, a residual, and -O2 leave the graph
alone. The fused node is checked against onnx.reference on every ISA, through ONNX export, and for
its FLOPs in the report."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import mopt
from mopt.passes.fusion.activation import FuseActivation
from mopt.passes.fusion.conv_pool import FuseConvMaxPool
from mopt.report import graph_report
from mopt.testing.assert_close import assert_model_close
from mopt.testing.random_inputs import available_isas
from mopt.testing.reference import run_reference

from .helpers import Weights, apply, assert_outputs_unchanged, at_level, imported_ops, make_model, node, ops, random_feeds, the

POOL = {"kernel_shape": [2, 2], "strides": [2, 2]}


def conv_pool_model(
    x: list[int],
    w: tuple[int, ...],
    *,
    group: int = 1,
    pads: tuple[int, ...] = (1, 1, 1, 1),
    pool: dict | None = None,
    act: str | None = "Relu",
    extra_outputs: tuple[str, ...] = (),
    **conv_attrs: object,
) -> onnx.ModelProto:
    ws = Weights(3)
    nodes = [node("Conv", ["x", "w", "b"], ["c"], pads=list(pads), group=group, **conv_attrs)]
    src = "c"
    if act:
        nodes.append(node(act, ["c"], ["a"]))
        src = "a"
    nodes.append(node("MaxPool", [src], ["y"], **(pool if pool is not None else POOL)))
    return make_model(nodes, {"x": x}, ["y", *extra_outputs], {"w": ws.normal(*w), "b": ws.normal(w[0])})


def assert_every_isa(model: onnx.ModelProto, compiled: mopt.CompiledModel, context: str) -> None:
    """The compiled model against onnx.reference on every ISA of this machine, two threads."""
    feeds = random_feeds(model)
    want = run_reference(model, feeds)[0]
    for isa in available_isas():
        got = mopt.Session(compiled, isa=isa, intra_op_threads=2).run(None, feeds)[0]
        assert_model_close(got, want, context=f"{context} on {isa}")


FUSED = {
    # (x, w, group): a 1-channel stem (four-channel passes and a remainder), odd output sizes,
    # depthwise on narrow planes (the path that otherwise runs channels-in-lanes), a multiplier
    "stem-1-to-30": ([3, 1, 32, 32], (30, 1, 3, 3), 1),
    "stem-odd-17x13": ([2, 1, 17, 13], (5, 1, 3, 3), 1),
    "depthwise-narrow": ([2, 20, 9, 9], (20, 1, 3, 3), 20),
    "depthwise-wide": ([1, 6, 8, 40], (6, 1, 3, 3), 6),
    "multiplier-2": ([2, 4, 16, 18], (8, 1, 3, 3), 4),
}


@pytest.mark.parametrize("case", FUSED, ids=list(FUSED))
def test_maxpool_fuses_into_one_input_channel_conv(case: str) -> None:
    x, w, group = FUSED[case]
    model = conv_pool_model(x, w, group=group)
    graph, records = apply(model, FuseActivation(), FuseConvMaxPool())
    assert imported_ops(model) == {"Conv": 1, "Relu": 1, "MaxPool": 1}
    assert ops(graph) == {"com.mopt.FusedConv": 1}
    assert records[0].details == ["FuseActivation: 1x", "FuseConvMaxPool: 1x"]
    fused = the(graph, "com.mopt.FusedConv")
    assert fused.attr("maxpool_2x2") == 1
    assert fused.attr("activation") == "Relu"
    assert fused.outputs[0].name == "y"
    assert_every_isa(model, assert_outputs_unchanged(model, graph, level=3), case)
    # the report counts the convolution's own output, not the pooled one
    assert graph_report(graph).flops == graph_report(at_level(model, 2)).flops > 0


@pytest.mark.parametrize(
    "conv_attrs",
    [{"strides": [2, 2]}, {"dilations": [2, 2]}, {"strides": [1, 2], "dilations": [2, 1]}],
    ids=["stride2", "dilation2", "mixed"],
)
def test_strided_and_dilated_convs_pool_too(conv_attrs: dict) -> None:
    model = conv_pool_model([2, 3, 21, 19], (6, 1, 3, 3), group=3, pads=(2, 1, 2, 2), act="Clip", **conv_attrs)
    graph = at_level(model, 3)
    assert ops(graph) == {"com.mopt.FusedConv": 1}
    assert_every_isa(model, assert_outputs_unchanged(model, graph, level=3), str(conv_attrs))


def test_no_activation_and_a_5x5_kernel() -> None:
    model = conv_pool_model([2, 1, 12, 12], (4, 1, 5, 5), pads=(2, 2, 2, 2), act=None)
    graph = at_level(model, 3)
    assert ops(graph) == {"com.mopt.FusedConv": 1}
    assert_outputs_unchanged(model, graph, level=3)


NOT_FUSED = {
    "3x3-pool": ({"x": [1, 1, 16, 16], "w": (4, 1, 3, 3)}, {"pool": {"kernel_shape": [3, 3], "strides": [2, 2]}}),
    "2x2-stride-1": ({"x": [1, 1, 16, 16], "w": (4, 1, 3, 3)}, {"pool": {"kernel_shape": [2, 2]}}),
    "padded-pool": ({"x": [1, 1, 15, 15], "w": (4, 1, 3, 3)}, {"pool": {**POOL, "pads": [0, 0, 1, 1]}}),
    "ceil-mode": ({"x": [1, 1, 15, 15], "w": (4, 1, 3, 3)}, {"pool": {**POOL, "ceil_mode": 1}}),
    "3-input-channels": ({"x": [1, 3, 16, 16], "w": (4, 3, 3, 3)}, {}),
    "1-to-1-channel": ({"x": [1, 1, 16, 16], "w": (1, 1, 3, 3)}, {}),
    "conv-output-read-elsewhere": ({"x": [1, 1, 16, 16], "w": (4, 1, 3, 3)}, {"act": None, "extra_outputs": ("c",)}),
}


@pytest.mark.parametrize("case", NOT_FUSED, ids=list(NOT_FUSED))
def test_other_pools_and_convs_are_left_alone(case: str) -> None:
    shapes, kw = NOT_FUSED[case]
    model = conv_pool_model(shapes["x"], shapes["w"], **kw)
    graph = at_level(model, 3)
    assert "MaxPool" in ops(graph)
    assert_outputs_unchanged(model, graph, level=3)


def test_o2_does_not_pool_in_the_conv() -> None:
    model = conv_pool_model([2, 1, 16, 16], (8, 1, 3, 3))
    assert ops(at_level(model, 2)) == {"com.mopt.FusedConv": 1, "MaxPool": 1}
    assert ops(at_level(model, 3)) == {"com.mopt.FusedConv": 1}


def test_quantize_keeps_the_stem_int8() -> None:
    """Quantization prepares at -O2, so the stem stays a QConv with its own QMaxPool."""
    from mopt.quant import quantize

    model = conv_pool_model([4, 1, 16, 16], (8, 1, 3, 3))
    calib = np.random.default_rng(0).random((4, 1, 16, 16), dtype=np.float32)
    res = quantize(model, {"x": calib}, show_progress=False)
    kinds = [op for _, op, _ in mopt.Session(res.compiled).kernels()]
    assert "com.mopt.QConv" in kinds, kinds
