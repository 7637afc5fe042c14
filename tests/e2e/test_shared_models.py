"""The exported CNNs of ../shared/models against ONNX Runtime (skipped where ../shared is absent)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

import mopt
from mopt.testing.assert_close import assert_model_close

ort = pytest.importorskip("onnxruntime")


@cache
def _ort(path: Path) -> object:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@cache
def _compiled(path: Path, level: int) -> mopt.CompiledModel:
    return mopt.compile(str(path), level, log=lambda _: None)


@pytest.mark.parametrize("level", [0, 2], ids=lambda level: f"O{level}")
@pytest.mark.parametrize("batch", [1, 3])
def test_mobilenet_v2_matches_onnxruntime(shared_models: Path, batch: int, level: int, isa: str) -> None:
    path = shared_models / "mobilenet_v2.onnx"
    x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    (want,) = _ort(path).run(None, {"pixel_values": x})
    sess = mopt.Session(_compiled(path, level), isa=isa, intra_op_threads=2)
    (got,) = sess.run(None, {"pixel_values": x})
    assert_model_close(got, want, context=f"mobilenet_v2 batch={batch} -O{level} isa={isa}")


@pytest.mark.parametrize("level", [0, 2], ids=lambda level: f"O{level}")
def test_digits_cnn_matches_onnxruntime_and_keeps_accuracy(shared_models: Path, level: int, isa: str) -> None:
    path = shared_models / "digits_cnn.onnx"
    with np.load(shared_models / "digits_data.npz") as data:
        images, labels = data["test_images"], data["test_labels"]
    (want,) = _ort(path).run(None, {"image": images})
    sess = mopt.Session(_compiled(path, level), isa=isa, intra_op_threads=2)
    (got,) = sess.run(None, {"image": images})
    assert_model_close(got, want, context=f"digits_cnn -O{level} isa={isa}")
    accuracy = float((got.argmax(1) == labels).mean())
    assert accuracy == pytest.approx(float((want.argmax(1) == labels).mean()), abs=1 / len(labels))
    assert accuracy > 0.98


def _transformer_feeds(name: str, batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch * 1000 + seq)
    if name == "vit_small4":
        return {"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    feeds = {"input_ids": rng.integers(0, 8192, (batch, seq)).astype(np.int64)}
    if name == "bert_mini":
        mask = np.ones((batch, seq), np.int64)
        mask[:, seq - seq // 4 :] = 0  # padded tail: the mask path must matter
        feeds["attention_mask"] = mask
    return feeds


# The exported transformers run (native kernels plus the fallback for what has none yet) and agree
# with ONNX Runtime at several (batch, sequence) sizes from one compiled model.
@pytest.mark.parametrize(("batch", "seq"), [(1, 1), (1, 16), (3, 7)], ids=lambda v: str(v))
@pytest.mark.parametrize("name", ["bert_mini", "gpt2_small4", "vit_small4"])
def test_transformers_match_onnxruntime(shared_models: Path, name: str, batch: int, seq: int) -> None:
    if name == "vit_small4" and seq != 16:
        pytest.skip("ViT has no sequence input: one size per batch is enough")
    path = shared_models / f"{name}.onnx"
    feeds = _transformer_feeds(name, batch, seq)
    want = _ort(path).run(None, feeds)
    got = mopt.Session(_compiled(path, 2), intra_op_threads=2).run(None, feeds)
    for g, w, out in zip(got, want, _ort(path).get_outputs(), strict=True):
        assert_model_close(g, w, context=f"{name} {out.name} batch={batch} seq={seq}")
