"""FoldChannelShuffle (-O3): Reshape -> Transpose -> Reshape shuffling the groups of the grouped
convolution before it becomes a stride between that convolution's stored rows. Checked against
onnx.reference on every ISA with two threads (both GEMM orientations, im2col and 1x1, batches split
by images and by blocks), and through the exported ONNX; shuffles of other group counts, residual
convolutions and -O2 are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import mopt
from mopt.testing.assert_close import assert_model_close
from mopt.testing.random_inputs import available_isas
from mopt.testing.reference import run_reference

from .helpers import Weights, assert_outputs_unchanged, at_level, make_model, node, ops, random_feeds


def shuffle_model(x: list[int], m: int, group: int, k: int = 1, *, shuffle: int | None = None, residual: bool = False,
                  depthwise_after: bool = True, **attrs: object) -> onnx.ModelProto:
    """Conv(group) -> Relu -> channel shuffle of `shuffle` groups (default: the conv's) [-> depthwise 3x3]."""
    n, c, h, w = x
    pad = (k - 1) // 2
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    s = shuffle or group
    ws = Weights(5)
    nodes = [node("Conv", ["x", "w", "b"], ["c"], group=group, pads=[pad] * 4, **attrs)]
    src = "c"
    inputs = {"x": x}
    if residual:
        inputs["r"] = [n, m, oh, ow]
        nodes.append(node("Add", ["c", "r"], ["cr"]))
        src = "cr"
    nodes += [
        node("Relu", [src], ["a"]),
        node("Reshape", ["a", "split"], ["g5"]),
        node("Transpose", ["g5"], ["t5"], perm=[0, 2, 1, 3, 4]),
        node("Reshape", ["t5", "merge"], ["sh"]),
    ]
    consts = {
        "w": ws.normal(m, c // group, k, k, scale=1 / np.sqrt(c // group * k * k)),
        "b": ws.normal(m),
        "split": np.array([n, s, m // s, oh, ow], np.int64),
        "merge": np.array([n, m, oh, ow], np.int64),
    }
    if depthwise_after:
        nodes.append(node("Conv", ["sh", "dw"], ["y"], group=m, pads=[1, 1, 1, 1]))
        consts["dw"] = ws.normal(m, 1, 3, 3, scale=1 / 3)
    else:
        nodes.append(node("Identity", ["sh"], ["y"]))
    return make_model(nodes, inputs, ["y"], consts)


def shuffled(graph) -> list:
    return [n for n in graph.walk() if n.op_type == "FusedConv" and n.attr("shuffle_groups")]


CASES = {
    # x, output channels, group, kernel: 1x1 on raw B (56 pixels, and 30x30 split by columns),
    # 3x3 through im2col, few pixels (pixels x channels, stored transposed), a batch of images
    "1x1-g4": ([1, 16, 7, 8], 24, 4, 1),
    "1x1-g3-wide": ([1, 12, 30, 30], 36, 3, 1),
    "3x3-g2": ([1, 8, 9, 11], 10, 2, 3),
    "1x1-pixels-rows": ([1, 128, 7, 7], 128, 2, 1),
    "1x1-batch": ([5, 12, 6, 6], 24, 4, 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_shuffle_folds_into_the_convolution(case: str) -> None:
    x, m, group, k = CASES[case]
    model = shuffle_model(x, m, group, k)
    graph = at_level(model, 3)
    assert "Transpose" not in ops(graph) and "Reshape" not in ops(graph), ops(graph)
    (conv,) = shuffled(graph)
    assert conv.attr("shuffle_groups") == group and conv.attr("activation") == "Relu"
    compiled = assert_outputs_unchanged(model, graph, 3)
    feeds = random_feeds(model)
    want = run_reference(model, feeds)[0]
    for isa in available_isas():
        got = mopt.Session(compiled, isa=isa, intra_op_threads=2).run(None, feeds)[0]
        assert_model_close(got, want, context=f"{case} on {isa}")


def test_the_shuffle_is_exported_as_ops() -> None:
    model = shuffle_model([1, 16, 7, 8], 24, 4, depthwise_after=False)
    exported = mopt.frontend.export_onnx(at_level(model, 3))
    onnx.checker.check_model(exported)
    kinds = [n.op_type for n in exported.graph.node]
    assert "Transpose" in kinds and all(a.name != "shuffle_groups" for n in exported.graph.node for a in n.attribute)


@pytest.mark.parametrize(
    ("why", "kwargs"),
    [
        ("other groups", {"shuffle": 2}),  # 4 conv groups, shuffled as 2
        ("residual", {"residual": True}),
    ],
)
def test_other_shuffles_are_left_alone(why: str, kwargs: dict) -> None:
    model = shuffle_model([1, 16, 7, 8], 24, 4, **kwargs)
    graph = at_level(model, 3)
    assert not shuffled(graph) and "Transpose" in ops(graph), why
    assert_outputs_unchanged(model, graph, 3)


def test_O2_keeps_the_transpose() -> None:
    graph = at_level(shuffle_model([1, 16, 7, 8], 24, 4), 2)
    assert not shuffled(graph) and "Transpose" in ops(graph)


def test_a_shuffle_of_other_groups_is_an_error_in_the_kernel() -> None:
    """A hand-written FusedConv whose shuffle does not match its groups is refused, naming the node."""
    ws = Weights(3)
    fused = onnx.helper.make_node("FusedConv", ["x", "w"], ["y"], domain="com.mopt", group=2, shuffle_groups=4, name="bad")
    model = make_model([fused], {"x": [1, 8, 5, 5]}, ["y"], {"w": ws.normal(8, 4, 1, 1)})
    model.opset_import.append(onnx.helper.make_opsetid("com.mopt", 1))
    with pytest.raises(mopt.MoptError, match="shuffle_groups"):
        mopt.Session(model, level=0, fallback=False).run(None, random_feeds(model))
