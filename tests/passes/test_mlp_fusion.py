"""FuseMLP: a feed-forward block (GEMM + activation, GEMM + bias + residual) becomes one
com.mopt.FusedMLP at -O3, also as GPT-2 exports it (2-D Gemms with reshapes between them, a
transposed weight); the outputs do not change; the rule refuses what it must."""

from __future__ import annotations

import numpy as np
import pytest

import mopt
from mopt.passes.fusion.mlp import FuseMLP
from mopt.passes.pattern import ApplyRules
from mopt.passes.pipelines import pipeline

from .helpers import Weights, assert_outputs_unchanged, at_level, make_model, node, ops, optimize, random_feeds, the


def bert_ffn(w: Weights, *, d: int = 16, hidden: int = 64, act: str = "Relu", extra: list | None = None, outputs=("y",), inits=None,
             w2_input: bool = False):
    """x [b, s, d] -> MatMul + b1 -> act -> MatMul + b2 -> + x."""
    nodes = [
        node("MatMul", ["x", "w1"], ["h0"]),
        node("Add", ["h0", "b1"], ["h1"]),
        node(act, ["h1"], ["h"]),
        node("MatMul", ["h", "w2"], ["y0"]),
        node("Add", ["y0", "b2"], ["y1"]),
        node("Add", ["y1", "x"], ["y"]),
        *(extra or []),
    ]
    weights = {"w1": w.normal(d, hidden, scale=0.3), "b1": w.normal(hidden), "w2": w.normal(hidden, d, scale=0.2), "b2": w.normal(d)}
    weights.update(inits or {})
    inputs = {"x": ["b", "s", d]}
    if w2_input:
        del weights["w2"]
        inputs["w2"] = [hidden, d]
    return make_model(nodes, inputs, list(outputs), weights)


def feeds(model, rows=(2, 9)):
    return {"x": Weights(5).normal(*rows, model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value)}


def test_feed_forward_block_fuses_at_o3_only():
    model = bert_ffn(Weights(1))
    graph = at_level(model, 3)
    assert ops(graph) == {"com.mopt.FusedMLP": 1}
    fused = the(graph, "com.mopt.FusedMLP")
    assert fused.attr("activation") == "Relu"
    assert [v is not None for v in fused.inputs] == [True] * 6
    assert "com.mopt.FusedMLP" not in ops(at_level(model, 2))
    compiled = assert_outputs_unchanged(model, graph, 3, feeds=feeds(model))
    sess = mopt.Session(compiled, intra_op_threads=2)
    assert "com.mopt.FusedMLP" in [op for _, op, _ in sess.kernels()]


def test_both_schedules_match_the_unfused_products():
    """Few rows (one product after the other) and many (blocks of rows): the same numbers as -O2."""
    model = bert_ffn(Weights(2), d=24, hidden=1024, act="Relu")
    o2, o3 = (mopt.Session(mopt.compile(model, lvl), intra_op_threads=2) for lvl in (2, 3))
    for rows in [(1, 1), (1, 13), (3, 200)]:
        f = feeds(model, rows)
        np.testing.assert_array_equal(o3.run(None, f)[0], o2.run(None, f)[0])


def test_gpt2_style_gemms_through_reshapes_fuse():
    """GPT-2's exported block: Gemm on [b*s, d], viewed as [b, s, 4d] and back, GELU (tanh form)
    spelled out, the second Gemm's weight transposed, the residual added to the 2-D product."""
    w = Weights(3)
    d, hid = 16, 64
    half, k, c = np.float32(0.5), np.float32(np.sqrt(2 / np.pi)), np.float32(0.044715)
    nodes = [
        node("Reshape", ["x", "flat"], ["x2"]),
        node("Gemm", ["x2", "w1", "b1"], ["g"]),
        node("Reshape", ["g", "view"], ["g3"]),
        node("Mul", ["g3", "half"], ["t0"]),
        node("Pow", ["g3", "three"], ["t1"]),
        node("Mul", ["t1", "c"], ["t2"]),
        node("Add", ["g3", "t2"], ["t3"]),
        node("Mul", ["t3", "k"], ["t4"]),
        node("Tanh", ["t4"], ["t5"]),
        node("Add", ["t5", "one"], ["t6"]),
        node("Mul", ["t0", "t6"], ["a3"]),
        node("Reshape", ["a3", "flat_h"], ["a2"]),
        node("Gemm", ["a2", "w2t", "b2"], ["o"], transB=1),
        node("Add", ["o", "x2"], ["y"]),
    ]
    inits = {
        "flat": np.array([-1, d], np.int64), "view": np.array([2, 9, hid], np.int64), "flat_h": np.array([-1, hid], np.int64),
        "w1": w.normal(d, hid, scale=0.3), "b1": w.normal(hid), "w2t": w.normal(d, hid, scale=0.2), "b2": w.normal(d),
        "half": half, "three": np.float32(3), "c": c, "k": k, "one": np.float32(1),
    }
    model = make_model(nodes, {"x": [2, 9, d]}, ["y"], inits)
    graph = at_level(model, 3)
    assert ops(graph).get("com.mopt.FusedMLP") == 1, ops(graph)
    fused = the(graph, "com.mopt.FusedMLP")
    assert fused.attr("activation") == "GeluTanh"
    assert fused.inputs[3].const.shape == (hid, d)  # W2 stored untransposed
    assert_outputs_unchanged(model, graph, 3, feeds=random_feeds(model))


def fused_first(model):
    """-O2's passes, then FuseMLP alone, with its reasons."""
    return optimize(model, *pipeline(2), ApplyRules(level=3, rules=[FuseMLP()]), explain=True)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("hidden-read-twice", "the hidden activation is read elsewhere"),
        ("no-activation", "applies no activation"),
        ("pruned", "a weight is pruned"),
        ("weight-input", "not a constant float32 matrix"),
    ],
)
def test_mlp_not_fused(case, reason):
    w = Weights(4)
    if case == "hidden-read-twice":
        model = bert_ffn(w, extra=[node("Neg", ["h"], ["z"])], outputs=("y", "z"))
    elif case == "no-activation":
        model = bert_ffn(w, act="Identity")
    elif case == "pruned":
        w2 = w.normal(64, 16)
        w2[:, :8] = 0.0  # one of the two 1 x 8 blocks of every row
        model = bert_ffn(w, inits={"w2": w2})
    else:
        model = bert_ffn(w, w2_input=True)
    graph, records = fused_first(model)
    assert "com.mopt.FusedMLP" not in ops(graph)
    assert any(reason in line for r in records for line in r.details), [r.details for r in records]


def test_fused_mlp_takes_float16_activations():
    """With float16 activations the fused block reads and writes float16 like the products it
    replaces (no Casts around it), and computes in float32."""
    model = bert_ffn(Weights(6), d=16, hidden=64, act="Relu")
    compiled = mopt.compile(model, 3, fp16_activations=True)
    hist = compiled.graph.op_histogram()
    assert hist.get("com.mopt.FusedMLP") == 1, hist
    assert hist.get("Cast") == 2, hist
    f = feeds(model, (2, 9))
    got = mopt.Session(compiled, intra_op_threads=2).run(None, f)[0]
    want = mopt.Session(mopt.compile(model, 3), intra_op_threads=2).run(None, f)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-3 * float(np.abs(want).max()))
