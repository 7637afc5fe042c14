"""Distillation: the ONNX -> torch translation computes what ONNX Runtime computes, training moves
the student toward the teacher, and the weights go back into a valid ONNX model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mopt.errors import UnsupportedOpError
from mopt.prune import analyze, apply_pruning
from . import models
from .test_structured import SHAPES, random_removal, run

torch = pytest.importorskip("torch")

from mopt.prune.distill import distill  # noqa: E402
from mopt.prune.torch_module import OnnxModule  # noqa: E402


@pytest.mark.parametrize("name", sorted(models.ALL))
def test_torch_module_matches_onnxruntime(name: str) -> None:
    model = models.ALL[name]()
    x = np.random.default_rng(1).standard_normal(SHAPES[name]).astype(np.float32)
    with torch.no_grad():
        got = OnnxModule(model)(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, run(model, x), rtol=1e-4, atol=1e-4)


def test_unsupported_op_names_the_node() -> None:
    b = models.Builder()
    y = b.op("Softsign", "x")
    with pytest.raises(UnsupportedOpError, match=r"n_softsign1.*Softsign"):
        OnnxModule(b.model([("x", [2, 3])], [y]))


def _kl(student: onnx.ModelProto, teacher: onnx.ModelProto, x: np.ndarray) -> float:
    s, t = run(student, x), run(teacher, x)
    ls = s - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True)) - s.max(1, keepdims=True)
    lt = t - np.log(np.exp(t - t.max(1, keepdims=True)).sum(1, keepdims=True)) - t.max(1, keepdims=True)
    return float((np.exp(lt) * (lt - ls)).sum(1).mean())


def test_distillation_brings_the_student_closer(capsys: pytest.CaptureFixture[str]) -> None:
    teacher = models.cnn()
    an = analyze(teacher)
    student = apply_pruning(an, random_removal(an, 0, 0.5))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 3, 12, 12)).astype(np.float32)
    x_new = rng.standard_normal((64, 3, 12, 12)).astype(np.float32)  # never seen in training
    held = rng.standard_normal((16, 3, 12, 12)).astype(np.float32)
    lines: list[str] = []
    trained = distill(teacher, student, x, epochs=4, augment=2, lr=5e-3, progress=None, log=lines.append, x_holdout=held)
    assert "held-out (16 items)" in lines[0]
    onnx.checker.check_model(trained)
    assert [tuple(t.dims) for t in trained.graph.initializer] == [tuple(t.dims) for t in student.graph.initializer]
    before, after = _kl(student, teacher, x_new), _kl(trained, teacher, x_new)
    assert after < 0.7 * before, (before, after)


def test_distill_rejects_bad_arguments() -> None:
    from mopt.errors import InvalidArgumentError

    m = models.cnn()
    x = np.zeros((16, 3, 12, 12), np.float32)
    with pytest.raises(InvalidArgumentError, match="epochs"):
        distill(m, m, x, epochs=0, progress=None)
    with pytest.raises(InvalidArgumentError, match="holdout"):
        distill(m, m, x, holdout=1.0, progress=None)
