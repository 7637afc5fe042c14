"""The nine CNNs shipped in the onnx wheel, end to end, against their stored outputs and ONNX Runtime.

Their weights are constant fills, so the stored softmax outputs are nearly uniform and prove
little; each model also runs with every constant-filled weight replaced by random values (same
graph), and the logits feeding the final softmax are compared as well.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
import onnx
import pytest

import mopt
from mopt.testing.assert_close import assert_model_close
from mopt.testing.models import LIGHT_MODELS, arange_input, expose_logits, light_expected, light_path, randomize_weights

ort = pytest.importorskip("onnxruntime")

LEVELS = [0, 2]


# Run every ISA of a model before the next model (tests/conftest.py), so these caches need only the
# current model: all nine, compiled at two levels and kept, would take over 10 GB.
MODEL_MAJOR_ORDER = True


@lru_cache(maxsize=1)
def _original(name: str) -> onnx.ModelProto:
    return onnx.load(str(light_path(name)))


@lru_cache(maxsize=1)
def _randomized(name: str) -> onnx.ModelProto:
    return expose_logits(randomize_weights(_original(name), seed=1))


@lru_cache(maxsize=2)
def _compiled(name: str, variant: str, level: int) -> mopt.CompiledModel:
    model = _original(name) if variant == "original" else _randomized(name)
    return mopt.compile(model, level, log=lambda _: None)


def _ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@cache
def _random_case(name: str) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    model = _randomized(name)
    x_name, x = arange_input(model)
    feeds = {x_name: np.random.default_rng(7).standard_normal(x.shape).astype(np.float32)}
    return feeds, _ort_run(model, feeds)


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: f"O{level}")
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_matches_stored_output_and_onnxruntime(name: str, level: int, isa: str) -> None:
    model = _original(name)
    x_name, x = arange_input(model)
    sess = mopt.Session(_compiled(name, "original", level), isa=isa, intra_op_threads=2)
    (got,) = sess.run(None, {x_name: x})
    ctx = f"{name} -O{level} isa={isa}"
    assert_model_close(got, light_expected(name), context=f"{ctx} vs stored output")
    assert_model_close(got, _ort_run(model, {x_name: x})[0], context=f"{ctx} vs onnxruntime")


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: f"O{level}")
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_random_weights_match_onnxruntime(name: str, level: int, isa: str) -> None:
    feeds, want = _random_case(name)
    sess = mopt.Session(_compiled(name, "random", level), isa=isa, intra_op_threads=2)
    got = sess.run(None, feeds)
    assert [o.name for o in sess.get_outputs()] == [o.name for o in _randomized(name).graph.output]
    ends_in_softmax = any(
        n.op_type == "Softmax" and n.output[0] == _original(name).graph.output[0].name for n in _original(name).graph.node
    )
    assert len(got) == 1 + ends_in_softmax, "the logits should be exposed beside a final softmax"
    for out, g, w in zip(sess.get_outputs(), got, want, strict=True):
        assert np.abs(w).max() > 0.05 or out is sess.get_outputs()[0], f"{out.name}: degenerate reference"
        assert_model_close(g, w, context=f"{name} -O{level} isa={isa} output {out.name}")


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_o2_runs_natively_and_fuses(name: str) -> None:
    o0, o2 = _compiled(name, "random", 0), _compiled(name, "random", 2)
    assert not o2.fallback_nodes, o2.fallback_summary()
    ops0 = [n["op"] for n in o0.program["graph"]["nodes"]]
    ops2 = [n["op"] for n in o2.program["graph"]["nodes"]]
    assert len(ops2) < len(ops0), f"-O2 did not shrink the program: {len(ops0)} -> {len(ops2)} nodes"
    for op in ("BatchNormalization", "Relu"):  # folded or fused wherever a Conv/Gemm precedes them
        assert ops0.count(op) == 0 or ops2.count(op) < ops0.count(op), f"no {op} was folded"
