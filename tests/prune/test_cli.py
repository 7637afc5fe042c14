"""mopt prune / distill from the command line: files written, table printed, clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from mopt.cli import main
from . import models


@pytest.fixture
def cnn_files(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "cnn.onnx"
    onnx.save(models.cnn(), str(model))
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((40, 3, 12, 12)).astype(np.float32), y=rng.integers(0, 5, 40))
    return model, data


def test_prune_writes_a_smaller_model_and_a_table(cnn_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model, data = cnn_files
    out = model.parent / "p.onnx"
    rc = main(["prune", str(model), "--target-flops", "0.6", "--calibration", f"{data}:x", "--allocation", "uniform", "-o", str(out),
               "--runs", "2", "--batch", "8",
               "--eval-inputs", f"{data}:x", "--eval-labels", f"{data}:y", "--threads", "1"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "FLOPs / item" in text and "accuracy" in text and "mopt ms (batch 8)" in text
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned)
    assert sum(np.prod(t.dims) for t in pruned.graph.initializer) < sum(np.prod(t.dims) for t in models.cnn().graph.initializer)


def test_prune_errors_are_sentences(cnn_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model, data = cnn_files
    assert main(["prune", str(model), "--calibration", f"{data}:nope", "--no-report"]) == 2
    assert "has no array 'nope'" in capsys.readouterr().err
    assert main(["prune", str(model), "--target-flops", "2", "--no-report"]) == 2
    assert "fraction" in capsys.readouterr().err
    bad = model.parent / "bad.npy"
    np.save(bad, np.zeros((4, 3, 5, 5), np.float32))
    assert main(["prune", str(model), "--calibration", str(bad), "--no-report"]) == 2
    assert "does not fit input" in capsys.readouterr().err


def test_distill_without_torch_says_what_to_install(
    cnn_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data = cnn_files
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    monkeypatch.delitem(sys.modules, "mopt.prune.distill", raising=False)
    monkeypatch.delitem(sys.modules, "mopt.prune.torch_module", raising=False)
    rc = main(["distill", "--teacher", str(model), "--student", str(model), "--data", f"{data}:x", "--no-report"])
    assert rc == 2
    assert "pip install 'mopt[distill]'" in capsys.readouterr().err


def test_compile_with_prune(cnn_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model, data = cnn_files
    out = model.parent / "c.mopt"
    assert main(["compile", str(model), "--prune", "0.6", "-o", str(out)]) == 0
    assert "pruned channels: FLOPs" in capsys.readouterr().out
    assert out.exists()
