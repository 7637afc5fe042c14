"""Static and dynamic quantization: the graph is rewritten onto the int8 kernels, the outputs stay
close to fp32 (onnx.reference), and the accuracy fallback puts layers back to fp32 worst first."""

from __future__ import annotations

import numpy as np
import pytest

import mopt
from mopt.errors import InvalidArgumentError
from mopt.quant import quantize
from mopt.quant.rewrite import cosine
from mopt.testing.reference import run_reference
from .models import images, mlp, small_cnn


def _ops(compiled) -> list[str]:
    return [n["op"] for n in compiled.program["graph"]["nodes"]]


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_static_rewrites_onto_int8_kernels(method: str, isa: str) -> None:
    model = small_cnn()
    res = quantize(model, {"x": images(48)}, method=method, isa=isa, show_progress=False, batch=16)
    ops = _ops(res.compiled)
    # the 2x2 MaxPool runs inside conv1 (QConv{max_pool_2x2})
    assert ops.count("QConv") == 3 and ops.count("QMaxPool") == 0 and ops.count("QMatMul") == 1, ops
    qconvs = [n for n in res.compiled.program["graph"]["nodes"] if n["op"] == "QConv"]
    assert [bool(n.get("attrs", {}).get("max_pool_2x2")) for n in qconvs] == [True, False, False]
    assert "Conv" not in ops and "FusedConv" not in ops and "MaxPool" not in ops
    # float/int boundaries only: the image and the Gemm input (after the float ReduceMean)
    assert ops.count("QuantizeLinear") == 2, ops
    sess = mopt.Session(res.compiled, isa=isa, intra_op_threads=2, fallback=False)
    x = images(20, seed=7)
    got = sess.run(None, {"x": x})[0]
    want = run_reference(model, {"x": x})[0]
    assert cosine(want, got) > 0.995, f"{method}: cosine {cosine(want, got)}"
    assert len(res.layers) == 4 and all(r.sqnr_db > 15 for r in res.layers), res.table()


def test_int8_layers_write_uint8_between_them(isa: str) -> None:
    res = quantize(small_cnn(), {"x": images(16)}, isa=isa, show_progress=False)
    prog = res.compiled.program["graph"]
    dtype_of = {i: v["dtype"] for i, v in enumerate(prog["values"])}
    outs = {n["name"]: dtype_of[n["outputs"][0]] for n in prog["nodes"] if n["op"] in ("QConv", "QMaxPool")}
    assert sorted(outs.values()) == [1, 2, 2], outs  # conv1 (+ pool), dwconv: uint8; pwconv feeds ReduceMean: float


def test_dynamic_quantizes_matmuls(isa: str) -> None:
    model = mlp()
    res = quantize(model, mode="dynamic", isa=isa)
    ops = _ops(res.compiled)
    assert ops.count("QMatMul") == 2 and "MatMul" not in ops and "FusedMatMul" not in ops, ops
    x = np.random.default_rng(0).normal(0, 1, (2, 5, 32)).astype(np.float32)
    got = mopt.Session(res.compiled, isa=isa, intra_op_threads=2, fallback=False).run(None, {"x": x})[0]
    want = run_reference(model, {"x": x})[0]
    assert got.shape == want.shape and cosine(want, got) > 0.995


def test_accuracy_budget_zero_falls_back_worst_first() -> None:
    logs: list[str] = []
    model = mlp()
    x = np.random.default_rng(2).normal(0, 1, (8, 4, 32)).astype(np.float32)
    res = quantize(model, {"x": x}, max_accuracy_drop=0.0, show_progress=False, log=logs.append)
    # a regression output: the loss is 100 * (1 - cosine) > 0 while any layer is int8
    assert all(r.float_reason == "accuracy" for r in res.layers) and len(logs) == len(res.layers) == 2
    order = [r.sqnr_db for r in sorted(res.layers, key=lambda r: logs.index(next(s for s in logs if r.name in s)))]
    assert order == sorted(order), "layers must go back to fp32 in order of increasing SQNR"
    assert "QMatMul" not in _ops(res.compiled)
    got = mopt.Session(res.compiled, intra_op_threads=2).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, run_reference(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_generous_budget_keeps_everything_int8() -> None:
    res = quantize(small_cnn(), {"x": images(32)}, max_accuracy_drop=50.0, show_progress=False)
    assert not any(r.float_reason for r in res.layers)
    assert res.top1_agreement is not None and res.top1_agreement >= 50.0


def test_errors_name_the_problem() -> None:
    model = small_cnn()
    with pytest.raises(InvalidArgumentError, match="calibration"):
        quantize(model, None)
    with pytest.raises(InvalidArgumentError, match="method"):
        quantize(model, {"x": images(4)}, method="bogus")
    with pytest.raises(InvalidArgumentError, match="batch size"):
        quantize(model, {"x": images(4)[:0]}, show_progress=False)
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        quantize(model, "/nonexistent/calib.npz")


def test_calibration_by_position_from_npy(tmp_path) -> None:
    p = tmp_path / "calib.npy"
    np.save(p, images(8))
    res = quantize(small_cnn(), str(p), show_progress=False)
    assert _ops(res.compiled).count("QConv") == 3


def test_digits_int8_accuracy(shared_models) -> None:
    data = np.load(shared_models / "digits_data.npz")
    res = quantize(str(shared_models / "digits_cnn.onnx"), {"image": data["calib"]}, show_progress=False)
    sess = mopt.Session(res.compiled, intra_op_threads=2)
    x, y = data["test_images"], data["test_labels"]
    logits = np.concatenate([sess.run(None, {"image": x[i : i + 64]})[0] for i in range(0, len(x), 64)])
    assert np.mean(logits.argmax(1) == y) >= 0.985


def test_fused_residual_stays_int8(isa: str) -> None:
    from .models import residual_cnn

    model = residual_cnn()
    res = quantize(model, {"x": images(16)}, isa=isa, show_progress=False)
    ops = _ops(res.compiled)
    assert ops.count("QConv") == 2 and "FusedConv" not in ops, ops
    x = images(6, seed=3)
    got = mopt.Session(res.compiled, isa=isa, intra_op_threads=2).run(None, {"x": x})[0]
    assert cosine(run_reference(model, {"x": x})[0], got) > 0.995


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_matmul_with_a_fused_residual_keeps_the_residual(mode: str, isa: str) -> None:
    """FusedMatMul(x, W, b, r) has no int8 form with r: QMatMul, then a float Add of r (bert_mini's
    output projections; dropping r gave cosine ~0)."""
    from .models import residual_mlp

    model = residual_mlp()
    x = np.random.default_rng(5).standard_normal((2, 7, 32)).astype(np.float32)
    calib = {"x": np.random.default_rng(6).standard_normal((8, 7, 32)).astype(np.float32)}
    res = quantize(model, calib if mode == "static" else None, mode=mode, isa=isa, show_progress=False, batch=4)
    ops = _ops(res.compiled)
    assert ops.count("QMatMul") == 1 and "Add" in ops and "FusedMatMul" not in ops, ops
    got = mopt.Session(res.compiled, isa=isa, intra_op_threads=2).run(None, {"x": x})[0]
    assert cosine(run_reference(model, {"x": x})[0], got) > 0.999


def test_a_fused_residual_under_an_activation_stays_float() -> None:
    from .models import residual_mlp

    res = quantize(residual_mlp(relu=True), mode="dynamic", show_progress=False)
    assert "QMatMul" not in _ops(res.compiled)
    assert any("residual under an activation" in why for why in res.skipped.values()), res.skipped


@pytest.mark.parametrize("tail, fused", [("gap", True), ("mean_keep", True), ("mean_c", False), ("also_output", False)])
def test_a_spatial_mean_fuses_into_the_qconv_before_it(tail: str, fused: bool, isa: str) -> None:
    """ReduceMean over H, W (or GlobalAveragePool) of a float QConv output becomes QConv{global_mean};
    a mean over other axes, or of an output read elsewhere, stays a separate op. Outputs follow fp32."""
    from .models import mean_cnn

    model = mean_cnn(tail)
    res = quantize(model, {"x": images(16)}, isa=isa, show_progress=False)
    nodes = res.compiled.program["graph"]["nodes"]
    ops = [n["op"] for n in nodes]
    means = [n for n in nodes if n["op"] == "QConv" and n.get("attrs", {}).get("global_mean")]
    assert ops.count("QConv") == 2, ops
    if fused:
        assert len(means) == 1 and "ReduceMean" not in ops and "GlobalAveragePool" not in ops, ops
    else:
        assert not means and ("ReduceMean" in ops), ops
    x = images(5, seed=9)
    got = mopt.Session(res.compiled, isa=isa, intra_op_threads=2, fallback=False).run(None, {"x": x})
    want = run_reference(model, {"x": x})
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape and cosine(w, g) > 0.995, (tail, cosine(w, g))


@pytest.mark.parametrize("tail", ["gap", "mean_keep"])
def test_a_fused_mean_exports_to_a_qdq_model_onnxruntime_agrees_with(tail: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from mopt.quant.export import export_qdq

    from .models import mean_cnn

    res = quantize(mean_cnn(tail), {"x": images(16)}, show_progress=False)
    x = images(3, seed=4)
    want = mopt.Session(res.compiled, intra_op_threads=2).run(None, {"x": x})[0]
    model = export_qdq(res.compiled.graph)
    onnx.checker.check_model(model)
    assert "GlobalAveragePool" in [n.op_type for n in model.graph.node]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _follows_fp32_and_exports(model, res, x: np.ndarray, isa: str, what: str, ort_atol: float = 1e-4) -> None:
    """The int8 program's outputs follow fp32 (onnx.reference), and its QDQ export runs on ONNX
    Runtime with the same outputs (within ort_atol of the largest; a value a float-output conv
    writes and a QuantizeLinear rounds may land one step apart in ORT's float Conv and mopt's
    integer one, so a graph with one passes a looser bound)."""
    import onnx

    got = mopt.Session(res.compiled, isa=isa, intra_op_threads=2, fallback=False).run(None, {"x": x})
    want = run_reference(model, {"x": x})
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape and cosine(w, g) > 0.995, (what, cosine(w, g))
    ort = pytest.importorskip("onnxruntime")
    from mopt.quant.export import export_qdq

    qdq = export_qdq(res.compiled.graph)
    onnx.checker.check_model(qdq)
    theirs = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for g, t in zip(got, theirs, strict=True):
        assert cosine(g, t) > 0.9999, what
        np.testing.assert_allclose(t, g, rtol=0, atol=ort_atol * float(np.abs(g).max()))


@pytest.mark.parametrize("pool, fused", [("2x2", True), ("2x2_ceil_odd", False), ("3x3", False), ("also_output", False),
                                         ("depthwise", False)])
def test_a_2x2_max_pool_fuses_into_the_qconv_before_it(pool: str, fused: bool, isa: str) -> None:
    """QMaxPool{2x2, stride 2} of a uint8 QConv output becomes QConv{max_pool_2x2}; other windows, a
    ceil-mode pool of an odd size, a conv output read elsewhere too, or a depthwise conv keep the
    separate pool. Either way the outputs follow fp32, and the QDQ export runs on ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    c1 = 3 if pool == "depthwise" else 8
    size = 11 if pool == "2x2_ceil_odd" else 12
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (c1, 1 if pool == "depthwise" else 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (6, c1, 3, 3)).astype(np.float32), "w2")]
    kernel = [3, 3] if pool == "3x3" else [2, 2]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], group=3 if pool == "depthwise" else 1),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=kernel, strides=[2, 2],
                              ceil_mode=1 if pool == "2x2_ceil_odd" else 0),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["y"])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if pool == "also_output":
        nodes.append(helper.make_node("Conv", ["r1", "w2"], ["z"], pads=[1, 1, 1, 1]))
        outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "pcnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
                              outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    calib = np.abs(rng.normal(0, 1, (8, 3, size, size))).astype(np.float32)
    res = quantize(model, {"x": calib}, isa=isa, show_progress=False)
    nodes_out = res.compiled.program["graph"]["nodes"]
    pooled = [n for n in nodes_out if n["op"] == "QConv" and n.get("attrs", {}).get("max_pool_2x2")]
    ops = [n["op"] for n in nodes_out]
    assert (len(pooled), "QMaxPool" in ops) == ((1, False) if fused else (0, True)), ops
    _follows_fp32_and_exports(model, res, np.abs(rng.normal(0, 1, (3, 3, size, size))).astype(np.float32), isa, pool)


@pytest.mark.parametrize("case, u8", [("branches", True), ("pool_branch", False), ("also_float", True), ("shared", True)])
def test_a_concat_between_int8_layers_moves_uint8(case: str, u8: bool, isa: str) -> None:
    """Concat of int8 branches runs on uint8 at its output's scale: the convs writing its inputs
    requantize to that scale (SqueezeNet's fire modules, Inception's and DenseNet's blocks). An
    input straight from a max pool (which cannot change scale) keeps the Concat float; an input
    also read as a graph output is quantized at the Concat's scale; a value two Concats read is
    claimed by the first. The outputs follow fp32, and the QDQ export runs on ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(8)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.normal(0, 0.3, (6, 8, 1, 1)).astype(np.float32), "wa"),
             numpy_helper.from_array(rng.normal(0, 0.6, (5, 8, 3, 3)).astype(np.float32), "wb"),
             numpy_helper.from_array(rng.normal(0, 0.3, (7, 11, 3, 3)).astype(np.float32), "wc")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "wa"], ["ca"]), helper.make_node("Relu", ["ca"], ["ra"])]
    if case == "pool_branch":
        inits[2] = numpy_helper.from_array(rng.normal(0, 0.3, (7, 14, 3, 3)).astype(np.float32), "wc")
        nodes += [helper.make_node("MaxPool", ["r0"], ["rb"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])]
        cat_in, cin = ["ra", "rb"], 14
    else:
        nodes += [helper.make_node("Conv", ["r0", "wb"], ["cb"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["cb"], ["rb"])]
        cat_in, cin = ["ra", "rb"], 11
    inits[3] = numpy_helper.from_array(rng.normal(0, 0.3, (7, cin, 3, 3)).astype(np.float32), "wc")
    nodes += [helper.make_node("Concat", cat_in, ["cat"], axis=1),
              helper.make_node("Conv", ["cat", "wc"], ["cc"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["cc"], ["y"])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if case == "also_float":
        outs.append(helper.make_tensor_value_info("rb", TensorProto.FLOAT, None))
    if case == "shared":  # a second Concat of the same branch, then a 1x1 conv
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (4, 10, 1, 1)).astype(np.float32), "wd"))
        nodes += [helper.make_node("Concat", ["rb", "rb"], ["cat2"], axis=1),
                  helper.make_node("Conv", ["cat2", "wd"], ["z"])]
        outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "ccnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 9])], outs,
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    calib = rng.uniform(0, 1, (8, 3, 9, 9)).astype(np.float32)
    res = quantize(model, {"x": calib}, isa=isa, show_progress=False)
    prog = res.compiled.program["graph"]
    dtype_of = {i: v["dtype"] for i, v in enumerate(prog["values"])}
    cats = [dtype_of[n["outputs"][0]] for n in prog["nodes"] if n["op"] == "Concat"]
    assert (cats[0] == 2) == u8, (case, cats)  # 2: uint8
    assert [n["op"] for n in prog["nodes"]].count("QConv") == (5 if case == "shared" else 4 if case != "pool_branch" else 3)
    _follows_fp32_and_exports(model, res, rng.uniform(0, 1, (3, 3, 9, 9)).astype(np.float32), isa, case,
                              ort_atol=0.02 if case == "shared" else 1e-4)


def test_a_layer_past_the_accumulator_stays_float(isa: str) -> None:
    """Activations that decay to ~1e-12 make the next layer's bias astronomical in accumulator
    units (x_scale * w_scale): that layer stays float, says why, and the model loads and runs
    (the kernels would refuse it)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array((rng.normal(0, 0.3, (8, 3, 3, 3)) * 1e-12).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (6, 8, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 1.0, 6).astype(np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="tiny"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], pads=[1, 1, 1, 1], name="next")]
    graph = helper.make_graph(nodes, "decay", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    res = quantize(model, {"x": rng.uniform(0, 1, (4, 3, 8, 8)).astype(np.float32)}, isa=isa, show_progress=False)
    assert "accumulator" in res.skipped.get("next", "") or "overflow" in res.skipped.get("next", ""), res.skipped
    x = rng.uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    got = mopt.Session(res.compiled, isa=isa, intra_op_threads=2).run(None, {"x": x})[0]
    want = run_reference(model, {"x": x})[0]
    assert cosine(want, got) > 0.99


@pytest.mark.parametrize("per_group, int8", [(8, True), (2, False)])
def test_grouped_convolutions_run_int8_from_4_channels_per_group(per_group: int, int8: bool, isa: str) -> None:
    """A grouped Conv (ShuffleNet's 1x1 and 3x3 group convs) runs one int8 GEMM per group when a
    group has 4+ input channels; with fewer it stays float and says why."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    g, c = 3, 3 * per_group
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (c, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (12, per_group, 3, 3)).astype(np.float32), "wg"),
             numpy_helper.from_array(rng.normal(0, 0.1, 12).astype(np.float32), "bg")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "wg", "bg"], ["c2"], pads=[1, 1, 1, 1], group=g, name="gconv"),
             helper.make_node("Relu", ["c2"], ["y"], name="relu2")]
    graph = helper.make_graph(nodes, "gcnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12, 10, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    res = quantize(model, {"x": images(16, seed=2)[:, :, :10, :10]}, isa=isa, show_progress=False)
    ops = _ops(res.compiled)
    assert ops.count("QConv") == (2 if int8 else 1), ops
    if not int8:
        assert any("2 input channels per group" in why for why in res.skipped.values()), res.skipped
    x = images(4, seed=8)[:, :, :10, :10]
    got = mopt.Session(res.compiled, isa=isa, intra_op_threads=2, fallback=False).run(None, {"x": x})[0]
    assert cosine(run_reference(model, {"x": x})[0], got) > 0.995


def test_a_channel_shuffle_between_int8_convs_moves_uint8(isa: str) -> None:
    """ShuffleNet's Reshape -> Transpose -> Reshape between two convs moves the uint8 values (same
    scale) instead of dequantizing and quantizing again; the QDQ export still runs in ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (12, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (9, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([0, 3, 4, 10, 10], np.int64), "s5"),
             numpy_helper.from_array(np.array([0, 12, 10, 10], np.int64), "s4")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Reshape", ["r1", "s5"], ["g5"], name="split_groups"),
             helper.make_node("Transpose", ["g5"], ["t5"], perm=[0, 2, 1, 3, 4], name="shuffle"),
             helper.make_node("Reshape", ["t5", "s4"], ["sh"], name="merge_groups"),
             helper.make_node("Conv", ["sh", "w2"], ["y"], group=3, name="gconv")]
    graph = helper.make_graph(nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 9, 10, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    res = quantize(model, {"x": images(16, seed=2)[:, :, :10, :10]}, isa=isa, show_progress=False)
    prog = res.compiled.program["graph"]
    dtype_of = {i: v["dtype"] for i, v in enumerate(prog["values"])}
    moved = {n["op"]: dtype_of[n["outputs"][0]] for n in prog["nodes"] if n["op"] in ("Reshape", "Transpose")}
    assert moved == {"Reshape": TensorProto.UINT8, "Transpose": TensorProto.UINT8}, moved
    ops = [n["op"] for n in prog["nodes"]]
    assert ops.count("QuantizeLinear") == 1 and ops.count("QConv") == 2, ops
    x = images(3, seed=6)[:, :, :10, :10]
    got = mopt.Session(res.compiled, isa=isa, intra_op_threads=2, fallback=False).run(None, {"x": x})[0]
    assert cosine(run_reference(model, {"x": x})[0], got) > 0.995
    ort = pytest.importorskip("onnxruntime")
    from mopt.quant.export import export_qdq

    qdq = export_qdq(res.compiled.graph)
    onnx.checker.check_model(qdq)
    theirs = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(theirs, got, rtol=1e-4, atol=1e-4)
