"""QDQ models from other tools run on the int8 kernels (LowerQDQToInt8, part of -O1)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.testing.reference import run_reference
from .models import images, small_cnn


def _kernels(model: onnx.ModelProto, isa: str) -> tuple[mopt.Session, list[str]]:
    sess = mopt.Session(model, isa=isa, intra_op_threads=2)
    return sess, [op for _, op, _ in sess.kernels()]


def hand_qdq(huge_bias: bool = False) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(DQ(W int8, per channel), DQ(b int32)) -> Relu -> Q -> DQ -> y. With
    huge_bias, int32 biases near 2^31 (what a quantizer writes for a layer whose input scale has
    decayed to nothing): past the int8 kernels' accumulator headroom."""
    rng = np.random.default_rng(4)
    w = rng.integers(-127, 128, (6, 3, 3, 3), dtype=np.int8)
    sw = rng.uniform(0.002, 0.01, 6).astype(np.float32)
    sx, zx, sy, zy = np.float32(1 / 255), np.uint8(0), np.float32(0.02), np.uint8(0)
    b = rng.integers(-500, 500, 6).astype(np.int32)
    if huge_bias:
        sx, sy = np.float32(1e-9), np.float32(5.0)
        b = np.array([2_000_000_000, -1_900_000_000, 5, 1_500_000_000, -7, 3], np.int32)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w", w), ("sw", sw), ("zw", np.zeros(6, np.int8)), ("b", b), ("sb", (sx * sw).astype(np.float32)),
        ("sx", np.array(sx)), ("zx", np.array(zx)), ("sy", np.array(sy)), ("zy", np.array(zy))]]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "sb"], ["bd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "sy", "zy"], ["y"]),
    ]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 12, 12])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    return m


def test_hand_written_qdq_runs_int8_and_matches_reference(isa: str) -> None:
    model = hand_qdq()
    sess, ops = _kernels(model, isa)
    assert "com.mopt.QConv" in ops and "Conv" not in ops, ops
    assert ops.count("QuantizeLinear") == 1, ops  # the output Q folded into the QConv's requantize
    x = images(3)
    got = sess.run(None, {"x": x})[0]
    want = run_reference(model, {"x": x})[0]
    step = 0.02
    assert np.abs(got - want).max() <= step + 1e-6  # at most one quantization step apart
    assert np.mean(np.abs(got - want) > 1e-6) < 0.01


def test_a_qdq_layer_past_the_accumulator_stays_float(isa: str) -> None:
    """A QDQ conv whose bias, in accumulator units, leaves the int32 accumulator no headroom (ORT's
    quantizer wrote such a layer into DenseNet-121) is not lowered onto the int8 kernels, which
    would refuse it: it runs as the float DQ -> Conv -> Q it was, and matches the reference."""
    model = hand_qdq(huge_bias=True)
    sess, ops = _kernels(model, isa)
    assert "com.mopt.QConv" not in ops and any(op.endswith("Conv") for op in ops), ops
    x = images(2)
    got = sess.run(None, {"x": x})[0]
    want = run_reference(model, {"x": x})[0]
    assert np.abs(got - want).max() <= 5.0 + 1e-3  # (one output step at most)


def test_level0_keeps_the_qdq_graph(isa: str) -> None:
    cm = mopt.compile(hand_qdq(), 0, isa=isa)
    assert "Conv" in [n["op"] for n in cm.program["graph"]["nodes"]]


def test_onnxruntime_qdq_model_matches_onnxruntime(tmp_path, isa: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    quant = pytest.importorskip("onnxruntime.quantization")
    src, dst = tmp_path / "cnn.onnx", tmp_path / "cnn.qdq.onnx"
    onnx.save(small_cnn(batch=4), src)
    calib = images(16)

    class Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": calib[i : i + 4]} for i in range(0, 16, 4)])

        def get_next(self):
            return next(self.it, None)

    quant.quantize_static(str(src), str(dst), Reader(), quant_format=quant.QuantFormat.QDQ, per_channel=True,
                          activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8)
    model = onnx.load(str(dst))
    sess, ops = _kernels(model, isa)
    assert ops.count("com.mopt.QConv") == 3 and "Conv" not in ops, ops
    x = images(4, seed=5)
    got = sess.run(None, {"x": x})[0]
    want = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-2)
