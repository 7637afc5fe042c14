"""mopt quantize / mopt compile --int8 / --dynamic from the command line."""

from __future__ import annotations

import numpy as np
import onnx

import mopt
from mopt.cli import main
from mopt.testing.reference import run_reference
from .models import images, mlp, small_cnn


def test_quantize_writes_a_program_and_prints_the_table(tmp_path, capsys) -> None:
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), src)
    np.savez(tmp_path / "calib.npz", x=images(16))
    out = tmp_path / "cnn.int8.mopt"
    assert main(["quantize", str(src), "--calibration", str(tmp_path / "calib.npz"), "-o", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "SQNR" in text and "relu1" in text and "int8 layers" in text
    sess = mopt.Session(str(out), intra_op_threads=2)
    assert sum(op == "com.mopt.QConv" for _, op, _ in sess.kernels()) == 3
    x = images(4, seed=9)
    got = sess.run(None, {"x": x})[0]
    want = run_reference(small_cnn(), {"x": x})[0]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_compile_int8_from_a_folder(tmp_path, capsys) -> None:
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), src)
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "a.npy", images(8, seed=1))
    np.save(tmp_path / "data" / "b.npy", images(8, seed=2))
    out = tmp_path / "o.mopt"
    assert main(["compile", str(src), "--int8", "--calibration", str(tmp_path / "data"), "-o", str(out), "--quiet"]) == 0
    assert out.exists() and "quantized" in capsys.readouterr().out


def test_dynamic_needs_no_data(tmp_path) -> None:
    src = tmp_path / "mlp.onnx"
    onnx.save(mlp(), src)
    out = tmp_path / "mlp.mopt"
    assert main(["quantize", str(src), "--dynamic", "-o", str(out)]) == 0
    sess = mopt.Session(str(out), intra_op_threads=2)
    assert [op for _, op, _ in sess.kernels()].count("com.mopt.QMatMul") == 2


def test_missing_calibration_is_a_clear_error(tmp_path, capsys) -> None:
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), src)
    assert main(["quantize", str(src)]) == 2
    assert "--calibration" in capsys.readouterr().err
    np.savez(tmp_path / "wrong.npz", y=images(4), z=images(4))
    assert main(["quantize", str(src), "--calibration", str(tmp_path / "wrong.npz"), "--quiet"]) == 2
    assert "none is named after the input 'x'" in capsys.readouterr().err


def test_emit_onnx_writes_a_qdq_model_onnxruntime_runs(tmp_path) -> None:
    import pytest

    ort = pytest.importorskip("onnxruntime")
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), src)
    np.savez(tmp_path / "calib.npz", x=images(16))
    out, qdq = tmp_path / "cnn.int8.mopt", tmp_path / "cnn.qdq.onnx"
    assert main(["quantize", str(src), "--calibration", str(tmp_path / "calib.npz"), "-o", str(out), "--quiet",
                 "--emit-onnx", str(qdq)]) == 0
    model = onnx.load(str(qdq))
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 3 and "QuantizeLinear" in ops and all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    assert ops.count("MaxPool") == 1  # (run inside the first QConv by mopt: max_pool_2x2)
    x = images(4, seed=11)
    got = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = mopt.Session(str(out), intra_op_threads=2).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # and mopt reads its own QDQ export back onto the int8 kernels
    ops_back = [op for _, op, _ in mopt.Session(str(qdq), intra_op_threads=2).kernels()]
    assert ops_back.count("com.mopt.QConv") == 3 and "com.mopt.QMaxPool" not in ops_back, ops_back


def test_a_fixed_batch_model_is_calibrated_in_its_own_batches(tmp_path, capsys) -> None:
    """A model whose input fixes the batch (1 for the ONNX zoo models, 2 here) is fed the
    calibration samples in batches of that size; a remainder that fills no batch is left out with
    a note, and fewer samples than one batch is a clear error."""
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(batch=2), src)
    np.savez(tmp_path / "calib.npz", x=images(5))
    out = tmp_path / "cnn.int8.mopt"
    assert main(["quantize", str(src), "--calibration", str(tmp_path / "calib.npz"), "-o", str(out), "--quiet"]) == 0
    assert "the last 1 calibration samples are left out" in capsys.readouterr().out
    got = mopt.Session(str(out), intra_op_threads=2).run(None, {"x": images(2, seed=9)})[0]
    want = run_reference(small_cnn(batch=2), {"x": images(2, seed=9)})[0]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99
    np.savez(tmp_path / "one.npz", x=images(1))
    assert main(["quantize", str(src), "--calibration", str(tmp_path / "one.npz"), "-o", str(out), "--quiet"]) == 2
    assert "takes batches of 2; the calibration data has 1 samples" in capsys.readouterr().err
