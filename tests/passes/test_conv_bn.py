"""FoldBatchNormIntoConv / FoldBatchNormIntoGemm: BatchNormalization after a layer with constant
weights disappears into those weights; FoldMulIntoBatchNorm / FoldAddIntoBatchNorm: a per-channel
scale or shift after a BatchNormalization joins its parameters. Anything that makes that wrong
leaves the graph alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pytest

from mopt.passes.fusion.conv_bn import FoldAddIntoBatchNorm, FoldBatchNormIntoConv, FoldBatchNormIntoGemm, FoldMulIntoBatchNorm

from .helpers import Weights, apply, assert_outputs_unchanged, bn_inputs, imported_ops, make_model, node, ops, the


@dataclass
class ConvCase:
    c_in: int = 4
    c_out: int = 6
    group: int = 1
    bias: bool = True
    spatial: tuple[int, ...] = (7, 7)
    kernel: tuple[int, ...] = (3, 3)
    attrs: dict[str, Any] = field(default_factory=dict)
    epsilon: float | None = None


CONV_CASES = {
    "bias": ConvCase(),
    "no-bias": ConvCase(bias=False),
    "group-2": ConvCase(c_in=4, c_out=6, group=2),
    "depthwise": ConvCase(c_in=6, c_out=6, group=6, bias=False),
    "strided-dilated-padded": ConvCase(attrs={"strides": [2, 1], "dilations": [1, 2], "pads": [1, 2, 1, 2]}),
    "conv1d": ConvCase(spatial=(9,), kernel=(3,), attrs={"pads": [1, 1]}),
    "pointwise-epsilon": ConvCase(kernel=(1, 1), epsilon=1e-2),
}


def conv_bn_model(case: ConvCase, seed: int = 0) -> onnx.ModelProto:
    w = Weights(seed)
    inits = {"w": w.normal(case.c_out, case.c_in // case.group, *case.kernel), **w.batchnorm(case.c_out)}
    conv_inputs = ["x", "w"]
    if case.bias:
        inits["b"] = w.normal(case.c_out)
        conv_inputs.append("b")
    bn_attrs = {} if case.epsilon is None else {"epsilon": case.epsilon}
    return make_model(
        [
            node("Conv", conv_inputs, ["c"], group=case.group, **case.attrs),
            node("BatchNormalization", bn_inputs("c"), ["y"], **bn_attrs),
        ],
        {"x": [2, case.c_in, *case.spatial]},
        ["y"],
        inits,
    )


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=list(CONV_CASES))
def test_batchnorm_folds_into_conv(case: ConvCase) -> None:
    model = conv_bn_model(case)
    graph, records = apply(model, FoldBatchNormIntoConv())
    assert imported_ops(model) == {"BatchNormalization": 1, "Conv": 1}
    assert ops(graph) == {"Conv": 1}
    assert records[0].details == ["FoldBatchNormIntoConv: 1x"]
    conv = the(graph, "Conv")
    assert conv.attr("group", 1) == case.group
    for k, v in case.attrs.items():
        assert conv.attr(k) == v
    assert len(conv.inputs) == 3
    assert conv.inputs[2] is not None
    assert conv.inputs[2].const.shape == (case.c_out,)
    assert conv.outputs[0].name == "y"
    assert_outputs_unchanged(model, graph, level=1)


@dataclass
class GemmCase:
    trans_b: int = 0
    c_shape: tuple[int, ...] | None = (5,)
    alpha: float = 1.0
    beta: float = 1.0


GEMM_CASES = {
    "bias": GemmCase(),
    "no-bias": GemmCase(c_shape=None),
    "transB": GemmCase(trans_b=1),
    "row-vector-bias": GemmCase(c_shape=(1, 5)),
    "scalar-bias": GemmCase(c_shape=()),
    "alpha-beta": GemmCase(trans_b=1, alpha=0.5, beta=2.0),
}
M, K, N = 3, 4, 5


def gemm_bn_model(case: GemmCase, m: int = M, n: int = N, seed: int = 0) -> onnx.ModelProto:
    w = Weights(seed)
    inits = {"w": w.normal(*((n, K) if case.trans_b else (K, n))), **w.batchnorm(n)}
    gemm_inputs = ["a", "w"]
    if case.c_shape is not None:
        inits["c"] = w.normal(*case.c_shape)
        gemm_inputs.append("c")
    return make_model(
        [
            node("Gemm", gemm_inputs, ["g"], transB=case.trans_b, alpha=case.alpha, beta=case.beta),
            node("BatchNormalization", bn_inputs("g"), ["y"]),
        ],
        {"a": [m, K]},
        ["y"],
        inits,
    )


@pytest.mark.parametrize("case", GEMM_CASES.values(), ids=list(GEMM_CASES))
def test_batchnorm_folds_into_gemm(case: GemmCase) -> None:
    model = gemm_bn_model(case)
    graph, records = apply(model, FoldBatchNormIntoGemm())
    assert ops(graph) == {"Gemm": 1}
    assert records[0].details == ["FoldBatchNormIntoGemm: 1x"]
    gemm = the(graph, "Gemm")
    assert gemm.attr("transB", 0) == case.trans_b
    assert gemm.attr("alpha") is None, "alpha is folded into B"
    assert gemm.attr("beta") is None, "beta is folded into C"
    assert_outputs_unchanged(model, graph, level=1)


def test_gemm_bias_per_row_is_not_a_column_bias() -> None:
    """C of shape (M, 1) adds one value per row; with M == N it has N elements but is no bias
    over the columns (this used to be folded as one, off by up to ~1)."""
    model = gemm_bn_model(GemmCase(c_shape=(N, 1)), m=N)
    graph, records = apply(model, FoldBatchNormIntoGemm(), explain=True)
    assert ops(graph) == {"BatchNormalization": 1, "Gemm": 1}
    assert "FoldBatchNormIntoGemm at 'y': not applied: C is not a bias over the output columns" in records[0].details
    assert_outputs_unchanged(model, graph, level=1)


# -- negative cases: the graph stays as it was --------------------------------------------------
def _conv_bn_nodes(extra: list[onnx.NodeProto] | None = None, **bn_attrs: Any) -> list[onnx.NodeProto]:
    return [
        node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        node("BatchNormalization", bn_inputs("c"), ["y"], **bn_attrs),
        *(extra or []),
    ]


def _conv_inits(seed: int = 0, drop: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    w = Weights(seed)
    inits = {"w": w.normal(4, 3, 3, 3), "b": w.normal(4), **w.batchnorm(4)}
    return {k: v for k, v in inits.items() if k not in drop}


NOT_FOLDED = {
    # name: (model, reason shown by --explain or None when the pattern does not even match)
    "bn-scale-is-an-input": (
        lambda: make_model(_conv_bn_nodes(), {"x": [1, 3, 5, 5], "bn_scale": [4]}, ["y"], _conv_inits(drop=("bn_scale",))),
        None,
    ),
    "conv-weights-are-an-input": (
        lambda: make_model(_conv_bn_nodes(), {"x": [1, 3, 5, 5], "w": [4, 3, 3, 3]}, ["y"], _conv_inits(drop=("w",))),
        None,
    ),
    "conv-output-used-twice": (
        lambda: make_model(_conv_bn_nodes([node("Relu", ["c"], ["r"])]), {"x": [1, 3, 5, 5]}, ["y", "r"], _conv_inits()),
        "Conv output feeds other nodes",
    ),
    "conv-output-is-a-graph-output": (
        lambda: make_model(_conv_bn_nodes(), {"x": [1, 3, 5, 5]}, ["y", "c"], _conv_inits()),
        "Conv output feeds other nodes",
    ),
}


@pytest.mark.parametrize("case", NOT_FOLDED, ids=list(NOT_FOLDED))
def test_batchnorm_not_folded_into_conv(case: str) -> None:
    build, reason = NOT_FOLDED[case]
    model = build()
    before = imported_ops(model)
    graph, records = apply(model, FoldBatchNormIntoConv(), explain=True)
    assert ops(graph) == before
    assert not records[0].changed
    if reason is not None:
        assert f"FoldBatchNormIntoConv at 'y': not applied: {reason}" in records[0].details
    assert_outputs_unchanged(model, graph, level=1)


def test_batchnorm_in_training_mode_is_not_folded() -> None:
    nodes = [
        node("Conv", ["x", "w", "b"], ["c"]),
        node("BatchNormalization", bn_inputs("c"), ["y", "running_mean", "running_var"], training_mode=1),
    ]
    model = make_model(nodes, {"x": [1, 3, 5, 5]}, ["y"], _conv_inits())
    graph, records = apply(model, FoldBatchNormIntoConv(), explain=True)
    assert ops(graph) == {"BatchNormalization": 1, "Conv": 1}
    assert "FoldBatchNormIntoConv at 'y': not applied: BatchNormalization is in training mode" in records[0].details


def test_batchnorm_not_folded_into_gemm_used_twice() -> None:
    w = Weights(0)
    model = make_model(
        [node("Gemm", ["a", "w"], ["g"]), node("BatchNormalization", bn_inputs("g"), ["y"]), node("Relu", ["g"], ["r"])],
        {"a": [M, K]},
        ["y", "r"],
        {"w": w.normal(K, N), **w.batchnorm(N)},
    )
    graph, records = apply(model, FoldBatchNormIntoGemm(), explain=True)
    assert ops(graph) == {"BatchNormalization": 1, "Gemm": 1, "Relu": 1}
    assert "FoldBatchNormIntoGemm at 'y': not applied: Gemm output feeds other nodes" in records[0].details
    assert_outputs_unchanged(model, graph, level=1)


AFFINE_AFTER_BN = {
    # constants broadcast as DenseNet's are ([C, 1, 1]), per-channel as [1, C, 1, 1], and a scalar
    "densenet-mul-add": ([("Mul", (6, 1, 1)), ("Add", (6, 1, 1))], {"BatchNormalization": 1, "Relu": 1}),
    "add-then-mul-4d": ([("Add", (1, 6, 1, 1)), ("Mul", (1, 6, 1, 1))], {"BatchNormalization": 1, "Relu": 1}),
    "scalar-mul-const-first": ([("Mul", ())], {"BatchNormalization": 1, "Relu": 1}),
    "per-pixel-is-not-per-channel": ([("Mul", (6, 5, 5))], {"BatchNormalization": 1, "Mul": 1, "Relu": 1}),
}


@pytest.mark.parametrize("case", AFFINE_AFTER_BN, ids=list(AFFINE_AFTER_BN))
def test_scale_and_shift_fold_into_batchnorm(case: str) -> None:
    steps, want = AFFINE_AFTER_BN[case]
    w = Weights(3)
    inits = w.batchnorm(6)
    nodes = [node("BatchNormalization", bn_inputs("x"), ["t0"], epsilon=1e-3)]
    for i, (op, shape) in enumerate(steps):
        inits[f"k{i}"] = w.normal(*shape) if shape else np.float32(1.7)
        ins = [f"k{i}", f"t{i}"] if not shape else [f"t{i}", f"k{i}"]
        nodes.append(node(op, ins, [f"t{i + 1}"]))
    nodes.append(node("Relu", [f"t{len(steps)}"], ["y"]))
    model = make_model(nodes, {"x": [2, 6, 5, 5]}, ["y"], inits)
    graph, _ = apply(model, FoldMulIntoBatchNorm(), FoldAddIntoBatchNorm())
    assert ops(graph) == want
    assert_outputs_unchanged(model, graph, level=1)


def test_scale_after_a_batchnorm_read_twice_stays() -> None:
    w = Weights(4)
    model = make_model(
        [node("BatchNormalization", bn_inputs("x"), ["b"]), node("Mul", ["b", "k"], ["y"]), node("Relu", ["b"], ["r"])],
        {"x": [1, 6, 4, 4]},
        ["y", "r"],
        {**w.batchnorm(6), "k": w.normal(6, 1, 1)},
    )
    graph, records = apply(model, FoldMulIntoBatchNorm(), explain=True)
    assert ops(graph) == {"BatchNormalization": 1, "Mul": 1, "Relu": 1}
    assert "FoldMulIntoBatchNorm at 'y': not applied: BatchNormalization output feeds other nodes" in records[0].details
    assert_outputs_unchanged(model, graph, level=1)
