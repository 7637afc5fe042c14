"""Structured pruning: the pruned graph is valid ONNX, smaller, and equals the original with the
removed channels zeroed in their consumers; groups joined by Add/Concat/depthwise stay consistent."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from mopt.errors import InvalidArgumentError
from mopt.prune import analyze, apply_pruning, model_cost, prune, zero_channels
from . import models

SHAPES = {"cnn": (2, 3, 12, 12), "residual": (2, 4, 7, 9), "concat": (3, 4, 6, 6), "mlp": (2, 5, 16), "flatten_head": (3, 2, 4, 4)}
SHAPES["gemm_relu_gemm"] = (4, 16)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def random_removal(an, seed: int = 0, frac: float = 0.4) -> set[int]:
    rng = np.random.default_rng(seed)
    removed: set[int] = set()
    for comp in an.components():
        cls = an.prunable_classes(comp)
        n = int(len(cls) * frac)
        if n:
            removed.update(int(c) for c in rng.choice(cls, n, replace=False))
    return removed


def weight_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.dims) for t in model.graph.initializer}


@pytest.mark.parametrize("name", sorted(models.ALL))
@pytest.mark.parametrize("seed", [0, 1])
def test_removing_equals_zeroing(name: str, seed: int) -> None:
    model = models.ALL[name]()
    an = analyze(model)
    removed = random_removal(an, seed)
    assert removed, f"{name}: nothing was prunable"
    pruned = apply_pruning(an, removed)
    onnx.checker.check_model(pruned)
    onnx.shape_inference.infer_shapes(pruned, strict_mode=True)
    x = np.random.default_rng(seed).standard_normal(SHAPES[name]).astype(np.float32)
    want = run(zero_channels(an, removed), x)
    got = run(pruned, x)
    assert got.shape == run(model, x).shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # and the zeroing really changed something, so the comparison has teeth
    assert not np.allclose(want, run(model, x), atol=1e-3)
    p0, f0 = model_cost(model)
    p1, f1 = model_cost(pruned)
    assert p1 < p0
    assert f1 < f0


def test_residual_joins_its_branches() -> None:
    model = models.residual()
    an = analyze(model)
    comps = an.components()
    # convs 1, 3 and 4 write into the same residual stream: one component
    joined = [c for c in comps if len(c) == 3]
    assert len(joined) == 1
    removed = random_removal(an, 0, 0.5)
    pruned = apply_pruning(an, removed)
    shapes = weight_shapes(pruned)
    outs = sorted({shapes[model.graph.node[n].input[1]][0] for n in joined[0]})
    assert len(outs) == 1 and outs[0] < 8
    mul = next(n for n in pruned.graph.node if n.op_type == "Mul")
    assert shapes[mul.input[1]] == (1, outs[0], 1, 1)


def test_concat_keeps_input_channels_and_slices_consumer() -> None:
    model = models.concat()
    an = analyze(model)
    assert [n for n in (len(an.prunable_classes(c)) for c in an.components()) if n] == [5, 7]
    # the graph input's 4 channels are in the concat but pinned
    assert any("has no prunable producer" in why for why in an.pinned.values())
    removed = random_removal(an, 0, 0.5)
    pruned = apply_pruning(an, removed)
    last = weight_shapes(pruned)[pruned.graph.node[-1].input[1]]
    assert last[1] == 4 + (5 - 2) + (7 - 3)


def test_depthwise_group_follows_input() -> None:
    model = models.cnn()
    an = analyze(model)
    removed = random_removal(an, 0, 0.5)
    pruned = apply_pruning(an, removed)
    dw = next(n for n in pruned.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute))
    group = next(a.i for a in dw.attribute if a.name == "group")
    assert weight_shapes(pruned)[dw.input[1]][0] == group == 12 - 6


def test_flatten_of_a_map_removes_every_position() -> None:
    model = models.flatten_head()
    an = analyze(model)
    removed = random_removal(an, 0, 0.5)
    pruned = apply_pruning(an, removed)
    w = weight_shapes(pruned)[pruned.graph.node[3].input[1]]
    conv_out = weight_shapes(pruned)[pruned.graph.node[0].input[1]][0]
    assert w[1] == conv_out * 16


def test_outputs_and_unknown_readers_are_pinned() -> None:
    model = models.mlp()
    an = analyze(model)
    # the last MatMul writes the graph output: its 8 channels cannot go
    last = max(an.source_ids)
    assert all(an.root(c) in an.pinned for c in an.source_ids[last])
    with pytest.raises(InvalidArgumentError, match="graph output"):
        apply_pruning(an, {an.root(an.source_ids[last][0])})


def test_mean_compensation_matches_numpy() -> None:
    model = models.gemm_relu_gemm()
    an = analyze(model)
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    g1, g2 = model.graph.node[0], model.graph.node[2]
    h = np.maximum(x @ w[g1.input[1]].T + w[g1.input[2]], 0)
    means = {g2.input[0]: h.mean(0)}
    removed = {an.root(an.source_ids[0][i]) for i in (1, 4, 5, 9)}
    pruned = apply_pruning(an, removed, means)
    h_ref = h.copy()
    h_ref[:, [1, 4, 5, 9]] = h.mean(0)[[1, 4, 5, 9]]
    want = h_ref @ w[g2.input[1]] + w[g2.input[2]]
    np.testing.assert_allclose(run(pruned, x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["cnn", "residual", "mlp"])
@pytest.mark.parametrize("with_data", [False, True])
def test_prune_meets_the_flops_target(name: str, with_data: bool) -> None:
    model = models.ALL[name]()
    x = np.random.default_rng(0).standard_normal(SHAPES[name]).astype(np.float32)
    res = prune(model, 0.6, {"x": x} if with_data else None)
    onnx.checker.check_model(res.model)
    assert res.flops_after <= 0.6 * res.flops_before
    assert res.flops_before == model_cost(model)[1]
    assert run(res.model, x).shape == run(model, x).shape
    assert any(layer.after < layer.before for layer in res.layers)
    if with_data:
        assert res.error is not None and np.isfinite(res.error)


def test_a_fixed_plan_gives_the_same_model_every_time() -> None:
    model = models.cnn()
    x = np.random.default_rng(0).standard_normal(SHAPES["cnn"]).astype(np.float32)
    lines: list[str] = []
    searched = prune(model, 0.6, {"x": x}, log=lines.append)
    plan_line = next(line for line in lines if line.strip().startswith("plan: "))
    plan = {k: int(v) for k, v in (item.split("=") for item in plan_line.split("plan: ")[1].split("  (")[0].split(", "))}
    assert any(plan.values())
    fixed = [prune(model, 0.6, {"x": x}, plan=plan) for _ in range(2)]
    for res in fixed:
        assert [layer.after for layer in res.layers] == [layer.after for layer in searched.layers]
        np.testing.assert_array_equal(run(res.model, x), run(searched.model, x))
    with pytest.raises(InvalidArgumentError, match="prunable components are"):
        prune(model, 0.6, {"x": x}, plan={"nope": 1})
    with pytest.raises(InvalidArgumentError, match="sixteenths"):
        prune(model, 0.6, {"x": x}, plan={next(iter(plan)): 16})


def test_prune_rejects_bad_targets_and_unprunable_models() -> None:
    with pytest.raises(InvalidArgumentError, match="fraction"):
        prune(models.cnn(), 1.5)
    with pytest.raises(InvalidArgumentError, match="fraction"):
        prune(models.cnn(), 0.0)
    b = models.Builder()
    y = b.op("Gemm", "x", b.w(4, 3), transB=1)
    with pytest.raises(InvalidArgumentError, match="nothing in this model can be pruned"):
        prune(b.model([("x", [2, 3])], [y]), 0.5)


def test_mobilenet_v2_residual_blocks(shared_models) -> None:
    """The exported MobileNetV2: inverted residuals join their projections; removing = zeroing."""
    model = onnx.load(str(shared_models / "mobilenet_v2.onnx"))
    an = analyze(model)
    assert sum(1 for c in an.components() if len(c) > 1) >= 5  # the residual streams
    removed = random_removal(an, 0, 0.3)
    pruned = apply_pruning(an, removed)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    name = model.graph.input[0].name
    got = ort.InferenceSession(pruned.SerializeToString()).run(None, {name: x})[0]
    want = ort.InferenceSession(zero_channels(an, removed).SerializeToString()).run(None, {name: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))
    assert model_cost(pruned)[1] < 0.8 * model_cost(model)[1]
