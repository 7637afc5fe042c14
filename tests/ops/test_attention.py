"""com.mopt.Attention against numpy (float64): every ISA, odd sequence lengths and head sizes
(1, 7, 17, 1000+), operands read through perms, broadcast batches and masks, fully masked rows,
empty tensors and bad shapes; then the fusion of exported attention graphs into it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.errors import MoptError
from mopt.testing.assert_close import assert_close
from mopt.testing.reference import run_reference

from .native import run_native

OPS_COVERED = ["com.mopt.Attention"]


def np_attention(q, k, v, mask=None, scale=None, nan_to_zero=False):
    """Logical operands [batch..., S, D]; float64 throughout."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = s + mask.astype(np.float64)
    with np.errstate(invalid="ignore"):
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - m)
        p = e / e.sum(axis=-1, keepdims=True)
    if nan_to_zero:
        p = np.where(np.isnan(p), 0.0, p)
    return np.matmul(p, v)


def stored(logical: np.ndarray, perm: list[int] | None) -> np.ndarray:
    """The tensor whose Transpose by perm is `logical`."""
    if perm is None:
        return logical
    return np.ascontiguousarray(np.transpose(logical, np.argsort(perm)))


def run_attention(q, k, v, mask=None, *, isa, perms=(None, None, None), out_perm=None, **attrs):
    inputs = {"q": stored(q, perms[0]), "k": stored(k, perms[1]), "v": stored(v, perms[2])}
    if mask is not None:
        inputs["mask"] = mask
    a = dict(attrs)
    for name, p in zip(("q_perm", "k_perm", "v_perm"), perms, strict=True):
        if p is not None:
            a[name] = p
    if out_perm is not None:
        a["out_perm"] = out_perm
    (y,) = run_native("Attention", inputs, a, isa=isa, domain="com.mopt", output_dtypes=[TensorProto.FLOAT])
    return y


RNG = np.random.default_rng(7)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    "b,h,sq,skv,d",
    [(1, 1, 1, 1, 1), (1, 4, 7, 7, 8), (2, 3, 17, 5, 16), (1, 2, 130, 130, 64), (1, 3, 130, 130, 16), (1, 1, 3, 1031, 7),
     (1, 1, 1000, 17, 72)],
    ids=str,
)
def test_attention_plain(b, h, sq, skv, d, isa):
    q, k, v = rand(b, h, sq, d), rand(b, h, skv, d), rand(b, h, skv, d + 1)
    got = run_attention(q, k, v, isa=isa, scale=0.3)
    assert_close(got, np_attention(q, k, v, scale=0.3).astype(np.float32), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["bshd", "kt", "mixed"])
def test_attention_perms(layout, isa):
    """Operands stored as [B, S, H, D] (the projections' own layout) or K stored transposed."""
    b, h, s, d = 2, 3, 19, 8
    q, k, v = rand(b, h, s, d), rand(b, h, s + 2, d), rand(b, h, s + 2, d)
    split = [0, 2, 1, 3]
    perms = {"bshd": (split, split, split), "kt": (None, [0, 1, 3, 2], None), "mixed": (split, [0, 2, 3, 1], None)}[layout]
    want = np_attention(q, k, v)
    got = run_attention(q, k, v, isa=isa, perms=perms, out_perm=split)
    assert got.shape == (b, s, h, d)
    assert_close(got, np.transpose(want, split).astype(np.float32), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask_shape", [(2, 1, 1, 9), (2, 1, 6, 9), (6, 9), (1,), (2, 3, 6, 9)], ids=str)
def test_attention_mask_broadcast(mask_shape, isa):
    q, k, v = rand(2, 3, 6, 4), rand(2, 3, 9, 4), rand(2, 3, 9, 5)
    # (its own generator: drawn from the shared one, the data depended on which tests ran before;
    # a single -1e4 for every score only loses float32 precision, it masks nothing)
    rng = np.random.default_rng(sum(mask_shape))
    hide = rng.random(mask_shape) < 0.3 if np.prod(mask_shape) > 1 else np.zeros(mask_shape, bool)
    mask = np.where(hide, np.float32(-1e4), rng.standard_normal(mask_shape)).astype(np.float32)
    got = run_attention(q, k, v, mask, isa=isa, scale=0.5)
    assert_close(got, np_attention(q, k, v, mask, scale=0.5).astype(np.float32), rtol=1e-4, atol=1e-5)


def test_attention_batch_broadcast_rank3(isa):
    """Rank-3 operands; K and V shared by every batch entry (size-1 batch axis)."""
    q, k, v = rand(4, 7, 8), rand(1, 11, 8), rand(1, 11, 3)
    got = run_attention(q, k, v, isa=isa)
    assert_close(got, np_attention(q, k, v).astype(np.float32), rtol=1e-4, atol=1e-5)


def test_attention_fully_masked_rows(isa):
    """-inf over a whole row: NaN in ONNX's softmax, 0 with nan_to_zero (the exporters' guard)."""
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 8)
    mask = np.zeros((1, 1, 4, 5), np.float32)
    mask[0, 0, 2, :] = -np.inf
    mask[0, 0, 0, 1:] = -np.inf
    got = run_attention(q, k, v, mask, isa=isa, nan_to_zero=1)
    want = np_attention(q, k, v, mask, nan_to_zero=True)
    assert not np.isnan(got).any()
    assert_close(got, want.astype(np.float32), rtol=1e-4, atol=1e-5)
    assert np.all(got[:, :, 2] == 0)
    raw = run_attention(q, k, v, mask, isa=isa)
    assert np.isnan(raw[:, :, 2]).all() and not np.isnan(raw[:, :, [0, 1, 3]]).any()


@pytest.mark.parametrize(
    "sq,skv,dv,mask_shape,hidden",
    # one block, several blocks sharing packed K^T and V (Dv over two panels), keys past the queries
    # (a cache), a mask per batch entry and head, and torch.finfo.min as GPT-2's export writes it
    [
        (17, 17, 8, (1, 1, 17, 17), -np.inf),
        (150, 150, 72, (1, 1, 150, 150), -np.inf),
        (70, 90, 40, (2, 3, 70, 90), -np.inf),
        (9, 9, 5, (9, 9), -np.inf),
        (130, 130, 64, (1, 1, 130, 130), np.finfo(np.float32).min),
        (70, 90, 40, (2, 3, 70, 90), np.finfo(np.float32).min),
        (61, 61, 24, (2, 1, 61, 61), np.finfo(np.float32).min),
    ],
    ids=str,
)
def test_attention_causal_mask_skips_hidden_keys(sq, skv, dv, mask_shape, hidden, isa):
    """Hidden from the diagonal on (a causal mask, possibly offset by cached keys): each block of
    query rows reads only the keys one of its rows can see; the rest are exact zeros of the softmax.
    A row with nothing visible keeps every key (NaN for -inf, uniform weights for finfo.min)."""
    q, k, v = rand(2, 3, sq, 16), rand(2, 3, skv, 16), rand(2, 3, skv, dv)
    mask = np.zeros(mask_shape, np.float32)
    for i in range(sq):
        mask[..., i, skv - sq + i + 1 :] = hidden
    if mask_shape[:2] == (2, 1):  # a mask per batch entry, shared by the heads: the second one hides 9 more keys
        mask[1, 0, :, -9:] = hidden
        mask[1, 0, :9, 0] = 0.0
    elif len(mask_shape) == 4 and mask_shape[0] == 2:
        mask[1, 2, -1, :] = hidden  # a row with nothing to see
        mask[0, 1, :, :3] = -1e4  # and finite masking before the diagonal
    got = run_attention(q, k, v, mask, isa=isa)
    want = np_attention(q, k, v, mask)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert_close(np.nan_to_num(got), np.nan_to_num(want).astype(np.float32), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("skv", [1, 15, 16, 17, 32, 47, 64, 1029])
def test_attention_mask_rows_end_anywhere(skv, isa):
    """The last visible key of each mask row is found wherever it lies: in the last keys, at either
    side of a 16-key block boundary, behind hidden holes, in the first block, nowhere, or a NaN (which
    counts as visible and makes the row NaN)."""
    ends = sorted({e for e in (0, 1, 14, 15, 16, 17, 31, 32, 33, skv - 18, skv - 17, skv - 16, skv - 2, skv - 1) if 0 <= e < skv})
    sq = len(ends) + 2
    mask = np.zeros((sq, skv), np.float32)
    for i, e in enumerate(ends):
        mask[i, e + 1 :] = np.finfo(np.float32).min
        mask[i, : e : 3] = -np.inf  # holes before the last visible key
    mask[len(ends), :] = -np.inf  # nothing visible
    mask[len(ends) + 1, :] = np.finfo(np.float32).min
    mask[len(ends) + 1, skv // 2] = np.nan
    q, k, v = rand(1, 2, sq, 8), rand(1, 2, skv, 8), rand(1, 2, skv, 5)
    got = run_attention(q, k, v, mask, isa=isa)
    want = np_attention(q, k, v, mask)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[0, :, -1]).all()
    assert_close(np.nan_to_num(got), np.nan_to_num(want).astype(np.float32), rtol=1e-4, atol=1e-5)


def test_attention_nan_score_row_is_zeroed_with_the_guard(isa):
    """A NaN in a query makes its whole row of probabilities NaN; the guard turns the row to zeros."""
    q, k, v = rand(1, 2, 20, 8), rand(1, 2, 20, 8), rand(1, 2, 20, 8)
    q[0, 1, 5, 3] = np.nan
    got = run_attention(q, k, v, isa=isa, nan_to_zero=1)
    want = np_attention(q, k, v, nan_to_zero=True)
    assert np.all(got[0, 1, 5] == 0) and not np.isnan(got).any()
    assert_close(got, want.astype(np.float32), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shapes", [((0, 2, 3, 4), (0, 2, 5, 4), (0, 2, 5, 4)), ((1, 2, 0, 4), (1, 2, 5, 4), (1, 2, 5, 4)), ((1, 2, 3, 4), (1, 2, 0, 4), (1, 2, 0, 6))], ids=str)
def test_attention_empty(shapes, isa):
    q, k, v = (rand(*s) for s in shapes)
    got = run_attention(q, k, v, isa=isa)
    want = np.matmul(np.zeros(q.shape[:-1] + (k.shape[-2],)), v) if k.shape[-2] == 0 else np_attention(q, k, v)
    assert got.shape == want.shape
    assert_close(got, want.astype(np.float32), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "shapes,message",
    [
        (((1, 2, 3, 4), (1, 2, 5, 6), (1, 2, 5, 4)), "features per head"),
        (((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 6, 4)), "positions"),
        (((2, 2, 3, 4), (3, 2, 5, 4), (3, 2, 5, 4)), "cannot be broadcast"),
        (((3, 4), (5, 4), (5, 4)), "rank 3 or 4"),
    ],
)
def test_attention_bad_shapes(shapes, message, isa):
    q, k, v = (rand(*s) for s in shapes)
    with pytest.raises(MoptError, match=message):
        run_attention(q, k, v, isa=isa)


@pytest.mark.parametrize("b,s,h,d,dv", [(1, 1, 1, 1, 1), (2, 7, 4, 8, 8), (1, 130, 2, 16, 24), (3, 17, 3, 5, 7)], ids=str)
def test_attention_packed_qkv(b, s, h, d, dv, isa):
    """One projection [B, S, Nq + Nk + Nv] read as Q, K, V column ranges split into heads."""
    nq, nv = h * d, h * dv
    y = rand(b, s, 2 * nq + nv)
    q = y[..., :nq].reshape(b, s, h, d).transpose(0, 2, 1, 3)
    k = y[..., nq : 2 * nq].reshape(b, s, h, d).transpose(0, 2, 1, 3)
    v = y[..., 2 * nq :].reshape(b, s, h, dv).transpose(0, 2, 1, 3)
    mask = np.where(RNG.random((b, 1, 1, s)) < 0.2, np.float32(-1e4), np.float32(0)).astype(np.float32)
    want = np.transpose(np_attention(q, k, v, mask, scale=0.4), (0, 2, 1, 3))
    attrs = {"packed_qkv": [nq, nq, nv], "num_heads": h, "out_perm": [0, 2, 1, 3], "scale": 0.4}
    (got,) = run_native("Attention", {"y": y, "k": None, "v": None, "mask": mask}, attrs, isa=isa, domain="com.mopt",
                        output_dtypes=[TensorProto.FLOAT])
    assert_close(got, want.astype(np.float32), rtol=1e-4, atol=1e-5)


def test_attention_packed_qkv_of_the_wrong_width_is_an_error(isa):
    attrs = {"packed_qkv": [8, 8, 8], "num_heads": 2}
    with pytest.raises(MoptError, match="packed Q/K/V projection"):
        run_native("Attention", {"y": rand(1, 3, 20)}, attrs, isa=isa, domain="com.mopt", output_dtypes=[TensorProto.FLOAT])


def test_attention_bad_mask(isa):
    q, k, v = rand(1, 2, 3, 4), rand(1, 2, 5, 4), rand(1, 2, 5, 4)
    with pytest.raises(MoptError, match="does not broadcast"):
        run_attention(q, k, v, rand(1, 1, 3, 4), isa=isa)


# -- the fusion ---------------------------------------------------------------------------------
def _const(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def torch_style_encoder(h=4, d=8, hidden=32, guard=True, square_mask=False):
    """One self-attention block as torch.onnx (dynamo) writes it: head split by Reshape/Transpose
    with shapes from Shape(), K transposed through Reshape([-1, S, D])/Transpose/Reshape, sqrt(scale)
    on both Q and K, a boolean mask turned additive by Where, Softmax, the IsNaN guard.
    square_mask: the mask comes as [batch, 1, seq, seq] (as ViT's export writes it), so the masked
    scores could also pass for a MatMul plus a residual."""
    rng = np.random.default_rng(3)
    inits = [
        _const("wq", rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.3),
        _const("wk", rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.3),
        _const("wv", rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.3),
        _const("heads", np.array([h, d], np.int64)),
        _const("m1", np.array([-1], np.int64)),
        _const("m2", np.array([-2], np.int64)),
        _const("big", np.array([2**62], np.int64)),
        _const("small", np.array([-(2**62)], np.int64)),
        _const("root_scale", np.array(np.sqrt(1 / np.sqrt(d)), np.float32)),
        _const("zero", np.array(0.0, np.float32)),
        _const("neg", np.array(-3.4e38, np.float32)),
        _const("ax12", np.array([1, 2], np.int64)),
    ]
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["xs"], start=0, end=2),
        n("Concat", ["xs", "heads"], ["split_shape"], axis=0),
    ]
    for t in ("q", "k", "v"):
        nodes += [
            n("MatMul", ["x", f"w{t}"], [f"{t}_lin"]),
            n("Reshape", [f"{t}_lin", "split_shape"], [f"{t}_4"]),
            n("Transpose", [f"{t}_4"], [f"{t}_h"], perm=[0, 2, 1, 3]),
        ]
    nodes += [
        n("Shape", ["k_h"], ["ks"], start=0),
        n("Slice", ["ks", "m1", "big"], ["d_last"]),
        n("Slice", ["ks", "m2", "m1"], ["d_prev"]),
        n("Slice", ["ks", "small", "m2"], ["d_lead"]),
        n("Concat", ["m1", "d_prev", "d_last"], ["s1"], axis=0),
        n("Reshape", ["k_h", "s1"], ["k3"]),
        n("Transpose", ["k3"], ["k3t"], perm=[0, 2, 1]),
        n("Concat", ["d_lead", "d_last", "d_prev"], ["s2"], axis=0),
        n("Reshape", ["k3t", "s2"], ["kt"]),
        n("Mul", ["q_h", "root_scale"], ["qs"]),
        n("Mul", ["kt", "root_scale"], ["kts"]),
        n("Identity", ["keep"], ["keep4"]) if square_mask else n("Unsqueeze", ["keep", "ax12"], ["keep4"]),
        n("Where", ["keep4", "zero", "neg"], ["addmask"]),
        n("MatMul", ["qs", "kts"], ["scores"]),
        n("Add", ["scores", "addmask"], ["masked"]),
        n("Softmax", ["masked"], ["probs"], axis=-1),
    ]
    if guard:
        nodes += [n("IsNaN", ["probs"], ["isnan"]), n("Where", ["isnan", "zero", "probs"], ["probs_g"])]
    nodes += [
        n("MatMul", ["probs_g" if guard else "probs", "v_h"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        n("Concat", ["xs", "m1"], ["merge_shape"], axis=0),
        n("Reshape", ["ctx_t", "merge_shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "attn",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden]),
            helper.make_tensor_value_info("keep", TensorProto.BOOL, ["batch", 1, "seq", "seq"] if square_mask else ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def classic_encoder(h=2, d=8, s=7):
    """The older exporters' form: static shapes, K transposed by Transpose(0, 2, 3, 1) straight from
    [B, S, H, D], Div by sqrt(d) after the product, a float additive mask input."""
    hidden = h * d
    rng = np.random.default_rng(5)
    inits = [
        _const("wq", rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.3),
        _const("wk", rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.3),
        _const("wv", rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.3),
        _const("split", np.array([2, s, h, d], np.int64)),
        _const("merge", np.array([2, s, hidden], np.int64)),
        _const("sqrt_d", np.array(np.sqrt(d), np.float32)),
    ]
    n = helper.make_node
    nodes = []
    for t in ("q", "k", "v"):
        nodes += [n("MatMul", ["x", f"w{t}"], [f"{t}_lin"]), n("Reshape", [f"{t}_lin", "split"], [f"{t}_4"])]
    nodes += [
        n("Transpose", ["q_4"], ["q_h"], perm=[0, 2, 1, 3]),
        n("Transpose", ["k_4"], ["kt"], perm=[0, 2, 3, 1]),
        n("Transpose", ["v_4"], ["v_h"], perm=[0, 2, 1, 3]),
        n("MatMul", ["q_h", "kt"], ["scores"]),
        n("Div", ["scores", "sqrt_d"], ["scaled"]),
        n("Add", ["mask", "scaled"], ["masked"]),
        n("Softmax", ["masked"], ["probs"], axis=3),
        n("MatMul", ["probs", "v_h"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx_t", "merge"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "attn",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, s, hidden]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [2, 1, 1, s]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, s, hidden])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ops(cm) -> list[str]:
    return [op for _, op, _ in mopt.Session(cm).kernels()]


def _kernel_ops(model, isa):
    sess = mopt.Session(mopt.compile(model, 2, isa=isa), isa=isa, fallback=False)
    return [op for _, op, _ in sess.kernels()]


@pytest.mark.parametrize("square_mask", [False, True])
@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("batch,seq", [(1, 1), (2, 7), (3, 130)])
def test_fuse_torch_style_attention(guard, batch, seq, square_mask, isa):
    model = torch_style_encoder(guard=guard, square_mask=square_mask)
    ops = _kernel_ops(model, isa)
    assert ops.count("com.mopt.Attention") == 1, ops
    assert ops.count("com.mopt.FusedMatMul") + ops.count("MatMul") == 1, f"Q/K/V projections not merged: {ops}"
    for gone in ("Softmax", "Transpose", "IsNaN"):
        assert gone not in ops, f"{gone} left after the fusion: {ops}"
    rng = np.random.default_rng(batch * 100 + seq)
    keep = rng.random((batch, seq)) < 0.8
    keep[:, 0] = True
    if batch > 1 and guard:
        keep[1, :] = False  # a fully masked sequence: -3.4e38 everywhere, uniform weights, no NaN
    if square_mask:
        keep = np.broadcast_to(keep[:, None, None, :], (batch, 1, seq, seq)).copy()
    feeds = {"x": rng.standard_normal((batch, seq, 32)).astype(np.float32), "keep": keep}
    want = run_reference(model, feeds)[0]
    sess = mopt.Session(mopt.compile(model, 2, isa=isa), isa=isa, fallback=False)
    got = sess.run(None, feeds)[0]
    assert_close(got, want, rtol=1e-4, atol=1e-5)
    o0 = mopt.Session(mopt.compile(model, 0, isa=isa), isa=isa).run(None, feeds)[0]
    assert_close(got, o0, rtol=1e-4, atol=1e-5)


def _with_mask_source(model, nodes_for_mask, extra_inits=()):
    """The torch-style encoder with its additive mask `addmask` made by other nodes instead of
    Where(keep4) (and the `keep` input dropped when they do not read it)."""
    g = model.graph
    kept = [nd for nd in g.node if not ({"keep4", "addmask"} & set(nd.output))]
    del g.node[:]
    g.node.extend(nodes_for_mask + kept)
    g.initializer.extend(extra_inits)
    if not any("keep" in nd.input for nd in g.node):
        keep = [i for i in g.input if i.name == "keep"]
        g.input.remove(keep[0])
    return model


def _attention_inputs(cm) -> list[list | None]:
    """The shapes of the compiled program's Attention inputs (None for a missing one)."""
    g = cm.program["graph"]
    (att,) = [n for n in g["nodes"] if n["op"] == "Attention"]
    return [g["values"][i]["shape"] if i is not None and i >= 0 else None for i in att["inputs"]]


def _mask_shape_nodes():
    n = helper.make_node
    return [
        n("Shape", ["x"], ["bs"], start=0, end=1),
        n("Shape", ["x"], ["ss"], start=1, end=2),
        n("Concat", ["bs", "one", "ss", "ss"], ["mask_shape"], axis=0),
    ]


@pytest.mark.parametrize("all_true", [True, False])
def test_constant_mask_expanded_by_the_export_is_folded(all_true, isa):
    """ViT's export: Where(Expand(constant condition, [batch, 1, S, S]), 0, -big). The choice is made
    on the constant; all true, the attention gets no mask at all; otherwise it reads the chosen
    constant without the Expand (every key hidden alike: uniform weights)."""
    n = helper.make_node
    nodes = [
        *_mask_shape_nodes(),
        n("Expand", ["cond", "mask_shape"], ["keep4"]),
        n("Where", ["keep4", "zero", "neg"], ["addmask"]),
    ]
    inits = [_const("cond", np.full((1, 1, 1, 1), all_true)), _const("one", np.array([1], np.int64))]
    model = _with_mask_source(torch_style_encoder(), nodes, inits)
    cm = mopt.compile(model, 2, isa=isa)
    ops = [o for _, o, _ in mopt.Session(cm, isa=isa).kernels()]
    assert "Where" not in ops, ops
    assert "Expand" not in ops, ops
    shapes = _attention_inputs(cm)
    assert len(shapes) == (1 if all_true else 4), shapes
    if not all_true:
        assert shapes[3] == [1, 1, 1, 1]
    for batch, seq in [(1, 1), (2, 9)]:
        feeds = {"x": np.random.default_rng(seq).standard_normal((batch, seq, 32)).astype(np.float32)}
        got = mopt.Session(cm, isa=isa, fallback=False).run(None, feeds)[0]
        assert_close(got, run_reference(model, feeds)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target", ["scores", "wider"])
def test_attention_reads_its_mask_before_an_expand(target, isa):
    """A padding mask [batch, 1, 1, S] expanded to [batch, 1, S, S] is read unexpanded (the kernel
    broadcasts it). Expanded to a batch of 2 that the scores need not have, the Expand stays: with
    one sequence it makes the output a batch of 2."""
    n = helper.make_node
    nodes = [
        n("Unsqueeze", ["keep", "ax12"], ["keep_u"]),
        n("Where", ["keep_u", "zero", "neg"], ["small_mask"]),
    ]
    if target == "scores":
        nodes += [*_mask_shape_nodes(), n("Expand", ["small_mask", "mask_shape"], ["addmask"])]
    else:
        nodes += [
            n("Shape", ["x"], ["ss"], start=1, end=2),
            n("Concat", ["two", "one", "ss", "ss"], ["mask_shape"], axis=0),
            n("Expand", ["small_mask", "mask_shape"], ["addmask"]),
        ]
    inits = [_const("one", np.array([1], np.int64)), _const("two", np.array([2], np.int64))]
    model = _with_mask_source(torch_style_encoder(), nodes, inits)
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "out_batch"
    cm = mopt.compile(model, 2, isa=isa)
    ops = [o for _, o, _ in mopt.Session(cm, isa=isa).kernels()]
    shapes = _attention_inputs(cm)
    if target == "scores":
        assert "Expand" not in ops, ops
        assert shapes[3] == ["batch", 1, 1, "seq"], shapes
    else:
        assert "Expand" in ops, ops
    rng = np.random.default_rng(11)
    for batch, seq in [(1, 1), (2, 7)] if target == "scores" else [(2, 7)]:
        keep = rng.random((batch, seq)) < 0.7
        keep[:, 0] = True
        feeds = {"x": rng.standard_normal((batch, seq, 32)).astype(np.float32), "keep": keep}
        got = mopt.Session(cm, isa=isa, fallback=False).run(None, feeds)[0]
        assert_close(got, run_reference(model, feeds)[0], rtol=1e-4, atol=1e-5)


def gpt_neo_style_encoder(hide_value: float):
    """GPT-Neo's export: future keys hidden by Where(causal, scores, finfo.min), then the padding
    mask added, unscaled (the torch-style encoder's scores, rerouted)."""
    model = torch_style_encoder(guard=False)
    g = model.graph
    for nd in g.node:
        if nd.op_type == "Add" and nd.input[0] == "scores":
            nd.input[0] = "hidden_future"
    g.node.append(helper.make_node("Where", ["causal", "scores", "hide"], ["hidden_future"]))
    g.initializer.append(_const("hide", np.array(hide_value, np.float32)))
    g.input.append(helper.make_tensor_value_info("causal", TensorProto.BOOL, [1, 1, "seq", "seq"]))
    return _toposorted(model)


def _toposorted(model):
    """The model with its nodes in an order where every input is made before it is read."""
    g = model.graph
    made = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    todo, done = list(g.node), []
    while todo:
        ready = [nd for nd in todo if all(x in made for x in nd.input)]
        assert ready, "a cycle"
        for nd in ready:
            done.append(nd)
            made |= set(nd.output)
            todo.remove(nd)
    del g.node[:]
    g.node.extend(done)
    return model


@pytest.mark.parametrize("hide_value", [float(np.finfo(np.float32).min), -np.inf, -1e4])
def test_scores_hidden_by_where_fuse_with_the_padding_mask(hide_value, isa):
    """Where(causal, S, v) + mask: with v at or below -1e30 the choice becomes an additive mask
    and the two masks one, so the attention fuses; -1e4 (a finite fill a row could be made of) is
    left alone. Either way the numbers are the reference's, fully hidden rows included."""
    model = gpt_neo_style_encoder(hide_value)
    ops = _kernel_ops(model, isa)
    fused = hide_value <= -1e30
    assert (ops.count("com.mopt.Attention") == 1 and "Softmax" not in ops) == fused, ops
    rng = np.random.default_rng(12)
    for batch, seq in [(1, 1), (2, 9)]:
        keep = rng.random((batch, seq)) < 0.7
        keep[:, 0] = True
        causal = np.tril(np.ones((seq, seq), bool))[None, None]
        if seq > 1:
            causal[..., 1, :] = False  # a query that sees nothing
        feeds = {"x": rng.standard_normal((batch, seq, 32)).astype(np.float32), "keep": keep, "causal": causal}
        want = run_reference(model, feeds)[0]
        got = mopt.Session(mopt.compile(model, 2, isa=isa), isa=isa).run(None, feeds)[0]
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert_close(np.nan_to_num(got), np.nan_to_num(want), rtol=1e-4, atol=1e-5)


def test_qkv_projection_is_stored_through_the_caches():
    """The product only the attention reads (through a view) carries _cache_c, which keeps its
    result out of the streaming stores; a product whose result is the graph's output does not."""
    model = torch_style_encoder()
    g = model.graph
    g.initializer.append(_const("wo", np.random.default_rng(8).standard_normal((32, 32)).astype(np.float32)))
    g.node.append(helper.make_node("MatMul", ["y", "wo"], ["out"]))
    g.output[0].name = "out"
    cm = mopt.compile(model, 2)
    nodes = cm.program["graph"]["nodes"]
    gemms = {n["name"]: n["attrs"].get("_cache_c") for n in nodes if n["op"] in ("MatMul", "FusedMatMul", "Gemm", "FusedGemm")}
    (att,) = [n for n in nodes if n["op"] == "Attention"]
    (qkv,) = [n for n in nodes if att["inputs"][0] in n["outputs"]]
    assert qkv["op"] == "FusedMatMul", qkv
    assert gemms.pop(qkv["name"]) == 1, gemms
    assert gemms, "no other product left"
    assert all(v is None for v in gemms.values()), gemms
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 5, 32)).astype(np.float32),
             "keep": np.ones((2, 5), bool)}
    assert_close(mopt.Session(cm).run(None, feeds)[0], run_reference(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_fuse_classic_attention(isa):
    model = classic_encoder()
    ops = _kernel_ops(model, isa)
    assert ops.count("com.mopt.Attention") == 1 and "Softmax" not in ops and "Transpose" not in ops, ops
    rng = np.random.default_rng(1)
    mask = np.where(rng.random((2, 1, 1, 7)) < 0.3, -10000.0, 0.0).astype(np.float32)
    feeds = {"x": rng.standard_normal((2, 7, 16)).astype(np.float32), "mask": mask}
    want = run_reference(model, feeds)[0]
    got = mopt.Session(mopt.compile(model, 2, isa=isa), isa=isa, fallback=False).run(None, feeds)[0]
    assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_attention_not_fused_when_scores_are_read():
    """The probabilities are also a graph output: fusing would lose them."""
    model = classic_encoder()
    model.graph.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, None))
    cm = mopt.compile(model, 2)
    assert "com.mopt.Attention" not in _ops(cm)
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((2, 7, 16)).astype(np.float32), "mask": np.zeros((2, 1, 1, 7), np.float32)}
    got = mopt.Session(cm).run(None, feeds)
    for g, w in zip(got, run_reference(model, feeds), strict=True):
        assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_fused_attention_exports_to_standard_onnx(tmp_path):
    """A graph with com.mopt.Attention writes back as standard ops that ONNX Runtime runs alike."""
    ort = pytest.importorskip("onnxruntime")
    from mopt.frontend.onnx_export import export_onnx
    from mopt.frontend.onnx_import import import_onnx
    from mopt.passes.manager import PassManager
    from mopt.passes.pipelines import pipeline

    model = torch_style_encoder()
    g = import_onnx(model)
    PassManager(pipeline(2)).run(g)
    assert any(n.op_type == "Attention" for n in g.nodes)
    out = export_onnx(g)
    import onnx

    onnx.checker.check_model(out)
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((2, 5, 32)).astype(np.float32), "keep": rng.random((2, 5)) < 0.7}
    got = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert_close(got, run_reference(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_cross_attention_keeps_separate_projections(isa):
    """K and V project another input (an encoder's memory): fused attention, Q/K/V not merged."""
    model = classic_encoder()
    g = model.graph
    g.input.append(helper.make_tensor_value_info("mem", TensorProto.FLOAT, [2, 7, 16]))
    for n in g.node:
        if n.op_type == "MatMul" and n.input[1] in ("wk", "wv"):
            n.input[0] = "mem"
    ops = _kernel_ops(model, isa)
    assert ops.count("com.mopt.Attention") == 1 and ops.count("MatMul") + ops.count("com.mopt.FusedMatMul") == 3, ops
    rng = np.random.default_rng(9)
    feeds = {"x": rng.standard_normal((2, 7, 16)).astype(np.float32), "mask": np.zeros((2, 1, 1, 7), np.float32),
             "mem": rng.standard_normal((2, 7, 16)).astype(np.float32)}
    got = mopt.Session(mopt.compile(model, 2, isa=isa), isa=isa).run(None, feeds)[0]
    assert_close(got, run_reference(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_split_qkv_projection_is_read_packed(isa):
    """GPT-2's form: one projection to [B, S, 3N], Split along the last axis, each part head-split:
    the attention reads the projection itself."""
    h, d, s, hidden = 2, 8, 7, 16
    rng = np.random.default_rng(6)
    inits = [
        _const("w", rng.standard_normal((hidden, 3 * hidden)).astype(np.float32) * 0.3),
        _const("split4", np.array([2, s, h, d], np.int64)),
        _const("merge", np.array([2, s, hidden], np.int64)),
        _const("scale", np.array(1 / np.sqrt(d), np.float32)),
    ]
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w"], ["qkv"]), n("Split", ["qkv"], ["q3", "k3", "v3"], axis=2, num_outputs=3)]
    for t in "qkv":
        nodes += [n("Reshape", [f"{t}3", "split4"], [f"{t}4"]), n("Transpose", [f"{t}4"], [f"{t}h"], perm=[0, 2, 1, 3])]
    nodes += [
        n("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]),
        n("MatMul", ["qh", "kt"], ["sc"]),
        n("Mul", ["sc", "scale"], ["scaled"]),
        n("Softmax", ["scaled"], ["p"], axis=-1),
        n("MatMul", ["p", "vh"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx_t", "merge"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "gpt_attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, s, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, s, hidden])], inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    ops = _kernel_ops(model, isa)
    assert ops.count("com.mopt.Attention") == 1 and "Split" not in ops and "Transpose" not in ops, ops
    feeds = {"x": rng.standard_normal((2, s, hidden)).astype(np.float32)}
    got = mopt.Session(mopt.compile(model, 2, isa=isa), isa=isa).run(None, feeds)[0]
    assert_close(got, run_reference(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_fused_attention_flops_equal_the_unfused_graph():
    """mopt inspect's FLOP count does not change when the attention is fused (packed or not)."""
    from mopt.frontend.onnx_import import import_onnx
    from mopt.passes.manager import PassManager
    from mopt.passes.pipelines import pipeline
    from mopt.report import graph_report

    model = classic_encoder(s=9)
    before = graph_report(import_onnx(model))
    g = import_onnx(model)
    PassManager(pipeline(3)).run(g)
    assert any(n.op_type == "Attention" for n in g.nodes)
    after = graph_report(g)
    assert before.flops_complete and after.flops_complete
    assert after.flops == before.flops


def test_full_square_mask_is_fused_into_attention_not_into_the_scores_matmul(isa):
    """A float mask of the scores' own shape (ViT's export: [batch, 1, S, S]) would pass for a
    residual of the Q K^T product; the attention rule must get it (mask, softmax and all)."""
    s, d = 7, 8
    n = helper.make_node
    nodes = [
        n("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        n("MatMul", ["q", "kt"], ["scores"]),
        n("Add", ["scores", "mask"], ["masked"]),
        n("Softmax", ["masked"], ["probs"], axis=-1),
        n("MatMul", ["probs", "v"], ["y"]),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "attn",
        [vi(x, TensorProto.FLOAT, ["batch", 4, s, d]) for x in "qkv"] + [vi("mask", TensorProto.FLOAT, ["batch", 1, s, s])],
        [vi("y", TensorProto.FLOAT, ["batch", 4, s, d])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    ops = _kernel_ops(model, isa)
    assert ops == ["com.mopt.Attention"], ops
    rng = np.random.default_rng(0)
    feeds = {x: rng.standard_normal((2, 4, s, d)).astype(np.float32) for x in "qkv"}
    feeds["mask"] = np.where(rng.random((2, 1, s, s)) < 0.8, 0.0, -1e9).astype(np.float32)
    got = mopt.Session(mopt.compile(model, 2, isa=isa), isa=isa).run(None, feeds)[0]
    assert_close(got, run_reference(model, feeds)[0], rtol=1e-4, atol=1e-5)
