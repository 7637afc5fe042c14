"""CausalConvWithState, LinearAttention and RotaryEmbedding (seq_ops.cc) against onnx.reference:
with and without state/bias/position_ids, every activation and update rule, grouped heads, decay and
beta shapes, interleaved and partial rotary dims, float32/64/16, and bad shapes as clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model

from .helpers import check_op

OPS_COVERED = ["CausalConvWithState", "LinearAttention", "RotaryEmbedding"]


def r(shape: tuple, seed: int, dtype: object = np.float32, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return random_input(shape, np.dtype(dtype), seed=seed, low=low, high=high)  # type: ignore[call-overload]


def tol(dtype: object) -> dict:
    return {"rtol": 3e-3, "atol": 3e-3} if np.dtype(dtype) == np.float16 else {"rtol": 1e-5, "atol": 1e-5}  # type: ignore[call-overload]


def errors(op: str, inputs: dict, attrs: dict, opset: int, match: str, outputs: int = 1) -> None:
    m = single_op_model(op, inputs, attrs, opset=opset, num_outputs=outputs, output_dtypes=[TensorProto.FLOAT] * outputs)
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes, cm.fallback_nodes[0].reason
    with pytest.raises(mopt.MoptError, match=match):
        mopt.Session(cm, fallback=False).run(None, {k: v for k, v in inputs.items() if v is not None})


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("activation", ["none", "silu", "swish"])
@pytest.mark.parametrize(("k", "length"), [(4, 7), (1, 5), (3, 1), (2, 17)], ids=str)
@pytest.mark.parametrize("state", [False, True])
def test_causal_conv_with_state(state: bool, k: int, length: int, activation: str, dtype: type, isa: str) -> None:
    ins = {"x": r((2, 3, length), 1, dtype), "w": r((3, 1, k), 2, dtype), "b": r((3,), 3, dtype),
           "s": r((2, 3, k - 1), 4, dtype) if state else None}  # fmt: skip
    check_op("CausalConvWithState", ins, {"activation": activation}, isa=isa, opset=27, num_outputs=2, **tol(dtype))


def test_causal_conv_bad_weight_is_an_error() -> None:
    errors("CausalConvWithState", {"x": np.ones((1, 3, 4), np.float32), "w": np.ones((2, 1, 3), np.float32)}, {}, 27, "weight must be")


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize(("hq", "hkv"), [(2, 2), (4, 2)], ids=["mha", "gqa"])
@pytest.mark.parametrize("per_dim", [False, True])
@pytest.mark.parametrize("state", [False, True])
def test_linear_attention(rule: str, hq: int, hkv: int, per_dim: bool, state: bool, isa: str) -> None:
    b, t, dk, dv = 2, 5, 4, 3
    ins: dict = {"q": r((b, t, hq * dk), 1), "k": r((b, t, hkv * dk), 2), "v": r((b, t, hkv * dv), 3),
                 "s": r((b, hkv, dk, dv), 4) if state else None}  # fmt: skip
    ins["decay"] = r((b, t, hkv * dk if per_dim else hkv), 5, low=-0.5, high=0) if "gated" in rule else None
    ins["beta"] = r((b, t, 1 if per_dim else hkv), 6, low=0, high=1) if "delta" in rule else None
    attrs = {"q_num_heads": hq, "kv_num_heads": hkv, "update_rule": rule, "scale": 0.0 if per_dim else 0.7}
    check_op("LinearAttention", ins, attrs, isa=isa, opset=27, num_outputs=2, rtol=1e-5, atol=1e-5)


def test_linear_attention_missing_decay_is_an_error() -> None:
    ins = {"q": np.ones((1, 2, 4), np.float32), "k": np.ones((1, 2, 4), np.float32), "v": np.ones((1, 2, 4), np.float32)}
    errors("LinearAttention", ins, {"q_num_heads": 1, "kv_num_heads": 1, "update_rule": "gated"}, 27, "needs the decay", outputs=2)


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rdim", [0, 4])
@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("positions", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_rotary_embedding(interleaved: int, rdim: int, rank: int, positions: bool, dtype: type, isa: str) -> None:
    b, s, h, d = 2, 5, 3, 8
    half = (rdim or d) // 2
    x = r((b, h, s, d), 1, dtype) if rank == 4 else r((b, s, h * d), 1, dtype)
    if positions:
        ins = {"x": x, "cos": r((11, half), 2, dtype), "sin": r((11, half), 3, dtype),
               "pos": np.random.default_rng(0).integers(0, 11, (b, s)).astype(np.int64)}  # fmt: skip
    else:
        ins = {"x": x, "cos": r((b, s, half), 2, dtype), "sin": r((b, s, half), 3, dtype)}
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rdim}
    if rank == 3:
        attrs["num_heads"] = h
    check_op("RotaryEmbedding", ins, attrs, isa=isa, opset=23, **tol(dtype))


def test_rotary_position_out_of_range_is_an_error() -> None:
    ins = {"x": np.ones((1, 1, 2, 4), np.float32), "cos": np.ones((3, 2), np.float32), "sin": np.ones((3, 2), np.float32),
           "pos": np.array([[0, 3]], np.int64)}  # fmt: skip
    errors("RotaryEmbedding", ins, {}, 23, "out of range")
