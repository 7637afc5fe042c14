"""The thread pool under stress: more threads than cores (workers descheduled in the middle of
jobs), many small parallel regions back to back, several pools at once, pools torn down right
after a run. Every answer must equal the one-thread answer bit for bit."""

from __future__ import annotations

import threading

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import mopt


def _many_small_ops(layers: int = 12, width: int = 96) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"r{i}"]),
            helper.make_node("Add", [f"r{i}", x], [f"a{i}"]),
            helper.make_node("Softmax", [f"a{i}"], [f"s{i}"], axis=-1),
        ]
        x = f"s{i}"
    graph = helper.make_graph(
        nodes,
        "stress",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_oversubscribed_pool_gives_the_one_thread_answer() -> None:
    model = _many_small_ops()
    x = np.random.default_rng(1).standard_normal((37, 96)).astype(np.float32)
    want = mopt.Session(model, level=0, intra_op_threads=1).run(None, {"x": x})[0]
    sess = mopt.Session(model, level=0, intra_op_threads=8)
    for _ in range(150):
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], want)


def test_pools_of_several_sessions_run_at_once() -> None:
    model = _many_small_ops(layers=6)
    x = np.random.default_rng(2).standard_normal((17, 96)).astype(np.float32)
    want = mopt.Session(model, level=0, intra_op_threads=1).run(None, {"x": x})[0]
    errors: list[str] = []

    def worker(threads: int) -> None:
        sess = mopt.Session(model, level=0, intra_op_threads=threads)
        for _ in range(40):
            got = sess.run(None, {"x": x})[0]
            if not np.array_equal(got, want):
                errors.append(f"{threads} threads: wrong answer")
                return

    ts = [threading.Thread(target=worker, args=(n,)) for n in (2, 3, 4, 5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def test_one_session_shared_by_python_threads() -> None:
    model = _many_small_ops(layers=4)
    sess = mopt.Session(model, level=0, intra_op_threads=3)
    xs = [np.random.default_rng(i).standard_normal((9, 96)).astype(np.float32) for i in range(4)]
    wants = [sess.run(None, {"x": x})[0] for x in xs]
    errors: list[int] = []

    def worker(i: int) -> None:
        for _ in range(30):
            if not np.array_equal(sess.run(None, {"x": xs[i]})[0], wants[i]):
                errors.append(i)
                return

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_pool_torn_down_right_after_a_run() -> None:
    model = _many_small_ops(layers=2)
    x = np.ones((5, 96), np.float32)
    cm = mopt.compile(model, 0)
    want = mopt.Session(cm, intra_op_threads=1).run(None, {"x": x})[0]
    for threads in (2, 3, 8) * 10:
        sess = mopt.Session(cm, intra_op_threads=threads)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], want)
        del sess
