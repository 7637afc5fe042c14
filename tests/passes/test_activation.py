"""FuseActivation: an activation after Conv/Gemm/MatMul becomes com.mopt.FusedConv/FusedGemm/
FusedMatMul with activation, activation_alpha and activation_beta; when the producer's result is
read elsewhere, already activated, not float32, or the Clip bounds are not constant, nothing fuses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mopt.frontend import import_onnx
from mopt.passes.fusion.activation import FuseActivation, FuseBatchNormActivation
from mopt.passes.manager import PassManager
from mopt.passes.pattern import ApplyRules

from .helpers import Weights, apply, assert_outputs_unchanged, at_level, bn_inputs, imported_ops, make_model, node, ops, the


@dataclass
class Act:
    op: str
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()  # extra inputs after x (Clip bounds)
    expect: dict[str, Any] = field(default_factory=dict)  # the fused node's activation attributes


NEG_INF, POS_INF = float("-inf"), float("inf")
ACTIVATIONS = {
    "Relu": Act("Relu", expect={"activation": "Relu"}),
    "LeakyRelu-default": Act("LeakyRelu", expect={"activation": "LeakyRelu", "activation_alpha": pytest.approx(0.01)}),
    "LeakyRelu-alpha": Act("LeakyRelu", {"alpha": 0.2}, expect={"activation": "LeakyRelu", "activation_alpha": pytest.approx(0.2)}),
    "Sigmoid": Act("Sigmoid", expect={"activation": "Sigmoid"}),
    "Tanh": Act("Tanh", expect={"activation": "Tanh"}),
    "HardSigmoid": Act(
        "HardSigmoid",
        {"alpha": 0.3, "beta": 0.4},
        expect={"activation": "HardSigmoid", "activation_alpha": pytest.approx(0.3), "activation_beta": pytest.approx(0.4)},
    ),
    "HardSigmoid-default": Act(
        "HardSigmoid", expect={"activation": "HardSigmoid", "activation_alpha": pytest.approx(0.2), "activation_beta": 0.5}
    ),
    "HardSwish": Act("HardSwish", expect={"activation": "HardSwish"}),
    "Clip-min-max": Act("Clip", inputs=("lo", "hi"), expect={"activation": "Clip", "activation_alpha": -0.5, "activation_beta": 0.75}),
    "Clip-max-only": Act("Clip", inputs=("", "hi"), expect={"activation": "Clip", "activation_alpha": NEG_INF, "activation_beta": 0.75}),
    "Clip-min-only": Act("Clip", inputs=("lo",), expect={"activation": "Clip", "activation_alpha": -0.5, "activation_beta": POS_INF}),
    "Clip-no-bounds": Act("Clip", expect={"activation": "Clip", "activation_alpha": NEG_INF, "activation_beta": POS_INF}),
}
CLIP_BOUNDS = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.75, np.float32)}


def _act_node(act: Act, x: str, y: str) -> onnx.NodeProto:
    return node(act.op, [x, *act.inputs], [y], **act.attrs)


def _bounds(act: Act) -> dict[str, np.ndarray]:
    return {k: v for k, v in CLIP_BOUNDS.items() if k in act.inputs}


def conv_act_model(act: Act, *, bias: bool = True, seed: int = 0, **conv_attrs: Any) -> onnx.ModelProto:
    w = Weights(seed)
    inits = {"w": w.normal(4, 3, 3, 3), **_bounds(act)}
    conv_in = ["x", "w"]
    if bias:
        inits["b"] = w.normal(4)
        conv_in.append("b")
    return make_model([node("Conv", conv_in, ["c"], **conv_attrs), _act_node(act, "c", "y")], {"x": [2, 3, 6, 6]}, ["y"], inits)


@pytest.mark.parametrize("act", ACTIVATIONS.values(), ids=list(ACTIVATIONS))
def test_activation_fuses_into_conv(act: Act) -> None:
    model = conv_act_model(act, pads=[1, 0, 1, 0], strides=[2, 1])
    graph, records = apply(model, FuseActivation())
    assert imported_ops(model) == {"Conv": 1, act.op: 1}
    assert ops(graph) == {"com.mopt.FusedConv": 1}
    assert records[0].details == ["FuseActivation: 1x"]
    fused = the(graph, "com.mopt.FusedConv")
    assert {k: fused.attr(k) for k in act.expect} == act.expect
    for k in {"activation_alpha", "activation_beta"} - set(act.expect):
        assert fused.attr(k) is None
    assert fused.attr("pads") == [1, 0, 1, 0], "the Conv's attributes are kept"
    assert fused.attr("strides") == [2, 1]
    assert [v.name if v else None for v in fused.inputs] == ["x", "w", "b"]
    assert fused.outputs[0].name == "y"
    assert_outputs_unchanged(model, graph, level=2)


def test_activation_fuses_into_conv_without_bias() -> None:
    model = conv_act_model(ACTIVATIONS["Relu"], bias=False, group=1)
    graph, _ = apply(model, FuseActivation())
    fused = the(graph, "com.mopt.FusedConv")
    assert [v.name for v in fused.inputs if v is not None] == ["x", "w"]
    assert fused.attr("group") == 1
    assert fused.attr("activation") == "Relu"
    assert_outputs_unchanged(model, graph, level=2)


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu-alpha", "Sigmoid", "Tanh", "Clip-min-max", "HardSwish"])
def test_activation_fuses_into_gemm(act: str) -> None:
    a = ACTIVATIONS[act]
    w = Weights(1)
    model = make_model(
        [node("Gemm", ["a", "w", "c"], ["g"], transB=1, alpha=0.5, beta=2.0), _act_node(a, "g", "y")],
        {"a": [3, 4]},
        ["y"],
        {"w": w.normal(5, 4), "c": w.normal(5), **_bounds(a)},
    )
    graph, records = apply(model, FuseActivation())
    assert ops(graph) == {"com.mopt.FusedGemm": 1}
    assert records[0].details == ["FuseActivation: 1x"]
    fused = the(graph, "com.mopt.FusedGemm")
    assert {k: fused.attr(k) for k in a.expect} == a.expect
    assert (fused.attr("transB"), fused.attr("alpha"), fused.attr("beta")) == (1, 0.5, 2.0)
    assert_outputs_unchanged(model, graph, level=2)


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "HardSigmoid", "Clip-max-only"])
def test_activation_fuses_into_matmul(act: str) -> None:
    """MatMul of a batched input by constant weights (and of two inputs)."""
    a = ACTIVATIONS[act]
    model = make_model(
        [node("MatMul", ["a", "w"], ["m"]), _act_node(a, "m", "y"), node("MatMul", ["a", "bt"], ["m2"]), _act_node(a, "m2", "y2")],
        {"a": [2, 3, 4], "bt": [2, 4, 3]},
        ["y", "y2"],
        {"w": Weights(2).normal(4, 5), **_bounds(a)},
    )
    graph, records = apply(model, FuseActivation())
    assert ops(graph) == {"com.mopt.FusedMatMul": 2}
    assert records[0].details == ["FuseActivation: 2x"]
    for n in graph.nodes:
        assert {k: n.attr(k) for k in a.expect} == a.expect
    assert [v.name for v in graph.outputs] == ["y", "y2"]
    assert_outputs_unchanged(model, graph, level=2)


def test_gelu_fuses_with_its_approximation() -> None:
    """Gelu (opset 20) fuses as Gelu or GeluTanh, after the approximate attribute."""
    w = Weights(3)
    model = make_model(
        [
            node("MatMul", ["a", "w1"], ["m1"]),
            node("Gelu", ["m1"], ["y1"]),
            node("MatMul", ["a", "w2"], ["m2"]),
            node("Gelu", ["m2"], ["y2"], approximate="tanh"),
        ],
        {"a": [3, 4]},
        ["y1", "y2"],
        {"w1": w.normal(4, 5), "w2": w.normal(4, 5)},
        opset=20,
    )
    graph, _ = apply(model, FuseActivation())
    assert ops(graph) == {"com.mopt.FusedMatMul": 2}
    assert [n.attr("activation") for n in graph.nodes] == ["Gelu", "GeluTanh"]
    assert_outputs_unchanged(model, graph, level=2)


def test_clip_bounds_from_old_opset_attributes() -> None:
    """Clip-6 takes its bounds as attributes; the import upgrades it to inputs, which then fuse."""
    w = Weights(4)
    model = make_model(
        [node("Conv", ["x", "w"], ["c"]), node("Clip", ["c"], ["y"], min=0.0, max=6.0)],
        {"x": [1, 3, 5, 5]},
        ["y"],
        {"w": w.normal(4, 3, 3, 3)},
        opset=10,
    )
    graph, _ = apply(model, FuseActivation())
    fused = the(graph, "com.mopt.FusedConv")
    assert (fused.attr("activation"), fused.attr("activation_alpha"), fused.attr("activation_beta")) == ("Clip", 0.0, 6.0)
    assert_outputs_unchanged(model, graph, level=2)


def test_clip_with_attribute_bounds_is_not_fused() -> None:
    """A model that stays below opset 11 (its upgrade failed; here: import at its own opset) keeps
    Clip-6 with min/max attributes. Fusing it as Clip(-inf, inf) dropped the bounds."""
    model = make_model(
        [node("Conv", ["x", "w"], ["c"]), node("Clip", ["c"], ["y"], min=-0.25, max=0.5)],
        {"x": [1, 3, 5, 5]},
        ["y"],
        {"w": Weights(4).normal(4, 3, 3, 3)},
        opset=10,
    )
    graph = import_onnx(model, canonical_opset=10)
    records = PassManager([ApplyRules(level=3, rules=[FuseActivation()])], verify_ir=True, explain=True).run(graph)
    assert ops(graph) == {"Clip": 1, "Conv": 1}
    assert the(graph, "Clip").attr("min") == -0.25
    assert records[0].details == ["FuseActivation at 'y': not applied: Clip bounds are attributes (opset < 11)"]
    assert_outputs_unchanged(model, graph, level=2)


def test_second_activation_does_not_fuse() -> None:
    """Conv -> Relu -> Sigmoid: the Relu fuses; the Sigmoid stays, the FusedConv has one activation."""
    model = make_model(
        [node("Conv", ["x", "w"], ["c"]), node("Relu", ["c"], ["r"]), node("Sigmoid", ["r"], ["y"])],
        {"x": [1, 3, 5, 5]},
        ["y"],
        {"w": Weights(5).normal(4, 3, 3, 3)},
    )
    graph, records = apply(model, FuseActivation(), explain=True)
    assert ops(graph) == {"Sigmoid": 1, "com.mopt.FusedConv": 1}
    assert the(graph, "com.mopt.FusedConv").attr("activation") == "Relu"
    assert "FuseActivation at 'r'" in records[0].details
    assert "FuseActivation at 'y': not applied: FusedConv already has an activation" in records[0].details
    assert_outputs_unchanged(model, graph, level=2)


# -- negative cases: the graph stays as it was --------------------------------------------------
def _conv_relu(extra: list[onnx.NodeProto], outputs: list[str]) -> onnx.ModelProto:
    return make_model(
        [node("Conv", ["x", "w"], ["c"]), node("Relu", ["c"], ["y"]), *extra],
        {"x": [1, 3, 5, 5]},
        outputs,
        {"w": Weights(6).normal(4, 3, 3, 3)},
    )


NOT_FUSED = {
    # name: (model, the activation node's name, reason shown by --explain or None when nothing matches)
    "conv-output-used-twice": (lambda: _conv_relu([node("Neg", ["c"], ["n"])], ["y", "n"]), "y", "Conv output feeds other nodes"),
    "conv-output-is-a-graph-output": (lambda: _conv_relu([], ["y", "c"]), "y", "Conv output feeds other nodes"),
    "clip-bound-is-an-input": (
        lambda: make_model(
            [node("Gemm", ["a", "w"], ["g"]), node("Clip", ["g", "lo"], ["y"])],
            {"a": [3, 4], "lo": []},
            ["y"],
            {"w": Weights(7).normal(4, 5)},
        ),
        "y",
        "Clip bounds are not constant scalars",
    ),
    "producer-is-not-fusable": (
        lambda: make_model([node("Add", ["a", "a"], ["s"]), node("Relu", ["s"], ["y"])], {"a": [3, 4]}, ["y"]),
        "y",
        None,
    ),
    "activation-of-a-graph-input": (lambda: make_model([node("Relu", ["a"], ["y"])], {"a": [3, 4]}, ["y"]), "y", None),
    "not-a-fusable-activation": (
        lambda: make_model(
            [node("MatMul", ["a", "w"], ["m"]), node("Elu", ["m"], ["y"])], {"a": [3, 4]}, ["y"], {"w": Weights(8).normal(4, 5)}
        ),
        "y",
        None,
    ),
}


@pytest.mark.parametrize("case", NOT_FUSED, ids=list(NOT_FUSED))
def test_activation_not_fused(case: str) -> None:
    build, at, reason = NOT_FUSED[case]
    model = build()
    before = imported_ops(model)
    graph, records = apply(model, FuseActivation(), explain=True)
    assert ops(graph) == before
    assert not records[0].changed
    if reason is None:
        assert records[0].details == []
    else:
        assert records[0].details == [f"FuseActivation at '{at}': not applied: {reason}"]
    assert_outputs_unchanged(model, graph, level=2)


def test_integer_matmul_is_not_fused() -> None:
    """Relu of an int32 MatMul: the fused kernels are float32 only."""
    a = helper.make_tensor_value_info("a", TensorProto.INT32, [3, 4])
    g = helper.make_graph(
        [node("MatMul", ["a", "w"], ["m"]), node("Relu", ["m"], ["y"])],
        "int",
        [a],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        initializer=[numpy_helper.from_array(np.arange(20, dtype=np.int32).reshape(4, 5) - 10, "w")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    graph, records = apply(model, FuseActivation(), explain=True)
    assert ops(graph) == {"MatMul": 1, "Relu": 1}
    assert records[0].details == ["FuseActivation at 'y': not applied: not float32"]
    feeds = {"a": np.arange(12, dtype=np.int32).reshape(3, 4) - 6}
    assert_outputs_unchanged(model, graph, level=2, feeds=feeds)


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu-alpha", "Clip-min-max", "Sigmoid", "HardSwish"])
def test_activation_fuses_into_batchnorm(act: str) -> None:
    """A BatchNormalization with no layer before it to fold into (a concatenation, as in DenseNet)
    applies the activation as it writes each channel (-O3); every ISA checked through mopt -O3."""
    a = ACTIVATIONS[act]
    w = Weights(5)
    nodes = [node("Concat", ["x", "z"], ["c"], axis=1), node("BatchNormalization", bn_inputs("c"), ["b"], epsilon=1e-3), _act_node(a, "b", "y")]
    model = make_model(nodes, {"x": [2, 3, 7, 9], "z": [2, 2, 7, 9]}, ["y"], {**w.batchnorm(5), **_bounds(a)})
    graph, records = apply(model, FuseBatchNormActivation())
    assert ops(graph) == {"Concat": 1, "com.mopt.FusedBatchNormalization": 1}
    fused = the(graph, "com.mopt.FusedBatchNormalization")
    assert {k: fused.attr(k) for k in a.expect} == a.expect
    assert fused.attr("epsilon") == pytest.approx(1e-3)
    assert_outputs_unchanged(model, graph, level=3)
    assert "com.mopt.FusedBatchNormalization" not in ops(at_level(model, 2)), "-O3 only (quantization prepares at -O2)"


def test_batchnorm_read_twice_keeps_its_activation_apart() -> None:
    w = Weights(6)
    nodes = [node("BatchNormalization", bn_inputs("x"), ["b"]), node("Relu", ["b"], ["y"]), node("Neg", ["b"], ["n"])]
    model = make_model(nodes, {"x": [1, 4, 5, 5]}, ["y", "n"], w.batchnorm(4))
    graph, records = apply(model, FuseBatchNormActivation(), explain=True)
    assert ops(graph) == {"BatchNormalization": 1, "Neg": 1, "Relu": 1}
    assert "FuseBatchNormActivation at 'y': not applied: BatchNormalization output feeds other nodes" in records[0].details


# ---- SiLU: x * Sigmoid(x) -----------------------------------------------------------------------

from mopt.passes.fusion.activation import FuseSilu  # noqa: E402


def _silu(x: str, y: str, *, sigmoid_first: bool = False) -> list:
    mul = node("Mul", [f"{y}_sig", x] if sigmoid_first else [x, f"{y}_sig"], [y])
    return [node("Sigmoid", [x], [f"{y}_sig"]), mul]


@pytest.mark.parametrize("producer", ["Conv", "Gemm", "MatMul"])
@pytest.mark.parametrize("sigmoid_first", [False, True])
def test_silu_fuses_into_its_producer(producer: str, sigmoid_first: bool) -> None:
    w = Weights(41)
    if producer == "Conv":
        prod, inputs = node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), {"x": [2, 3, 6, 6]}
        inits = {"w": w.normal(4, 3, 3, 3), "b": w.normal(4)}
    elif producer == "Gemm":
        prod, inputs, inits = node("Gemm", ["x", "w", "b"], ["c"], transB=1), {"x": [3, 8]}, {"w": w.normal(5, 8), "b": w.normal(5)}
    else:
        prod, inputs, inits = node("MatMul", ["x", "w"], ["c"]), {"x": [2, 3, 8]}, {"w": w.normal(8, 5)}
    model = make_model([prod, *_silu("c", "y", sigmoid_first=sigmoid_first)], inputs, ["y"], inits)
    graph, records = apply(model, FuseSilu())
    fused_op = {"Conv": "com.mopt.FusedConv", "Gemm": "com.mopt.FusedGemm", "MatMul": "com.mopt.FusedMatMul"}[producer]
    assert ops(graph) == {fused_op: 1}
    assert records[0].details == ["FuseSilu: 1x"]
    assert the(graph, fused_op).attr("activation") == "Silu"
    assert [v.name for v in graph.outputs] == ["y"]
    x = w.normal(*[int(d) for d in inputs["x"]], scale=4.0)  # wide enough to reach both tails of the sigmoid
    assert_outputs_unchanged(model, graph, level=2, feeds={"x": x})


def test_silu_after_matmul_with_bias_at_level_two() -> None:
    """Llama's gate projection with a bias (Qwen2 has one): MatMul + Add, then SiLU, one kernel."""
    import mopt

    w = Weights(42)
    nodes = [node("MatMul", ["x", "w"], ["m"]), node("Add", ["m", "b"], ["c"]), *_silu("c", "g"), node("Mul", ["g", "x"], ["y"])]
    model = make_model(nodes, {"x": [2, 5, 16]}, ["y"], {"w": w.normal(16, 16), "b": w.normal(16)})
    kernels = [op for _, op, _ in mopt.Session(mopt.compile(model, 2)).kernels()]
    assert kernels == ["com.mopt.FusedMatMul", "Mul"], kernels
    assert_outputs_unchanged(model, at_level(model, 2), level=2)


@pytest.mark.parametrize("case", ["x-read-elsewhere", "already-activated", "not-a-producer", "sigmoid-of-another"])
def test_silu_not_fused(case: str) -> None:
    w = Weights(43)
    inits = {"w": w.normal(8, 5)}
    if case == "x-read-elsewhere":
        nodes, outs = [node("MatMul", ["x", "w"], ["c"]), *_silu("c", "y"), node("Neg", ["c"], ["z"])], ["y", "z"]
        reason = "read outside the SiLU"
    elif case == "already-activated":
        nodes, outs = [node("MatMul", ["x", "w"], ["m"]), node("Relu", ["m"], ["c"]), *_silu("c", "y")], ["y"]
        reason = "already has an activation"
    elif case == "not-a-producer":
        nodes, outs = [node("MatMul", ["x", "w"], ["m"]), node("Add", ["m", "m"], ["c"]), *_silu("c", "y")], ["y"]
        reason = "does not come from a Conv, Gemm or MatMul"
    else:
        nodes, outs = [node("MatMul", ["x", "w"], ["c"]), node("Sigmoid", ["x2"], ["s"]), node("Mul", ["c", "s"], ["y"])], ["y"]
        reason = None
    inputs = {"x": [3, 8], "x2": [3, 5]} if case == "sigmoid-of-another" else {"x": [3, 8]}
    model = make_model(nodes, inputs, outs, inits)
    passes = (FuseActivation(), FuseSilu()) if case == "already-activated" else (FuseSilu(),)
    graph, records = apply(model, *passes, explain=True)
    details = [line for r in records for line in r.details]
    if reason:
        assert any(reason in line for line in details), details
    assert not any(n.attr("activation") == "Silu" for n in graph.nodes)
    assert_outputs_unchanged(model, graph, level=2)
