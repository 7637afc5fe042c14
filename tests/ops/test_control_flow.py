"""If, Loop and Scan on the native runtime: bodies lowered into the program and run as sessions of
their own, outer values passed in as captures. Checked against ONNX Runtime (and onnx.reference
where ORT has no opinion), on every ISA, with the compile report asserting that nothing ran on the
fallback."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import mopt
from mopt.testing.assert_close import assert_close

OPS_COVERED = ["If", "Loop", "Scan"]


def vi(name: str, dtype: int, shape: list | None) -> onnx.ValueInfoProto:
    return h.make_tensor_value_info(name, dtype, shape)


def model_of(nodes: list, inputs: list, outputs: list, opset: int = 17) -> onnx.ModelProto:
    return h.make_model(h.make_graph(nodes, "g", inputs, outputs), opset_imports=[h.make_opsetid("", opset)])


def check(model: onnx.ModelProto, feeds: dict, isa: str, *, native: bool = True, level: int = 2) -> list[np.ndarray]:
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    cm = mopt.compile(model, level, isa=isa)
    if native:
        assert not cm.fallback_nodes, f"{cm.fallback_nodes[0].op} ran on the fallback: {cm.fallback_nodes[0].reason}"
    got = mopt.Session(cm, isa=isa, intra_op_threads=2).run(None, feeds)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype, f"output {i}: {g.dtype} != {w.dtype}"
        assert_close(g, w, rtol=1e-5, atol=1e-6, context=f"output {i} isa={isa}")
    return got


# -- If ------------------------------------------------------------------------------------------


def if_model(then_shape_grows: bool = False) -> onnx.ModelProto:
    """out = x * y (then) or x - y (else), both branches reading outer x and y; the then-branch may
    also give a longer tensor, so the output's shape depends on the branch taken."""
    then_nodes = [h.make_node("Mul", ["x", "y"], ["t0"])]
    if then_shape_grows:
        then_nodes.append(h.make_node("Concat", ["t0", "t0"], ["t"], axis=0))
    else:
        then_nodes.append(h.make_node("Identity", ["t0"], ["t"]))
    then_g = h.make_graph(then_nodes, "then", [], [vi("t", T.FLOAT, None)])
    else_g = h.make_graph([h.make_node("Sub", ["x", "y"], ["e"])], "else", [], [vi("e", T.FLOAT, None)])
    nodes = [
        h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        h.make_node("Greater", ["s", "zero"], ["c"]),
        h.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g),
    ]
    m = model_of(nodes, [vi("x", T.FLOAT, [None, 3]), vi("y", T.FLOAT, [None, 3])], [vi("out", T.FLOAT, None)])
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0, np.float32), "zero"))
    return m


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("rows", [1, 7])
def test_if_takes_either_branch(isa: str, sign: float, rows: int) -> None:
    rng = np.random.default_rng(rows)
    x = (np.abs(rng.standard_normal((rows, 3))) * sign).astype(np.float32)
    y = rng.standard_normal((rows, 3)).astype(np.float32)
    check(if_model(), {"x": x, "y": y}, isa)


def test_if_branches_of_different_shapes(isa: str) -> None:
    m = if_model(then_shape_grows=True)
    x = np.ones((2, 3), np.float32)
    got = check(m, {"x": x, "y": x}, isa)
    assert got[0].shape == (4, 3)
    got = check(m, {"x": -x, "y": x}, isa)
    assert got[0].shape == (2, 3)


def test_if_condition_must_be_one_element() -> None:
    then_g = h.make_graph([h.make_node("Identity", ["x"], ["t"])], "then", [], [vi("t", T.FLOAT, [2])])
    else_g = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", T.FLOAT, [2])])
    m = model_of(
        [h.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g)],
        [vi("c", T.BOOL, [None]), vi("x", T.FLOAT, [2])],
        [vi("out", T.FLOAT, [2])],
    )
    sess = mopt.Session(m.SerializeToString())
    x = np.array([1, 2], np.float32)
    assert_close(sess.run(None, {"c": np.array([False]), "x": x})[0], -x)
    with pytest.raises(mopt.MoptError, match=r"If.*condition must hold exactly one element"):
        sess.run(None, {"c": np.array([True, False]), "x": x})


# -- Loop ----------------------------------------------------------------------------------------


def loop_body(with_scan: bool = True, stop_at: float | None = None) -> onnx.GraphProto:
    """acc += y * i (y captured from the outer graph); the condition turns false once acc's sum
    passes `stop_at`; the scan output collects every step's product."""
    nodes = [
        h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT),
        h.make_node("Mul", ["y", "fi"], ["step"]),
        h.make_node("Add", ["acc", "step"], ["acc_out"]),
    ]
    if stop_at is None:
        nodes.append(h.make_node("Identity", ["cond"], ["cond_out"]))
    else:
        nodes += [
            h.make_node("ReduceSum", ["acc_out"], ["total"], keepdims=0),
            h.make_node("Constant", [], ["limit"], value=h.make_tensor("limit", T.FLOAT, [], [stop_at])),
            h.make_node("Less", ["total", "limit"], ["cond_out"]),
        ]
    outs = [vi("cond_out", T.BOOL, []), vi("acc_out", T.FLOAT, [None])]
    if with_scan:
        nodes.append(h.make_node("Identity", ["step"], ["scan"]))
        outs.append(vi("scan", T.FLOAT, [None]))
    ins = [vi("i", T.INT64, []), vi("cond", T.BOOL, []), vi("acc", T.FLOAT, [None])]
    return h.make_graph(nodes, "body", ins, outs)


def loop_model(trip: bool, cond: bool, stop_at: float | None = None) -> onnx.ModelProto:
    inputs = [vi("x", T.FLOAT, [None])]
    loop_in = ["", "", "x"]
    if trip:
        inputs.append(vi("M", T.INT64, []))
        loop_in[0] = "M"
    if cond:
        inputs.append(vi("c", T.BOOL, []))
        loop_in[1] = "c"
    nodes = [
        h.make_node("Mul", ["x", "x"], ["y"]),
        h.make_node("Loop", loop_in, ["acc", "steps"], body=loop_body(stop_at=stop_at)),
    ]
    return model_of(nodes, inputs, [vi("acc", T.FLOAT, [None]), vi("steps", T.FLOAT, [None, None])])


@pytest.mark.parametrize("n", [1, 17, 1000])
@pytest.mark.parametrize("trips", [0, 1, 5])
def test_loop_for(isa: str, n: int, trips: int) -> None:
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    got = check(loop_model(trip=True, cond=False), {"x": x, "M": np.array(trips, np.int64)}, isa)
    # no iteration: the body's declared per-step shape [None] with its unknown size 0, as ORT gives
    assert got[1].shape == ((trips, n) if trips else (0, 0))


@pytest.mark.parametrize("start", [True, False])
def test_loop_while_condition(isa: str, start: bool) -> None:
    """No trip count: the body's condition ends the loop (a while loop; never entered when false)."""
    x = np.array([1, 2, 3], np.float32)
    got = check(loop_model(trip=False, cond=True, stop_at=200.0), {"x": x, "c": np.array(start)}, isa)
    assert got[1].shape[0] == (6 if start else 0)  # sum(acc) = 14 * (0+1+...+i) passes 200 at i = 5


def test_loop_trip_count_and_condition(isa: str) -> None:
    x = np.array([1, 2, 3], np.float32)
    m = loop_model(trip=True, cond=True, stop_at=200.0)
    got = check(m, {"x": x, "M": np.array(3, np.int64), "c": np.array(True)}, isa)
    assert got[1].shape[0] == 3  # the trip count stops it first
    got = check(m, {"x": x, "M": np.array(50, np.int64), "c": np.array(True)}, isa)
    assert got[1].shape[0] == 6  # the condition does


def test_loop_carried_value_changes_shape(isa: str) -> None:
    """A loop-carried value that grows each iteration (the body's declared shape is only a hint)."""
    body = h.make_graph(
        [
            h.make_node("Identity", ["cond"], ["cond_out"]),
            h.make_node("Concat", ["seq", "x"], ["seq_out"], axis=0),
        ],
        "body",
        [vi("i", T.INT64, []), vi("cond", T.BOOL, []), vi("seq", T.FLOAT, [2])],
        [vi("cond_out", T.BOOL, []), vi("seq_out", T.FLOAT, [None])],
    )
    m = model_of(
        [h.make_node("Loop", ["M", "", "x"], ["out"], body=body)],
        [vi("x", T.FLOAT, [2]), vi("M", T.INT64, [])],
        [vi("out", T.FLOAT, [None])],
    )
    got = check(m, {"x": np.array([1, 2], np.float32), "M": np.array(4, np.int64)}, isa)
    assert got[0].shape == (10,)


def test_loop_with_nested_if_reading_two_graphs_out(isa: str) -> None:
    """An If inside a Loop body reads `y` from the main graph (two levels out) and `acc` from the
    body: both must reach the inner branch as captures."""
    then_g = h.make_graph([h.make_node("Add", ["acc", "y"], ["t"])], "then", [], [vi("t", T.FLOAT, [None])])
    else_g = h.make_graph([h.make_node("Sub", ["acc", "y"], ["e"])], "else", [], [vi("e", T.FLOAT, [None])])
    body = h.make_graph(
        [
            h.make_node("Constant", [], ["two"], value=h.make_tensor("two", T.INT64, [], [2])),
            h.make_node("Mod", ["i", "two"], ["r"]),
            h.make_node("Constant", [], ["zero"], value=h.make_tensor("zero", T.INT64, [], [0])),
            h.make_node("Equal", ["r", "zero"], ["even"]),
            h.make_node("If", ["even"], ["acc_out"], then_branch=then_g, else_branch=else_g),
            h.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "body",
        [vi("i", T.INT64, []), vi("cond", T.BOOL, []), vi("acc", T.FLOAT, [None])],
        [vi("cond_out", T.BOOL, []), vi("acc_out", T.FLOAT, [None])],
    )
    m = model_of(
        [h.make_node("Exp", ["x"], ["y"]), h.make_node("Loop", ["M", "", "x"], ["out"], body=body)],
        [vi("x", T.FLOAT, [None]), vi("M", T.INT64, [])],
        [vi("out", T.FLOAT, [None])],
    )
    x = np.random.default_rng(3).standard_normal(7).astype(np.float32)
    check(m, {"x": x, "M": np.array(5, np.int64)}, isa)


def test_loop_body_node_without_native_kernel_uses_the_fallback() -> None:
    """A body op with no native kernel (ONNX-ML's Binarizer) runs on the fallback inside the native
    Loop, and the compile report names it."""
    body = h.make_graph(
        [
            h.make_node("Binarizer", ["a"], ["d"], domain="ai.onnx.ml", threshold=1.5),
            h.make_node("Mul", ["a", "d"], ["a_out"]),
            h.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "body",
        [vi("i", T.INT64, []), vi("cond", T.BOOL, []), vi("a", T.FLOAT, [2, 2])],
        [vi("cond_out", T.BOOL, []), vi("a_out", T.FLOAT, [2, 2])],
    )
    m = model_of([h.make_node("Loop", ["M", "", "a0"], ["a"], body=body)], [vi("a0", T.FLOAT, [2, 2]), vi("M", T.INT64, [])], [vi("a", T.FLOAT, [2, 2])])
    m.opset_import.append(h.make_opsetid("ai.onnx.ml", 1))
    cm = mopt.compile(m, 2)
    assert [p.op for p in cm.fallback_nodes] == ["ai.onnx.ml.Binarizer"]
    assert any(p.op == "Loop" and p.native for p in cm.placements)
    a0 = np.array([[1, 2], [3, 5]], np.float32)
    check(m, {"a0": a0, "M": np.array(3, np.int64)}, mopt._C.default_isa(), native=False)


def test_loop_scan_output_must_keep_its_shape() -> None:
    body = h.make_graph(
        [
            h.make_node("Identity", ["cond"], ["cond_out"]),
            h.make_node("Concat", ["seq", "seq"], ["seq_out"], axis=0),
            h.make_node("Identity", ["seq_out"], ["scan"]),
        ],
        "body",
        [vi("i", T.INT64, []), vi("cond", T.BOOL, []), vi("seq", T.FLOAT, [None])],
        [vi("cond_out", T.BOOL, []), vi("seq_out", T.FLOAT, [None]), vi("scan", T.FLOAT, [None])],
    )
    m = model_of(
        [h.make_node("Loop", ["M", "", "x"], ["out", "scans"], body=body)],
        [vi("x", T.FLOAT, [1]), vi("M", T.INT64, [])],
        [vi("out", T.FLOAT, [None]), vi("scans", T.FLOAT, [None, None])],
    )
    sess = mopt.Session(m.SerializeToString())
    with pytest.raises(mopt.MoptError, match=r"Loop.*scan output 1 changes from float32 \[2\] to float32 \[4\]"):
        sess.run(None, {"x": np.ones(1, np.float32), "M": np.array(3, np.int64)})


# -- Scan ----------------------------------------------------------------------------------------


def scan_model(in_axis: int, in_dir: int, out_axis: int, out_dir: int, rank: int) -> onnx.ModelProto:
    """A running sum over one axis of x (state), scanning x; outputs every step's state and the
    step's slice times the captured scale w."""
    body = h.make_graph(
        [
            h.make_node("Add", ["state", "xs"], ["state_out"]),
            h.make_node("Mul", ["xs", "w"], ["ys"]),
        ],
        "body",
        [vi("state", T.FLOAT, [None] * (rank - 1)), vi("xs", T.FLOAT, [None] * (rank - 1))],
        [vi("state_out", T.FLOAT, [None] * (rank - 1)), vi("ys", T.FLOAT, [None] * (rank - 1))],
    )
    scan = h.make_node(
        "Scan",
        ["init", "x"],
        ["final", "ys_all"],
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[in_axis],
        scan_input_directions=[in_dir],
        scan_output_axes=[out_axis],
        scan_output_directions=[out_dir],
    )
    return model_of(
        [h.make_node("Sigmoid", ["x0"], ["w"]), scan],
        [vi("init", T.FLOAT, None), vi("x", T.FLOAT, None), vi("x0", T.FLOAT, None)],
        [vi("final", T.FLOAT, None), vi("ys_all", T.FLOAT, None)],
    )


@pytest.mark.parametrize(
    "in_axis,in_dir,out_axis,out_dir",
    [(0, 0, 0, 0), (0, 1, 0, 0), (1, 0, 0, 1), (2, 1, -1, 0), (-1, 0, 1, 1)],
)
def test_scan_axes_and_directions(isa: str, in_axis: int, in_dir: int, out_axis: int, out_dir: int) -> None:
    rng = np.random.default_rng(abs(in_axis) + 3 * abs(out_axis))
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    slice_shape = list(x.shape)
    del slice_shape[in_axis]
    init = rng.standard_normal(slice_shape).astype(np.float32)
    x0 = rng.standard_normal(slice_shape).astype(np.float32)
    check(scan_model(in_axis, in_dir, out_axis, out_dir, 3), {"init": init, "x": x, "x0": x0}, isa)


def test_scan_inputs_must_agree_on_steps() -> None:
    body = h.make_graph(
        [h.make_node("Add", ["a", "b"], ["s"]), h.make_node("Identity", ["s"], ["o"])],
        "body",
        [vi("a", T.FLOAT, [2]), vi("b", T.FLOAT, [2])],
        [vi("o", T.FLOAT, [2])],
    )
    m = model_of(
        [h.make_node("Scan", ["xa", "xb"], ["ys"], body=body, num_scan_inputs=2)],
        [vi("xa", T.FLOAT, [None, 2]), vi("xb", T.FLOAT, [None, 2])],
        [vi("ys", T.FLOAT, [None, 2])],
    )
    sess = mopt.Session(m.SerializeToString())
    got = sess.run(None, {"xa": np.ones((3, 2), np.float32), "xb": np.ones((3, 2), np.float32)})[0]
    assert_close(got, np.full((3, 2), 2, np.float32))
    with pytest.raises(mopt.MoptError, match=r"Scan.*scan input 1 has 4 steps along axis 0; scan input 0 has 3"):
        sess.run(None, {"xa": np.ones((3, 2), np.float32), "xb": np.ones((4, 2), np.float32)})


def test_control_flow_program_round_trips_through_a_file(tmp_path) -> None:
    """Bodies live in the program's JSON and their weights in its blob: a saved .mopt runs alone."""
    m = loop_model(trip=True, cond=False)
    cm = mopt.compile(m, 2)
    path = tmp_path / "loop.mopt"
    cm.save(str(path))
    x = np.array([1, 2, 3], np.float32)
    feeds = {"x": x, "M": np.array(4, np.int64)}
    got = mopt.Session(str(path)).run(None, feeds)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
