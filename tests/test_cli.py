"""The mopt command line: compile, run, inspect, bench, demo, and how it reports errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mopt.cli import main


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap"),
        ],
        "cli",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_compile_writes_mopt_and_prints_changes(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(model_path), "-O2", "--print-changes"]) == 0
    out = capsys.readouterr().out
    assert "FuseActivation" in out
    assert "nodes" in out
    mopt_path = model_path.with_suffix(".mopt")
    assert mopt_path.read_bytes()[:8] == b"MOPTPROG"


def test_run_with_inputs_and_output_dir(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["compile", str(model_path), "-o", str(tmp_path / "m.mopt")]) == 0
    out_dir = tmp_path / "outs"
    assert main(["run", str(tmp_path / "m.mopt"), "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", str(out_dir)]) == 0
    y = np.load(out_dir / "y.npy")
    assert y.shape == (2, 8, 1, 1)
    from mopt.testing.reference import run_reference

    (want,) = run_reference(onnx.load(str(model_path)), {"x": x})
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    assert "y" in capsys.readouterr().out


def test_inspect_reports_ops_params_flops_and_kernels(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "Conv" in out
    assert "216" in out
    assert "FLOP" in out.upper()
    assert "@" in out  # kernel implementations name their ISA


def test_bench_against_onnxruntime(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    assert main(["bench", str(model_path), "--compare", "onnxruntime", "--runs", "5", "--warmup", "1", "--dim", "n=2"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out
    assert "mopt" in out
    assert "p50" in out


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    assert main(["demo", "--model", "light_squeezenet", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "agree" in out
    assert "OK" in out


@pytest.mark.parametrize("args", [["compile", "/nonexistent.onnx"], ["run", "/nonexistent.mopt"], ["inspect", "/dev/null"]])
def test_errors_exit_nonzero_with_a_message_and_no_traceback(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "error" in err.lower()
    assert "Traceback" not in err


def test_unsupported_op_with_no_fallback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = helper.make_graph(
        [helper.make_node("Binarizer", ["x"], ["y"], name="hm", domain="ai.onnx.ml")],  # no native kernel
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    path = tmp_path / "hm.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 1)]), str(path))
    assert main(["compile", str(path)]) == 0
    assert "fallback" in capsys.readouterr().out.lower()
    assert main(["compile", str(path), "--no-fallback"]) != 0
    assert "'hm' (ai.onnx.ml.Binarizer)" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("mopt") is None, reason="the mopt console script is not on PATH")
def test_console_script_is_installed() -> None:
    out = subprocess.run(["mopt", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("mopt ")
    out = subprocess.run([sys.executable, "-m", "mopt", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "compile" in out.stdout
