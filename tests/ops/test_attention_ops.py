"""ONNX Attention (attention_ops.cc) against onnx.reference: 4-D and 3-D inputs, multi-head, GQA and
MQA, bool and additive masks of every rank (and shorter than the keys), causal masking with and
without a past cache, nonpad_kv_seqlen, sliding windows, softcap, every qk_matmul_output_mode,
float32/64/16, and inconsistent shapes that must be clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import single_op_model


OPS_COVERED = ["Attention"]


def r(shape: tuple, seed: int, dtype: object = np.float32) -> np.ndarray:
    return random_input(shape, np.dtype(dtype), seed=seed, low=-1.5, high=1.5)  # type: ignore[call-overload]


def qkv4(b: int = 2, hq: int = 4, hk: int = 4, sq: int = 5, skv: int = 7, dk: int = 8, dv: int = 8, dtype: object = np.float32) -> dict:
    return {"q": r((b, hq, sq, dk), 1, dtype), "k": r((b, hk, skv, dk), 2, dtype), "v": r((b, hk, skv, dv), 3, dtype)}


def attn(inputs: dict, attrs: dict | None = None, *, isa: str, outputs: int = 1, opset: int = 23, rtol: float = 1e-5, atol: float = 1e-5,
         mopt_inputs: dict | None = None) -> None:
    """Native Attention against onnx.reference; `mopt_inputs` (same names) replaces what mopt gets."""
    from mopt.ir.dtypes import from_numpy
    from mopt.testing.assert_close import assert_close
    from mopt.testing.reference import feeds_of, run_mopt, run_reference

    t = int(from_numpy(inputs["q"].dtype))
    model = single_op_model("Attention", inputs, attrs, opset=opset, num_outputs=outputs, output_dtypes=[t] * outputs)
    want = run_reference(model, feeds_of(model, inputs))
    if mopt_inputs is not None:
        model = single_op_model("Attention", mopt_inputs, attrs, opset=opset, num_outputs=outputs, output_dtypes=[t] * outputs)
    cm = mopt.compile(model, 0, isa=isa)
    assert not cm.fallback_nodes, cm.fallback_nodes[0].reason
    got = run_mopt(model, feeds_of(model, mopt_inputs or inputs), isa=isa, fallback=False)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_close(g, w, rtol=rtol, atol=atol, context=f"Attention output {i} attrs={attrs}")


@pytest.mark.parametrize(("hq", "hk"), [(4, 4), (4, 2), (6, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize(("sq", "skv"), [(5, 7), (7, 5), (1, 9), (17, 17)], ids=str)
def test_attention_4d(hq: int, hk: int, causal: int, sq: int, skv: int, isa: str) -> None:
    attn(qkv4(hq=hq, hk=hk, sq=sq, skv=skv), {"is_causal": causal}, isa=isa)


@pytest.mark.parametrize(("hq", "hk"), [(4, 4), (4, 2)], ids=["mha", "gqa"])
def test_attention_3d_and_scale(hq: int, hk: int, isa: str) -> None:
    ins = {"q": r((2, 5, hq * 8), 1), "k": r((2, 6, hk * 8), 2), "v": r((2, 6, hk * 4), 3)}
    attn(ins, {"q_num_heads": hq, "kv_num_heads": hk}, isa=isa)
    attn(ins, {"q_num_heads": hq, "kv_num_heads": hk, "scale": 0.3, "is_causal": 1}, isa=isa)


@pytest.mark.parametrize("mshape", [(5, 7), (1, 7), (4, 5, 7), (2, 4, 5, 7), (2, 1, 1, 7), (5, 4), (7,)], ids=str)
@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_masks(mshape: tuple, kind: str, causal: int, isa: str) -> None:
    ins = qkv4()
    rng = np.random.default_rng(4)
    if kind == "bool":
        m = rng.random(mshape) > 0.3
        m.reshape(-1, mshape[-1])[:, 0] = True
    else:
        m = r(mshape, 5)
        m[m < -1.0] = -np.inf
    ins["mask"] = m
    if causal and (len(mshape) < 2 or mshape[-2] == 1):
        # onnx.reference takes the query count from the mask's own shape when it builds the causal
        # part, so a mask broadcast over queries gets row 0's causal pattern everywhere; the reference
        # is run on the mask broadcast to every query row instead
        full = {**ins, "mask": np.broadcast_to(m, (*mshape[:-2], 5, 7) if len(mshape) >= 2 else (5, 7)).copy()}
        attn(full, {"is_causal": causal}, isa=isa, mopt_inputs=ins)
        return
    attn(ins, {"is_causal": causal}, isa=isa)


def test_attention_fully_masked_rows_are_zero(isa: str) -> None:
    ins = qkv4(b=1, hq=2, hk=2, sq=3, skv=4)
    m = np.ones((3, 4), bool)
    m[1] = False
    ins["mask"] = m
    attn(ins, {"qk_matmul_output_mode": 3}, isa=isa, outputs=4)


@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize(("hq", "hk"), [(4, 4), (4, 2)], ids=["mha", "gqa"])
def test_attention_past_and_present(hq: int, hk: int, causal: int, isa: str) -> None:
    ins = qkv4(hq=hq, hk=hk, sq=3, skv=3)
    ins["mask"] = None
    ins["past_key"] = r((2, hk, 4, 8), 6)
    ins["past_value"] = r((2, hk, 4, 8), 7)
    attn(ins, {"is_causal": causal}, isa=isa, outputs=3)


@pytest.mark.parametrize("causal", [0, 1])
def test_attention_nonpad_kv_seqlen(causal: int, isa: str) -> None:
    ins = qkv4(sq=3, skv=8)
    ins |= {"mask": None, "past_key": None, "past_value": None, "nonpad": np.array([5, 8], np.int64)}
    attn(ins, {"is_causal": causal}, isa=isa, opset=24)


@pytest.mark.parametrize(("left", "right"), [(2, 0), (1, 1), (-1, 2), (3, -1)])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_sliding_window(left: int, right: int, causal: int, isa: str) -> None:
    attn(qkv4(sq=6, skv=6), {"left_window_size": left, "right_window_size": right, "is_causal": causal}, isa=isa, opset=25)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("softcap", [0.0, 2.0])
def test_attention_qk_matmul_output_modes(mode: int, softcap: float, isa: str) -> None:
    if mode == 0 and softcap:
        pytest.skip("mode 0 is the raw QK product by the spec; onnx.reference returns it soft-capped")
    ins = qkv4()
    ins["mask"] = r((5, 7), 8)
    attn(ins, {"qk_matmul_output_mode": mode, "softcap": softcap}, isa=isa, outputs=4)


def test_attention_mode0_with_softcap_is_the_raw_product(isa: str) -> None:
    from .native import run_native

    ins = qkv4(b=1, hq=1, hk=1, sq=2, skv=3, dk=4, dv=4)
    got = run_native("Attention", ins, {"qk_matmul_output_mode": 0, "softcap": 0.5}, isa=isa, opset=23, num_outputs=4, output_dtypes=[TensorProto.FLOAT] * 4)[3]
    want = ins["q"].astype(np.float64) @ ins["k"].astype(np.float64).transpose(0, 1, 3, 2) / 2.0
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_attention_dtypes(dtype: type, isa: str) -> None:
    tol = {"rtol": 3e-3, "atol": 3e-3} if dtype == np.float16 else {}
    attn(qkv4(dtype=dtype), {"is_causal": 1}, isa=isa, **tol)


def test_attention_empty_query(isa: str) -> None:
    attn(qkv4(sq=0), isa=isa)


@pytest.mark.parametrize(
    ("ins", "match"),
    [
        ({"q": np.ones((1, 3, 2, 4), np.float32), "k": np.ones((1, 2, 2, 4), np.float32), "v": np.ones((1, 2, 2, 4), np.float32)}, "multiple of kv heads"),
        ({"q": np.ones((1, 2, 2, 4), np.float32), "k": np.ones((1, 2, 2, 3), np.float32), "v": np.ones((1, 2, 2, 4), np.float32)}, "head size"),
        ({"q": np.ones((1, 2, 2, 4), np.float32), "k": np.ones((1, 2, 2, 4), np.float32), "v": np.ones((1, 2, 2, 4), np.float32),
          "mask": np.ones((3, 2), bool)}, "does not broadcast"),
    ],
)  # fmt: skip
def test_attention_bad_shapes_are_errors(ins: dict, match: str) -> None:
    m = single_op_model("Attention", ins, opset=23, output_dtypes=[TensorProto.FLOAT])
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match=match):
        mopt.Session(cm, fallback=False).run(None, ins)
