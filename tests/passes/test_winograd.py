"""ChooseWinograd (-O3): 3x3 / stride-1 / undilated convolutions of one group, with enough channels
and output, run as Winograd F(4x4, 3x3). The pass marks them (attribute `winograd`), the kernel
transforms the filters (prepacked at compile time, repacked for another ISA's micro-kernel) and runs
36 GEMMs between the tile transforms. Checked against onnx.reference on every ISA: odd sizes, every
padding, batches, several blocks of tile rows, fused bias, activation and residual, and sizes only
known at run time; other convolutions and -O2 are left alone; the attribute is not exported."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import mopt
from mopt.passes.winograd import ChooseWinograd
from mopt.testing.assert_close import assert_model_close
from mopt.testing.random_inputs import available_isas
from mopt.testing.reference import run_reference

from .helpers import Weights, assert_outputs_unchanged, at_level, make_model, node, ops, optimize, random_feeds, the


def conv_model(x: list, w: tuple[int, ...], *, act: str | None = "Relu", residual: bool = False, **attrs: object) -> onnx.ModelProto:
    ws = Weights(7)
    nodes = [node("Conv", ["x", "w", "b"], ["c"], **attrs)]
    src = "c"
    if residual:  # a residual the size of the output: a second input
        nodes.append(node("Add", ["c", "r"], ["s"]))
        src = "s"
    if act:
        nodes.append(node(act, [src], ["y"]))
    else:
        nodes.append(node("Identity", [src], ["y"]))
    inputs = {"x": x}
    if residual:  # (the tests' residual convolutions keep the input's size)
        inputs["r"] = [x[0], w[0], *x[2:]]
    return make_model(nodes, inputs, ["y"], {"w": ws.normal(*w, scale=1 / np.sqrt(9 * w[1])), "b": ws.normal(w[0])})


def assert_every_isa(model: onnx.ModelProto, compiled: mopt.CompiledModel, context: str, feeds=None) -> None:
    """Every ISA of this machine, two threads, against onnx.reference; each session runs Winograd."""
    feeds = feeds if feeds is not None else random_feeds(model)
    want = run_reference(model, feeds)[0]
    for isa in available_isas():
        sess = mopt.Session(compiled, isa=isa, intra_op_threads=2)
        impls = [impl for _, op, impl in sess.kernels() if op.endswith("Conv")]
        assert impls and all(i.startswith("winograd_f4x4_3x3") for i in impls), impls
        got = sess.run(None, feeds)[0]
        assert_model_close(got, want, context=f"{context} on {isa}")


def winograd_nodes(graph) -> list:
    return [n for n in graph.walk() if n.op_type in ("Conv", "FusedConv") and n.attr("winograd")]


CASES = {
    # x, w, conv attributes: odd sizes (partial tiles on both edges), every padding, a batch,
    # several blocks of tile rows (more than 256 tiles), channels not a multiple of any tile,
    # blocks each thread runs through on its own
    "16x16-pad1": ([1, 16, 16, 16], (16, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    "13x13-one-vector-of-tiles": ([1, 16, 13, 13], (16, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    "odd-21x27-pad0": ([2, 17, 23, 29], (20, 17, 3, 3), {"pads": [0, 0, 0, 0]}),
    "asymmetric-pads": ([1, 24, 13, 21], (33, 24, 3, 3), {"pads": [2, 0, 1, 3]}),
    "same-upper": ([1, 16, 21, 19], (17, 16, 3, 3), {"auto_pad": "SAME_UPPER"}),
    "blocks-of-rows": ([1, 16, 75, 70], (18, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    "wide-channels": ([1, 70, 12, 12], (45, 70, 3, 3), {"pads": [1, 1, 1, 1]}),
    # 128+ tiles: each thread takes blocks of its own (one image in 4 blocks; a batch of 3 in 2 each)
    "own-blocks": ([1, 16, 47, 45], (20, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    "own-blocks-batch": ([3, 17, 37, 37], (19, 17, 3, 3), {"pads": [0, 1, 1, 0]}),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_winograd_follows_the_reference(case: str) -> None:
    x, w, attrs = CASES[case]
    model = conv_model(x, w, **attrs)
    graph = at_level(model, 3)
    assert len(winograd_nodes(graph)) == 1
    assert ops(graph) == {"com.mopt.FusedConv": 1}
    assert the(graph, "com.mopt.FusedConv").attr("activation") == "Relu"
    compiled = assert_outputs_unchanged(model, graph, level=3)
    assert_every_isa(model, compiled, case)


def test_residual_and_no_activation() -> None:
    model = conv_model([2, 16, 10, 14], (16, 16, 3, 3), act=None, residual=True, pads=[1, 1, 1, 1])
    graph = at_level(model, 3)
    fused = the(graph, "com.mopt.FusedConv")
    assert fused.attr("winograd") == 1 and len(fused.inputs) == 4
    assert_every_isa(model, assert_outputs_unchanged(model, graph, level=3), "residual")


def test_sizes_known_only_at_run_time() -> None:
    """H and W symbolic: the pass cannot see the output and marks it; any size then runs, down to 1x1."""
    model = conv_model([1, 16, "h", "w"], (16, 16, 3, 3), pads=[1, 1, 1, 1])
    graph = at_level(model, 3)
    assert len(winograd_nodes(graph)) == 1
    compiled = mopt.compile(model, 3)
    for h, w in [(1, 1), (5, 3), (4, 4), (31, 9)]:
        feeds = {"x": np.random.default_rng(h * 100 + w).standard_normal((1, 16, h, w)).astype(np.float32)}
        assert_every_isa(model, compiled, f"{h}x{w}", feeds)


NOT_CHOSEN = {
    "stride-2": ([1, 16, 16, 16], (16, 16, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "dilation-2": ([1, 16, 16, 16], (16, 16, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "grouped": ([1, 32, 16, 16], (32, 16, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    "5x5": ([1, 16, 16, 16], (16, 16, 5, 5), {"pads": [2, 2, 2, 2]}),
    "few-input-channels": ([1, 3, 32, 32], (16, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "few-output-channels": ([1, 16, 32, 32], (8, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    "7x7-output": ([1, 64, 7, 7], (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    "10x10-output": ([1, 16, 10, 10], (16, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
}


@pytest.mark.parametrize("case", NOT_CHOSEN, ids=list(NOT_CHOSEN))
def test_other_convolutions_stay_direct(case: str) -> None:
    x, w, attrs = NOT_CHOSEN[case]
    model = conv_model(x, w, **attrs)
    assert not winograd_nodes(at_level(model, 3))
    sess = mopt.Session(mopt.compile(model, 3), intra_op_threads=2)
    assert not any(impl.startswith("winograd") for _, _, impl in sess.kernels())
    assert_model_close(sess.run(None, random_feeds(model))[0], run_reference(model, random_feeds(model))[0], context=case)


def test_o2_stays_direct_and_the_pass_explains() -> None:
    model = conv_model([1, 16, 16, 16], (16, 16, 3, 3), pads=[1, 1, 1, 1])
    assert not winograd_nodes(at_level(model, 2))
    small = conv_model([1, 8, 16, 16], (16, 8, 3, 3), pads=[1, 1, 1, 1])
    _, records = optimize(small, ChooseWinograd())
    assert records[0].details == ["c: direct (8 -> 16 channels: too few for the transforms to pay)"]


def test_the_attribute_is_not_exported(tmp_path) -> None:
    model = conv_model([1, 16, 16, 16], (16, 16, 3, 3), pads=[1, 1, 1, 1])
    graph = at_level(model, 3)
    assert winograd_nodes(graph)
    exported = mopt.frontend.export_onnx(graph)
    onnx.checker.check_model(exported)
    assert all(a.name != "winograd" for n in exported.graph.node for a in n.attribute)


def test_double_weights_are_an_error() -> None:
    """A float64 W beside a float32 X is not a valid Conv: it used to run, reading the doubles as floats."""
    model = conv_model([1, 16, 8, 8], (16, 16, 3, 3), pads=[1, 1, 1, 1])
    w = next(t for t in model.graph.initializer if t.name == "w")
    w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w).astype(np.float64), "w"))
    with pytest.raises(mopt.InvalidModelError, match="W must be float32 like X, got float64"):
        mopt.Session(mopt.compile(model, 2)).run(None, random_feeds(model))


def test_float16_weights_are_transformed_after_widening() -> None:
    """With fp16 storage the plain filters are stored as float16 and transformed when the session
    loads: transformed filters stored as float16 had 30x the error of the direct convolution's."""
    model = conv_model([1, 32, 28, 28], (32, 32, 3, 3), pads=[1, 1, 1, 1])
    feeds = random_feeds(model)
    want = run_reference(model, feeds)[0]
    errors = {}
    for level in (2, 3):
        sess = mopt.Session(mopt.compile(model, level, fp16=True), intra_op_threads=2)
        assert any(impl.startswith("winograd") for _, _, impl in sess.kernels()) == (level == 3)
        errors[level] = float(np.abs(sess.run(None, feeds)[0] - want).max())
    assert 0 < errors[3] <= 1.5 * errors[2], errors


def test_winograd_can_be_left_out(tmp_path) -> None:
    """-O3 without Winograd (API and CLI): the convolutions stay direct and the program is smaller."""
    from mopt.cli import main

    model = conv_model([1, 32, 28, 28], (32, 32, 3, 3), pads=[1, 1, 1, 1])
    with_w, without = mopt.compile(model, 3), mopt.compile(model, 3, winograd=False)
    impls = {k: [i for _, _, i in mopt.Session(c).kernels()] for k, c in (("with", with_w), ("without", without))}
    assert any(i.startswith("winograd") for i in impls["with"])
    assert not any(i.startswith("winograd") for i in impls["without"])
    src = tmp_path / "conv.onnx"
    onnx.save(model, str(src))
    sizes = {}
    for flag in ([], ["--no-winograd"]):
        out = tmp_path / f"conv{len(flag)}.mopt"
        assert main(["compile", str(src), "-O", "3", "-o", str(out), *flag]) == 0
        sizes[bool(flag)] = out.stat().st_size
        feeds = random_feeds(model)
        assert_model_close(mopt.Session(str(out)).run(None, feeds)[0], run_reference(model, feeds)[0], context=str(flag))
    assert sizes[True] < sizes[False]
