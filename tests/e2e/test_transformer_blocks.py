"""A small BERT-style encoder and GPT-style decoder built here with onnx.helper (so CI needs nothing
from ../shared): dynamic batch and sequence axes, the shape arithmetic exporters write around the
MatMuls, decomposed or native LayerNorm, erf and tanh GELU, padding and causal masks. Checked at
several (batch, sequence) sizes, batch 1 / sequence 1 included: -O0 against -O3 against ONNX
Runtime, that -O3 fused what it should, and that nothing ran on the fallback."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.testing.assert_close import assert_model_close

HIDDEN, HEADS, FFN, VOCAB, MAXPOS = 32, 4, 64, 50, 64
D = HIDDEN // HEADS


class Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, arr, hint: str = "c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def weight(self, *shape, scale: float = 0.2) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), "w")

    def op(self, op: str, inputs: list[str], n_out: int = 1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    # -- blocks ---------------------------------------------------------------------------------
    def layernorm(self, x: str, decomposed: bool) -> str:
        g, b = self.const(1 + 0.1 * self.rng.standard_normal(HIDDEN).astype(np.float32)), self.weight(HIDDEN, scale=0.1)
        if not decomposed:
            return self.op("LayerNormalization", [x, g, b], axis=-1, epsilon=1e-5)
        axes = self.const(np.array([-1], np.int64))
        mu = self.op("ReduceMean", [x, axes])
        d = self.op("Sub", [x, mu])
        var = self.op("ReduceMean", [self.op("Pow", [d, self.const(np.array(2.0, np.float32))]), axes])
        std = self.op("Sqrt", [self.op("Add", [var, self.const(np.array(1e-5, np.float32))])])
        return self.op("Add", [self.op("Mul", [self.op("Div", [d, std]), g]), b])

    def linear(self, x: str, n_in: int, n_out: int) -> str:
        return self.op("Add", [self.op("MatMul", [x, self.weight(n_in, n_out)]), self.weight(n_out, scale=0.1)])

    def attention(self, x: str, dims: str, mask_add: str) -> str:
        """torch-style: Reshape to [B, S, H, D] with shapes from Shape(x), Transpose, K^T as a Transpose,
        scale on the product, additive mask, Softmax, MatMul, Transpose back, Reshape."""
        split = self.op("Concat", [dims, self.const(np.array([HEADS, D], np.int64))], axis=0)
        heads = {}
        for t in "qkv":
            lin = self.linear(x, HIDDEN, HIDDEN)
            heads[t] = self.op("Transpose", [self.op("Reshape", [lin, split])], perm=[0, 2, 1, 3])
        kt = self.op("Transpose", [heads["k"]], perm=[0, 1, 3, 2])
        scores = self.op("Div", [self.op("MatMul", [heads["q"], kt]), self.const(np.array(np.sqrt(D), np.float32))])
        probs = self.op("Softmax", [self.op("Add", [scores, mask_add])], axis=-1)
        ctx = self.op("Transpose", [self.op("MatMul", [probs, heads["v"]])], perm=[0, 2, 1, 3])
        merged = self.op("Concat", [dims, self.const(np.array([HIDDEN], np.int64))], axis=0)
        return self.linear(self.op("Reshape", [ctx, merged]), HIDDEN, HIDDEN)

    def gelu_erf(self, x: str) -> str:
        e = self.op("Erf", [self.op("Div", [x, self.const(np.array(np.sqrt(2.0), np.float32))])])
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [e, self.const(np.array(1.0, np.float32))])]), self.const(np.array(0.5, np.float32))])

    def gelu_tanh(self, x: str) -> str:
        c = lambda v: self.const(np.array(v, np.float32))  # noqa: E731
        cube = self.op("Mul", [self.op("Pow", [x, c(3.0)]), c(0.044715)])
        inner = self.op("Mul", [self.op("Add", [x, cube]), c(np.sqrt(2 / np.pi))])
        return self.op("Mul", [self.op("Mul", [x, c(0.5)]), self.op("Add", [self.op("Tanh", [inner]), c(1.0)])])


def encoder(layers: int = 2, decomposed_ln: bool = True):
    b = Builder(11)
    ids, mask = "input_ids", "attention_mask"
    shape = b.op("Shape", [ids])
    seq = b.op("Gather", [shape, b.const(np.array(1, np.int64))], axis=0)
    pos = b.op("Range", [b.const(np.array(0, np.int64)), seq, b.const(np.array(1, np.int64))])
    x = b.op("Add", [b.op("Gather", [b.weight(VOCAB, HIDDEN), ids], axis=0), b.op("Gather", [b.weight(MAXPOS, HIDDEN), pos], axis=0)])
    x = b.layernorm(x, decomposed_ln)
    # padding mask [B, 1, 1, S]: 0 where attended, -10000 where padded
    m = b.op("Cast", [b.op("Unsqueeze", [mask, b.const(np.array([1, 2], np.int64))])], to=TensorProto.FLOAT)
    mask_add = b.op("Mul", [b.op("Sub", [b.const(np.array(1.0, np.float32)), m]), b.const(np.array(-10000.0, np.float32))])
    dims = b.op("Shape", [ids])
    for _ in range(layers):
        x = b.layernorm(b.op("Add", [x, b.attention(x, dims, mask_add)]), decomposed_ln)
        h = b.linear(b.gelu_erf(b.linear(x, HIDDEN, FFN)), FFN, HIDDEN)
        x = b.layernorm(b.op("Add", [x, h]), decomposed_ln)
    b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    g = helper.make_graph(
        b.nodes,
        "encoder",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "seq"]), helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        b.inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def decoder(layers: int = 2):
    """GPT-style: a causal mask sliced from a constant [MAXPOS, MAXPOS] table, pre-LayerNorm blocks,
    Gemm over the flattened tokens with tanh GELU, a tied LM head."""
    b = Builder(12)
    ids = "input_ids"
    shape = b.op("Shape", [ids])
    seq = b.op("Slice", [shape, b.const(np.array([1], np.int64)), b.const(np.array([2], np.int64))])
    zero = b.const(np.array([0, 0], np.int64))
    causal = np.where(np.tril(np.ones((MAXPOS, MAXPOS), bool)), 0.0, -1e9).astype(np.float32)
    mask_add = b.op("Slice", [b.const(causal), zero, b.op("Concat", [seq, seq], axis=0)])
    wte = b.weight(VOCAB, HIDDEN)
    pos = b.op("Range", [b.const(np.array(0, np.int64)), b.op("Squeeze", [seq]), b.const(np.array(1, np.int64))])
    x = b.op("Add", [b.op("Gather", [wte, ids], axis=0), b.op("Gather", [b.weight(MAXPOS, HIDDEN), pos], axis=0)])
    flat = b.const(np.array([-1, HIDDEN], np.int64))
    for _ in range(layers):
        x = b.op("Add", [x, b.attention(b.layernorm(x, False), shape, mask_add)])
        h = b.op("Reshape", [b.layernorm(x, False), flat])
        g1 = b.op("Gemm", [h, b.weight(HIDDEN, FFN), b.weight(FFN, scale=0.1)])
        g2 = b.op("Gemm", [b.gelu_tanh(g1), b.weight(FFN, HIDDEN), b.weight(HIDDEN, scale=0.1)])
        x = b.op("Add", [x, b.op("Reshape", [g2, b.op("Concat", [shape, b.const(np.array([HIDDEN], np.int64))], axis=0)])])
    logits = b.op("MatMul", [b.layernorm(x, False), b.op("Transpose", [wte], perm=[1, 0])])
    b.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    g = helper.make_graph(
        b.nodes,
        "decoder",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB])],
        b.inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


SIZES = [(1, 1), (2, 7), (3, 33)]


def feeds_for(model, batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64)}
    if any(i.name == "attention_mask" for i in model.graph.input):
        mask = np.ones((batch, seq), np.int64)
        if batch > 1:
            mask[1, seq // 2 + 1 :] = 0  # a padded sequence
        feeds["attention_mask"] = mask
    return feeds


@pytest.fixture(scope="module")
def sessions():
    ort = pytest.importorskip("onnxruntime")
    out = {}
    for name, model in (("encoder", encoder()), ("encoder-native-ln", encoder(decomposed_ln=False)), ("decoder", decoder())):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        out[name] = (
            model,
            mopt.Session(model, level=0, intra_op_threads=2),
            mopt.Session(mopt.compile(model, 3, fallback=False), intra_op_threads=2, fallback=False),
            ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]),
        )
    return out


@pytest.mark.parametrize("name", ["encoder", "encoder-native-ln", "decoder"])
def test_blocks_are_fused_at_o3(sessions, name: str) -> None:
    _, _, o3, _ = sessions[name]
    ops = [op for _, op, _ in o3.kernels()]
    assert ops.count("com.mopt.Attention") == 2, ops
    for gone in ("Softmax", "Transpose", "ReduceMean", "Erf", "Tanh", "Pow"):
        assert gone not in ops, f"{gone} left at -O3: {ops}"
    assert ops.count("LayerNormalization") == (5 if name.startswith("encoder") else 5), ops


@pytest.mark.parametrize("batch,seq", SIZES)
@pytest.mark.parametrize("name", ["encoder", "encoder-native-ln", "decoder"])
def test_blocks_match_o0_and_onnxruntime(sessions, name: str, batch: int, seq: int) -> None:
    model, o0, o3, ort_sess = sessions[name]
    feeds = feeds_for(model, batch, seq, seed=batch * 100 + seq)
    want = ort_sess.run(None, feeds)[0]
    got0 = o0.run(None, feeds)[0]
    got3 = o3.run(None, feeds)[0]
    assert got3.shape == want.shape
    assert_model_close(got0, want, context=f"{name} -O0 vs ORT at {batch}x{seq}")
    assert_model_close(got3, want, context=f"{name} -O3 vs ORT at {batch}x{seq}")


def test_one_session_many_shapes_reuses_plans(sessions) -> None:
    model, _, o3, ort_sess = sessions["encoder"]
    for batch, seq in [(2, 5), (1, 17), (2, 5), (1, 17)]:
        feeds = feeds_for(model, batch, seq, seed=seq)
        assert_model_close(o3.run(None, feeds)[0], ort_sess.run(None, feeds)[0], context=f"{batch}x{seq}")
    before = o3.stats()
    o3.run(None, feeds_for(model, 2, 5, seed=0))
    after = o3.stats()
    assert after["plans"] == before["plans"], "a shape seen before planned again"


def test_a_sequence_longer_than_the_model_takes_is_a_clear_error(sessions) -> None:
    from mopt.errors import MoptError

    model, _, o3, _ = sessions["decoder"]
    with pytest.raises(MoptError, match="node '"):
        o3.run(None, feeds_for(model, 1, MAXPOS + 5, seed=1))
