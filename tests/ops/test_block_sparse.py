"""The block-sparse GEMM path of Gemm / MatMul / FusedGemm / FusedMatMul (B packed "bsr_b:nb=8")
against numpy in float64: every ISA, few-row and packed-row kernels (M = 0, 1, 7, 17, 64), K and N
off the 8-column block, all-zero and fully dense weights, fused bias/activation/residual, the
threshold decision, and a damaged packed blob refused at load.

No new op: the sparse kernel is a packed format of the existing ones (claimed by test_gemm.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.errors import MoptError
from mopt.lower.block_sparse import block_density
from mopt.testing.assert_close import assert_close

OPS_COVERED: list[str] = []


def sparse_weight(k: int, n: int, density: float, seed: int) -> np.ndarray:
    """[K, N] with about `density` of its 1x8 blocks nonzero (the last block cut at N)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    keep = rng.random((k, -(-n // 8))) < density
    return w * np.repeat(keep, 8, axis=1)[:, :n]


def matmul_model(w: np.ndarray, op: str = "MatMul", trans_b: int = 0, bias: np.ndarray | None = None, relu: bool = False,
                 a_rank: int = 2) -> onnx.ModelProto:
    k = w.shape[1] if trans_b else w.shape[0]
    inits = [numpy_helper.from_array(w, "w")]
    ins = ["a", "w"]
    attrs = {"transB": trans_b} if op == "Gemm" else {}
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
        if op == "Gemm":
            ins.append("bias")
    nodes = [helper.make_node(op, ins, ["p"], **attrs)]
    last = "p"
    if bias is not None and op == "MatMul":
        nodes.append(helper.make_node("Add", [last, "bias"], ["pb"]))
        last = "pb"
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["r"]))
        last = "r"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    a_shape = ["m", k] if a_rank == 2 else ["b", "m", k]
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def want_of(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, relu: bool) -> np.ndarray:
    y = a.astype(np.float64) @ b.astype(np.float64)
    if bias is not None:
        y = y + bias
    return (np.maximum(y, 0) if relu else y).astype(np.float32)


def run_sparse(model: onnx.ModelProto, a: np.ndarray, isa: str, level: int = 2, limit: float = 1.0) -> tuple[np.ndarray, list]:
    sess = mopt.Session(model, level, isa=isa, intra_op_threads=2, fallback=False, sparse_max_density=limit)
    kernels = [impl for _, _, impl in sess.kernels()]
    return sess.run(None, {"a": a})[0], kernels


SIZES = [(0, 16, 16), (1, 13, 21), (7, 64, 30), (17, 33, 17), (64, 100, 64), (5, 1, 9), (3, 300, 1)]


@pytest.mark.parametrize(("M", "K", "N"), SIZES, ids=str)
@pytest.mark.parametrize(("op", "trans_b"), [("MatMul", 0), ("Gemm", 0), ("Gemm", 1)], ids=["MatMul", "Gemm", "GemmT"])
def test_block_sparse_matches_numpy(M: int, K: int, N: int, op: str, trans_b: int, isa: str) -> None:
    b = sparse_weight(K, N, 0.3, seed=M + K + N)
    bias = np.random.default_rng(1).uniform(-1, 1, N).astype(np.float32)
    a = np.random.default_rng(2).uniform(-1, 1, (M, K)).astype(np.float32)
    model = matmul_model(b.T.copy() if trans_b else b, op, trans_b, bias, relu=True)
    got, kernels = run_sparse(model, a, isa)
    assert any("bsr_1x8" in k for k in kernels), f"the block-sparse kernel did not run: {kernels}"
    assert_close(got, want_of(a, b, bias, True), rtol=1e-5, atol=1e-5 * np.sqrt(K), context=f"{op} {M}x{K}x{N} {isa}")


@pytest.mark.parametrize("density", [0.0, 1.0, 0.05], ids=["all-zero", "dense", "very-sparse"])
@pytest.mark.parametrize("M", [1, 4, 40])
def test_block_sparse_extremes(density: float, M: int, isa: str) -> None:
    b = sparse_weight(70, 45, density, seed=3)
    a = np.random.default_rng(4).uniform(-1, 1, (M, 70)).astype(np.float32)
    got, kernels = run_sparse(matmul_model(b, bias=np.ones(45, np.float32)), a, isa, limit=1.0)
    assert_close(got, want_of(a, b, np.ones(45), False), rtol=1e-5, atol=1e-4, context=f"density {density} M={M} {isa}")
    # an entirely dense weight has nothing sparse to decide: it keeps the dense kernel
    assert any("bsr_1x8" in k for k in kernels) == (block_density(b) < 1.0)


def test_block_sparse_batched_matmul(isa: str) -> None:
    b = sparse_weight(40, 24, 0.4, seed=5)
    a = np.random.default_rng(6).uniform(-1, 1, (3, 5, 40)).astype(np.float32)
    got, kernels = run_sparse(matmul_model(b, a_rank=3), a, isa)
    assert any("bsr_1x8" in k for k in kernels)
    assert_close(got, want_of(a, b, None, False), rtol=1e-5, atol=1e-4, context=f"batched {isa}")


def test_block_sparse_fused_residual(isa: str) -> None:
    b = sparse_weight(32, 32, 0.25, seed=7)
    a = np.random.default_rng(8).uniform(-1, 1, (9, 32)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["a", "w"], ["p"]), helper.make_node("Add", ["p", "a"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["m", 32])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(b, "w")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    sess = mopt.Session(model, 2, isa=isa, intra_op_threads=2, sparse_max_density=1.0)
    ops = {op: impl for _, op, impl in sess.kernels()}
    assert "bsr_1x8" in ops.get("com.mopt.FusedMatMul", ""), ops
    assert_close(sess.run(None, {"a": a})[0], np.maximum(want_of(a, b, None, False) + a, 0), rtol=1e-5, atol=1e-5, context=isa)


def test_threshold_keeps_dense_above_it_and_says_so() -> None:
    b = sparse_weight(64, 64, 0.6, seed=9)
    d = block_density(b)
    a = np.random.default_rng(10).uniform(-1, 1, (8, 64)).astype(np.float32)
    m = matmul_model(b)
    lines: list[str] = []
    dense = mopt.compile(m, 2, sparse_max_density=d - 0.01, print_changes=True, log=lines.append)
    sparse = mopt.compile(m, 2, sparse_max_density=d)
    (cd,), (cs,) = dense.sparse_choices, sparse.sparse_choices
    assert not cd.sparse and cs.sparse and cd.density == pytest.approx(d)
    assert any("dense kernel kept" in line for line in lines), lines
    fmts = [v["const"].get("format", "") for v in sparse.program["graph"]["values"] if "const" in v]
    assert "bsr_b:nb=8" in fmts
    assert "bsr_b:nb=8" not in [v["const"].get("format", "") for v in dense.program["graph"]["values"] if "const" in v]
    y_dense = mopt.Session(dense).run(None, {"a": a})[0]
    y_sparse = mopt.Session(sparse).run(None, {"a": a})[0]
    assert_close(y_sparse, y_dense, rtol=1e-5, atol=1e-5, context="sparse vs dense program")


def test_saved_program_round_trip(tmp_path) -> None:  # noqa: ANN001
    b = sparse_weight(48, 40, 0.2, seed=11)
    a = np.random.default_rng(12).uniform(-1, 1, (6, 48)).astype(np.float32)
    cm = mopt.compile(matmul_model(b), 2, sparse_max_density=1.0)
    path = tmp_path / "m.mopt"
    cm.save(str(path))
    got = mopt.Session(str(path)).run(None, {"a": a})[0]
    assert_close(got, want_of(a, b, None, False), rtol=1e-5, atol=1e-5, context="loaded from model.mopt")


@pytest.mark.parametrize("damage", ["row-out-of-range", "pointer-past-end", "short-blob"])
def test_damaged_block_sparse_blob_is_refused(damage: str) -> None:
    k, n = 16, 24
    b = sparse_weight(k, n, 0.5, seed=13)
    cm = mopt.compile(matmul_model(b), 2, sparse_max_density=1.0)
    (v,) = [v for v in cm.program["graph"]["values"] if v.get("const", {}).get("format") == "bsr_b:nb=8"]
    off = v["const"]["offset"]
    i = next(j for j, (o, _) in enumerate(cm.chunks) if o == off)
    raw = bytearray(cm.chunks[i][1] if isinstance(cm.chunks[i][1], bytes) else np.asarray(cm.chunks[i][1]).tobytes())
    words = np.frombuffer(raw, np.int32).copy()
    nb = -(-n // 8)
    if damage == "row-out-of-range":
        words[nb + 1] = k + 5  # the first block's row
    elif damage == "pointer-past-end":
        words[1] = words[nb] + 1
    data = words.tobytes()
    if damage == "short-blob":
        data = data[:-4]
        v["const"]["nbytes"] -= 4
    cm.chunks[i] = (off, data)
    with pytest.raises(MoptError, match="block-sparse operand B"):
        mopt.Session(cm)
