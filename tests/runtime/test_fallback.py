"""Ops without a native kernel run through the onnx.reference fallback, and give the spec's answer
even where onnx.reference itself does not."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mopt


def node_case(name: str):  # type: ignore[no-untyped-def]
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return next(c for c in node.collect_testcases() if c.name == name)


@pytest.mark.parametrize(
    "name",
    ["test_range_float_type_positive_delta_expanded", "test_range_int32_type_negative_delta_expanded", "test_loop11"],
)
@pytest.mark.parametrize("where", ["native", "reference"])
def test_loop_scan_outputs_have_the_spec_shape(name: str, where: str) -> None:
    # Range's function body is a Loop that scans one scalar per iteration: the scan output is
    # (iterations,), where onnx.reference's np.vstack makes it (iterations, 1). The native Loop runs
    # these models; the reference path (an old-opset Loop, constant folding) goes through NodeRunner.
    from mopt.reference import NodeRunner

    case = node_case(name)
    if where == "native":
        sess = mopt.Session(mopt.compile(case.model, 2))
        assert not any(op == "mopt.Fallback" for _, op, _ in sess.kernels())
        run = lambda feeds: sess.run(None, feeds)  # noqa: E731
    else:
        runner = NodeRunner(case.model)
        run = lambda feeds: runner(list(feeds.values()))  # noqa: E731
    for inputs, outputs in case.data_sets:
        feeds = {vi.name: np.asarray(x) for vi, x in zip(case.model.graph.input, inputs, strict=True)}
        got = run(feeds)
        for g, w in zip(got, outputs, strict=True):
            np.testing.assert_allclose(g, np.asarray(w), rtol=case.rtol, atol=case.atol)
            assert g.shape == np.asarray(w).shape


def test_a_sequence_result_is_an_error_not_a_stacked_tensor() -> None:
    case = node_case("test_split_to_sequence_1")
    sess = mopt.Session(mopt.compile(case.model, 2))
    inputs, _ = case.data_sets[0]
    feeds = {vi.name: np.asarray(x) for vi, x in zip(case.model.graph.input, inputs, strict=True)}
    with pytest.raises(mopt.MoptError, match=r"SplitToSequence.*produced an ONNX sequence"):
        sess.run(None, feeds)


def test_a_sequence_input_is_refused_by_name() -> None:
    case = node_case("test_sequence_map_identity_1_sequence")
    sess = mopt.Session(mopt.compile(case.model, 2))
    inputs, _ = case.data_sets[0]
    name = case.model.graph.input[0].name
    with pytest.raises(mopt.InvalidArgumentError, match=f"input '{name}' is not a tensor"):
        sess.run(None, {name: inputs[0]})


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements_with_many_choices(axis: int) -> None:
    # onnx.reference fails beyond 32 values along the axis (np.choose); BERT's position ids have 512
    from onnx import helper

    rng = np.random.default_rng(0)
    data = rng.standard_normal((40, 600)).astype(np.float32)
    n = data.shape[axis]
    idx = rng.integers(-n, n, (40, 600) if axis == 0 else (40, 77)).astype(np.int64)
    g = helper.make_graph(
        [helper.make_node("GatherElements", ["d", "i"], ["y"], axis=axis)],
        "g",
        [helper.make_tensor_value_info("d", 1, list(data.shape)), helper.make_tensor_value_info("i", 7, list(idx.shape))],
        [helper.make_tensor_value_info("y", 1, None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    (got,) = mopt.Session(mopt.compile(m, 0)).run(None, {"d": data, "i": idx})
    np.testing.assert_array_equal(got, np.take_along_axis(data, np.where(idx < 0, idx + n, idx), axis=axis))
