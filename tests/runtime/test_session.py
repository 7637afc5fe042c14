"""Session: the onnxruntime-like API, memory planning per input-shape signature, threads."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.testing.assert_close import assert_close
from mopt.testing.reference import run_reference


def _mlp(batch: int | str = "batch") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((17, 33)).astype(np.float32)
    w2 = rng.standard_normal((33, 5)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["p"], axis=-1),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 17])],
        [
            helper.make_tensor_value_info("p", TensorProto.FLOAT, [batch, 5]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, 5]),
        ],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_describes_inputs_and_outputs_like_onnxruntime() -> None:
    sess = mopt.Session(_mlp())
    (x,) = sess.get_inputs()
    assert (x.name, x.shape, x.type) == ("x", ["batch", 17], "tensor(float)")
    assert [o.name for o in sess.get_outputs()] == ["p", "z"]
    assert sess.get_providers() == ["MoptCPU"]


@pytest.mark.parametrize("batch", [1, 7, 64, 0])
def test_dynamic_batch_matches_reference(batch: int, isa: str) -> None:
    model = _mlp()
    sess = mopt.Session(model, isa=isa)
    x = np.random.default_rng(batch).standard_normal((batch, 17)).astype(np.float32)
    got = sess.run(None, {"x": x})
    for g, w in zip(got, run_reference(model, {"x": x}), strict=True):
        assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_output_subset_and_order() -> None:
    sess = mopt.Session(_mlp())
    x = np.ones((2, 17), np.float32)
    p, z = sess.run(None, {"x": x})
    (z2,) = sess.run(["z"], {"x": x})
    z3, p3 = sess.run(["z", "p"], {"x": x})
    np.testing.assert_array_equal(z, z2)
    np.testing.assert_array_equal(z, z3)
    np.testing.assert_array_equal(p, p3)


def test_outputs_are_owned_by_the_caller() -> None:
    """A result must not change when the session runs again (outputs are not arena views)."""
    sess = mopt.Session(_mlp())
    a = np.ones((3, 17), np.float32)
    (p1,) = sess.run(["p"], {"x": a})
    keep = p1.copy()
    sess.run(["p"], {"x": -a})
    np.testing.assert_array_equal(p1, keep)
    assert p1.flags.writeable


def test_a_dropped_output_buffer_is_reused_by_the_next_run() -> None:
    # fresh large buffers page-fault on every run; a dropped output's buffer goes back to the session
    sess = mopt.Session(_mlp())
    a = np.ones((512, 17), np.float32)
    (p1,) = sess.run(["p"], {"x": a})
    addr = p1.ctypes.data
    del p1
    (p2,) = sess.run(["p"], {"x": -a})
    assert p2.ctypes.data == addr
    (p3,) = sess.run(["p"], {"x": a})  # p2 is still held: p3 must not share its memory
    assert p3.ctypes.data != p2.ctypes.data
    assert not np.shares_memory(p2, p3)
    want = run_reference(_mlp(), {"x": -a})[0]
    assert_close(p2, want, rtol=1e-5, atol=1e-5)


def test_outputs_outlive_their_session() -> None:
    sess = mopt.Session(_mlp())
    (p,) = sess.run(["p"], {"x": np.ones((4, 17), np.float32)})
    keep = p.copy()
    del sess
    np.testing.assert_array_equal(p, keep)


def test_memory_plan_is_reused_and_nothing_grows_after_the_first_run() -> None:
    sess = mopt.Session(_mlp(), intra_op_threads=2)
    x = np.ones((8, 17), np.float32)
    sess.run(None, {"x": x})  # traces the shapes and plans the arena
    sess.run(None, {"x": x})  # the first run on the plan allocates the arena once
    first = sess.stats()
    assert first["plans"] == 1
    for _ in range(5):
        sess.run(None, {"x": x})
    after = sess.stats()
    assert after["runs"] == first["runs"] + 5
    assert after["plans"] == first["plans"], "the plan for a seen shape must be cached"
    assert after["arena_grows"] == first["arena_grows"]
    assert after["dynamic_allocs"] == first["dynamic_allocs"]
    # a new shape gets its own plan, then also stops growing
    for _ in range(2):
        sess.run(None, {"x": np.ones((2, 17), np.float32)})
    grown = sess.stats()
    assert grown["plans"] == after["plans"] + 1
    sess.run(None, {"x": np.ones((2, 17), np.float32)})
    sess.run(None, {"x": x})
    assert sess.stats()["arena_grows"] == grown["arena_grows"], "a smaller shape fits the arena already held"
    assert sess.stats()["dynamic_allocs"] == grown["dynamic_allocs"]


def test_arena_reuses_memory_across_lifetimes() -> None:
    """A chain of 12 Relus over 1 MiB tensors needs a few live buffers, not 12."""
    n = 12
    nodes = [helper.make_node("Relu", [f"t{i}" if i else "x"], [f"t{i + 1}" if i < n - 1 else "y"]) for i in range(n)]
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    sess = mopt.Session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), level=0)
    for _ in range(2):
        sess.run(None, {"x": np.ones((256, 1024), np.float32)})
    assert 0 < sess.stats()["arena_bytes"] <= 3 * 256 * 1024 * 4


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_agree(threads: int) -> None:
    model = _mlp()
    x = np.random.default_rng(1).standard_normal((33, 17)).astype(np.float32)
    ref = mopt.Session(model, intra_op_threads=1).run(None, {"x": x})
    sess = mopt.Session(model, intra_op_threads=threads)
    assert sess.num_threads == threads
    for g, w in zip(sess.run(None, {"x": x}), ref, strict=True):
        assert_close(g, w, rtol=1e-6, atol=1e-7)


def test_default_threads_and_sess_options() -> None:
    import os

    assert mopt.Session(_mlp()).num_threads == (os.cpu_count() or 1)

    class Options:  # what onnxruntime.SessionOptions offers
        intra_op_num_threads = 1

    assert mopt.Session(_mlp(), Options()).num_threads == 1


def test_kernels_name_their_isa(isa: str) -> None:
    sess = mopt.Session(_mlp(), isa=isa)
    assert sess.isa == isa
    impls = dict((name, impl) for name, _, impl in sess.kernels())
    assert any(f"@{isa}" in impl for impl in impls.values()), impls


def test_profile_reports_a_time_per_node() -> None:
    sess = mopt.Session(_mlp(), level=0)
    prof: list[float] = []
    sess.run(None, {"x": np.ones((4, 17), np.float32)}, profile=prof)
    assert len(prof) == len(sess.kernels())
    assert all(t >= 0 for t in prof)


def test_initializers_listed_as_inputs_are_constants_unless_fed() -> None:
    """Old-IR style: an initializer also listed as a graph input may be overridden by a feed."""
    w = np.full((3,), 2.0, np.float32)
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]), helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(mopt.Session(m).run(None, {"x": x})[0], x * 2)
    sess = mopt.Session(m, overridable_initializers=True)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x * 2)
    np.testing.assert_array_equal(sess.run(None, {"x": x, "w": np.full(3, 5.0, np.float32)})[0], x * 5)


def test_measure_peak_reports_throughput_and_clock() -> None:
    """The probe behind benchmarks/kernels/bench_gemm.py: positive FMA throughput for vector ISAs,
    a clear error for the scalar one (whose loop a compiler may fold away)."""
    from mopt import _C
    from mopt.errors import MoptError

    for isa in _C.available_isas():
        if isa == "scalar":
            with pytest.raises(MoptError, match="vector ISAs only"):
                _C.measure_peak(isa, 0.01)
            continue
        m = _C.measure_peak(isa, 0.01)
        assert m["fma_gflops"] > 0.5
        assert m["clock_ghz"] == 0.0 or 0.2 < m["clock_ghz"] < 10.0
    with pytest.raises(MoptError, match="not available"):
        _C.measure_peak("no-such-isa", 0.01)


def _dense_block(layers: int = 5, growth: int = 4, c0: int = 8) -> onnx.ModelProto:
    """DenseNet's pattern: each layer reads the concatenation of all features so far and appends its
    own; the features are also read after the concatenation that takes them (a residual-like Add)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Relu", ["x"], ["c0"])]
    inits = []
    ch = c0
    for k in range(1, layers + 1):
        w = numpy_helper.from_array((rng.standard_normal((growth, ch, 1, 1)) / np.sqrt(ch)).astype(np.float32), f"w{k}")
        inits.append(w)
        nodes += [
            helper.make_node("Conv", [f"c{k - 1}", f"w{k}"], [f"f{k}"]),
            helper.make_node("Concat", [f"c{k - 1}", f"f{k}"], [f"c{k}"], axis=1),
        ]
        ch += growth
    # read an early feature and an inner concatenation late, so their blocks must stay whole
    nodes += [
        helper.make_node("ReduceSum", [f"c{layers}"], ["s"], keepdims=1),
        helper.make_node("Add", ["s", "f1"], ["y"]),
        helper.make_node("ReduceMean", ["c2"], ["m"], keepdims=0),
    ]
    g = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c0, "h", "w"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "m")],
        initializer=inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_concatenations_are_computed_in_place() -> None:
    """From the second run on, the features are planned inside the concatenations that take them:
    the block's arena is about one final concatenation, not two, and the results stay exact
    across runs and shapes (each shape has its own plan; the first run of a shape has none)."""
    model = _dense_block()
    sess = mopt.Session(model, level=2, intra_op_threads=2)
    for h, w in [(9, 11), (9, 11), (9, 11), (4, 3), (4, 3), (9, 11)]:
        x = np.random.default_rng(h * w).standard_normal((1, 8, h, w)).astype(np.float32)
        want = run_reference(model, {"x": x})
        got = sess.run(None, {"x": x})
        for g_, w_ in zip(got, want, strict=True):
            assert_close(g_, w_, rtol=1e-5, atol=1e-5)
    final = 1 * (8 + 5 * 4) * 9 * 11 * 4
    assert sess.stats()["arena_bytes"] < 1.5 * final, sess.stats()


CONCATS = {
    # (inputs, axis, input shapes): an input twice, a graph input, an axis with a batch before it
    # (copied: its inputs are not contiguous in the output), an axis after size-1 dimensions
    "same-input-twice": (["a", "a", "b"], 1, {"x": [1, 3, 5, 5]}),
    "graph-input-and-computed": (["x", "b"], 1, {"x": [1, 3, 5, 5]}),
    "batch-2-axis-1": (["a", "b"], 1, {"x": [2, 3, 5, 5]}),
    "axis-2-after-ones": (["a", "b"], 2, {"x": [1, 1, 5, 5]}),
    "axis-3-outer-rows": (["a", "b"], 3, {"x": [1, 2, 5, 5]}),
}


@pytest.mark.parametrize("case", CONCATS, ids=list(CONCATS))
def test_concatenation_inputs_in_place_or_copied(case: str) -> None:
    ins, axis, shapes = CONCATS[case]
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Neg", ["x"], ["b"]),
        helper.make_node("Concat", ins, ["c"], axis=axis),
        helper.make_node("Sigmoid", ["c"], ["y"]),
        helper.make_node("Add", ["a", "b"], ["z"]),  # both read again after the concatenation
    ]
    g = helper.make_graph(
        nodes,
        "cat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shapes["x"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    sess = mopt.Session(model, level=0, intra_op_threads=2)
    x = np.random.default_rng(3).standard_normal(shapes["x"]).astype(np.float32)
    want = run_reference(model, {"x": x})
    for _ in range(3):
        for g_, w_ in zip(sess.run(None, {"x": x}), want, strict=True):
            assert_close(g_, w_, rtol=1e-6, atol=1e-6)
