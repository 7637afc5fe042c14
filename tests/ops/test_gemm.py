"""Gemm, MatMul and their fused forms against onnx.reference: every ISA, transposes, alpha/beta,
every broadcastable C, B prepacked (initializer) and read at run time, odd and large sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper

import mopt
from mopt.testing.random_inputs import random_input
from mopt.testing.reference import feeds_of, run_mopt, single_op_model

from .helpers import check_op
from .native import check_fused, check_native, graph_model

OPS_COVERED = ["Gemm", "MatMul", "com.mopt.FusedGemm", "com.mopt.FusedMatMul"]


def k_tol(K: int) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 1e-4 * math.sqrt(max(K, 1))}


def rnd(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return random_input(shape, np.float32, seed=seed, low=-1, high=1)


def gemm_inputs(M: int, N: int, K: int, trans_a: int, trans_b: int, c_shape: tuple[int, ...] | None, seed: int = 0) -> dict:
    a = rnd((K, M) if trans_a else (M, K), seed)
    b = rnd((N, K) if trans_b else (K, N), seed + 1)
    c = None if c_shape is None else rnd(c_shape, seed + 2)
    return {"a": a, "b": b, "c": c}


B_WHERE = {"b-input": (), "b-const": ("b",)}

# (M, N, K): odd sizes, micro-kernel edges, several K blocks (KC=256), a large dimension each.
GEMM_SIZES = [
    (1, 1, 1),
    (1, 7, 17),
    (7, 1, 17),
    (17, 7, 1),
    (7, 17, 64),
    (17, 64, 7),
    (64, 64, 64),
    (1, 1031, 17),
    (1031, 7, 17),
    (7, 17, 1031),
    (33, 129, 300),
    # column edges of exactly one vector (AVX-512: 48 = 32 + 16; AVX2: 40 = 16 + 16 + 8) and of
    # less than one (200 = 6 x 32 + 8), with full-height row panels and K in several blocks
    (29, 48, 300),
    (30, 40, 260),
    (28, 200, 520),
    # several column blocks (N > 512): a raw A is packed once for all of them; M not a multiple of
    # any row tile, K over two depth blocks
    (45, 1100, 700),
    # rows 4 KB apart (K = 1024): A packed a cache line of each row at a time, not read in place
    (30, 70, 1024),
]


@pytest.mark.parametrize("b_where", list(B_WHERE), ids=str)
@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (1, 0), (0, 1), (1, 1)], ids=["NN", "TN", "NT", "TT"])
@pytest.mark.parametrize(("M", "N", "K"), GEMM_SIZES, ids=lambda s: str(s))
def test_gemm_sizes_and_transposes(M: int, N: int, K: int, trans_a: int, trans_b: int, b_where: str, isa: str) -> None:
    ins = gemm_inputs(M, N, K, trans_a, trans_b, (N,), seed=M + N + K)
    attrs = {"transA": trans_a, "transB": trans_b}
    check_op("Gemm", ins, attrs, isa=isa, consts=B_WHERE[b_where], **k_tol(K))


C_SHAPES = {"no-C": None, "C-scalar": (), "C-one": (1,), "C-N": (17,), "C-1xN": (1, 17), "C-Mx1": (7, 1), "C-MxN": (7, 17), "C-1x1": (1, 1)}
ALPHA_BETA = [(1.0, 1.0), (0.5, 1.0), (1.0, 2.5), (-1.5, 0.25), (2.0, 0.0)]


@pytest.mark.parametrize("b_where", list(B_WHERE), ids=str)
@pytest.mark.parametrize(("alpha", "beta"), ALPHA_BETA, ids=lambda v: f"{v}")
@pytest.mark.parametrize("c_shape", list(C_SHAPES.values()), ids=list(C_SHAPES))
def test_gemm_c_alpha_beta(c_shape: tuple | None, alpha: float, beta: float, b_where: str, isa: str) -> None:
    ins = gemm_inputs(7, 17, 33, 0, 1, c_shape, seed=5)
    check_op("Gemm", ins, {"alpha": alpha, "beta": beta, "transB": 1}, isa=isa, consts=B_WHERE[b_where], **k_tol(33))


@pytest.mark.parametrize("c_shape", [(1,), (1, 1), (1, 9), (1031, 1), (1031, 9)], ids=str)
def test_gemm_c_shapes_tall(c_shape: tuple, isa: str) -> None:
    ins = gemm_inputs(1031, 9, 20, 1, 0, c_shape, seed=6)
    check_op("Gemm", ins, {"beta": 0.75, "transA": 1}, isa=isa, **k_tol(20))


@pytest.mark.parametrize("c_shape", [(), (1,), (1, 1), (5, 1)], ids=str)
def test_gemm_single_column_output(c_shape: tuple, isa: str) -> None:
    # N == 1: a (1, N) or (N,) C is a single value, not a per-column bias
    ins = gemm_inputs(5, 1, 9, 0, 0, c_shape, seed=7)
    check_op("Gemm", ins, isa=isa, **k_tol(9))
    check_op("Gemm", ins, {"beta": 3.0}, isa=isa, consts=["b"], **k_tol(9))


@pytest.mark.parametrize("b_where", list(B_WHERE), ids=str)
def test_gemm_constant_c(b_where: str, isa: str) -> None:
    ins = gemm_inputs(9, 17, 13, 0, 0, (17,), seed=8)
    check_op("Gemm", ins, isa=isa, consts=[*B_WHERE[b_where], "c"], **k_tol(13))


@pytest.mark.parametrize("c_shape", [None, (5,), (3, 5)], ids=str)
@pytest.mark.parametrize("b_where", list(B_WHERE), ids=str)
def test_gemm_empty_reduction(b_where: str, c_shape: tuple | None, isa: str) -> None:
    """K = 0: the product is all zeros, the result alpha * 0 + beta * C."""
    ins = gemm_inputs(3, 5, 0, 0, 0, c_shape, seed=9)
    check_op("Gemm", ins, {"beta": 0.5}, isa=isa, consts=B_WHERE[b_where], rtol=0, atol=0)


@pytest.mark.parametrize(("M", "N"), [(0, 5), (3, 0), (0, 0)], ids=str)
def test_gemm_empty_output(M: int, N: int, isa: str) -> None:
    ins = gemm_inputs(M, N, 4, 0, 0, None, seed=10)
    check_op("Gemm", ins, isa=isa, rtol=0, atol=0)


def test_gemm_large(isa: str) -> None:
    """Every block loop of the driver runs more than once (M > MC, N > NC, K > KC)."""
    ins = gemm_inputs(250, 1100, 520, 0, 1, (1100,), seed=11)
    check_op("Gemm", ins, {"transB": 1}, isa=isa, consts=["b"], **k_tol(520))


def test_gemm_prepacked_for_another_isa(isa: str) -> None:
    """A program packed for one ISA's micro-kernel runs on every other (the weights are repacked)."""
    ins = gemm_inputs(13, 37, 29, 0, 1, (37,), seed=12)
    model = single_op_model("Gemm", ins, {"transB": 1}, consts=["b"])
    feeds = feeds_of(model, ins)
    want = run_mopt(model, feeds, isa="scalar")[0]
    for packed_for in mopt._C.available_isas():
        cm = mopt.compile(model, 0, isa=packed_for)
        got = mopt.Session(cm, isa=isa, intra_op_threads=2).run(None, feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"packed for {packed_for}, run on {isa}")


# -- MatMul -------------------------------------------------------------------------------------

MATMUL_SHAPES = {
    "1d-1d": ((17,), (17,)),
    "1d-2d": ((17,), (17, 7)),
    "2d-1d": ((7, 17), (17,)),
    "1d-3d": ((9,), (3, 9, 5)),
    "3d-1d": ((3, 5, 9), (9,)),
    "2d-2d": ((7, 17), (17, 9)),
    "2d-2d-odd": ((1, 1), (1, 1)),
    "2d-2d-big-k": ((3, 1031), (1031, 5)),
    "2d-2d-big-n": ((5, 64), (64, 1031)),
    "2d-2d-big-m": ((1031, 17), (17, 7)),
    "3d-2d": ((2, 7, 17), (17, 9)),
    "4d-2d": ((2, 3, 5, 17), (17, 64)),
    "2d-3d": ((7, 17), (3, 17, 9)),
    "3d-3d": ((4, 7, 17), (4, 17, 9)),
    "3d-3d-bcast-a": ((1, 7, 17), (4, 17, 9)),
    "3d-3d-bcast-b": ((4, 7, 17), (1, 17, 9)),
    "4d-3d": ((2, 3, 5, 6), (3, 6, 4)),
    "4d-4d-both-bcast": ((2, 1, 5, 6), (1, 3, 6, 4)),
    "4d-2d-one-row": ((3, 2, 1, 17), (17, 7)),
    "many-small": ((64, 3, 5), (64, 5, 2)),
    "few-large": ((2, 128, 128), (2, 128, 128)),
}


@pytest.mark.parametrize("b_where", list(B_WHERE), ids=str)
@pytest.mark.parametrize("shapes", list(MATMUL_SHAPES.values()), ids=list(MATMUL_SHAPES))
def test_matmul(shapes: tuple, b_where: str, isa: str) -> None:
    sa, sb = shapes
    ins = {"a": rnd(sa, 1), "b": rnd(sb, 2)}
    check_op("MatMul", ins, isa=isa, consts=B_WHERE[b_where], **k_tol(sa[-1]))


MATMUL_EMPTY = {
    "K=0": ((3, 0), (0, 4)),
    "K=0-batched": ((2, 3, 0), (0, 4)),
    "K=0-1d": ((0,), (0,)),
    "M=0": ((0, 4), (4, 5)),
    "N=0": ((3, 4), (4, 0)),
    "batch=0": ((0, 3, 4), (4, 5)),
    "batch=0-both": ((0, 3, 4), (1, 4, 5)),
}


@pytest.mark.parametrize("b_where", list(B_WHERE), ids=str)
@pytest.mark.parametrize("shapes", list(MATMUL_EMPTY.values()), ids=list(MATMUL_EMPTY))
def test_matmul_empty(shapes: tuple, b_where: str, isa: str) -> None:
    sa, sb = shapes
    ins = {"a": rnd(sa, 1), "b": rnd(sb, 2)}
    check_op("MatMul", ins, isa=isa, consts=B_WHERE[b_where], rtol=0, atol=0)


def test_matmul_mismatched_inner_dimension_is_a_clear_error(isa: str) -> None:
    a, b = rnd((3, 4), 1), rnd((5, 6), 2)
    model = single_op_model("MatMul", {"a": a, "b": b}, output_dtypes=[TensorProto.FLOAT])
    with pytest.raises(mopt.ExecutionError, match="inner dimensions differ"):
        run_mopt(model, {"a": a, "b": b}, isa=isa)


# -- fused forms (made by the -O2 fusion passes) ------------------------------------------------

ACTIVATIONS = {
    "Relu": ({}, 18),
    "LeakyRelu": ({"alpha": 0.2}, 18),
    "Sigmoid": ({}, 18),
    "Tanh": ({}, 18),
    "HardSigmoid": ({"alpha": 0.3, "beta": 0.4}, 18),
    "HardSwish": ({}, 18),
    "Gelu": ({"approximate": "tanh"}, 20),
    "Clip": ({}, 18),
    "Silu": ({}, 18),  # x * Sigmoid(x)
}


def _act_node(act: str, src: str) -> tuple[list, dict]:
    attrs, _ = ACTIVATIONS[act]
    if act == "Clip":
        return [helper.make_node("Clip", [src, "lo", "hi"], ["y"])], {"lo": np.array(-0.5, np.float32), "hi": np.array(0.75, np.float32)}
    if act == "Silu":
        return [helper.make_node("Sigmoid", [src], ["sig"]), helper.make_node("Mul", ["sig", src], ["y"])], {}
    return [helper.make_node(act, [src], ["y"], **attrs)], {}


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_fused_gemm(act: str, isa: str) -> None:
    a, b, c = rnd((9, 40), 1), rnd((33, 40), 2), rnd((33,), 3)
    acts, extra = _act_node(act, "t")
    nodes = [helper.make_node("Gemm", ["a", "b", "c"], ["t"], transB=1, alpha=0.5), *acts]
    model = graph_model(nodes, {"a": a, "b": b, "c": c, **extra}, ["y"], consts=["b", "c", *extra], opset=ACTIVATIONS[act][1])
    check_fused(model, {"a": a}, "com.mopt.FusedGemm", isa=isa, **k_tol(40))


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_fused_matmul(act: str, isa: str) -> None:
    a, b = rnd((2, 9, 40), 1), rnd((40, 33), 2)
    acts, extra = _act_node(act, "t")
    nodes = [helper.make_node("MatMul", ["a", "b"], ["t"]), *acts]
    model = graph_model(nodes, {"a": a, "b": b, **extra}, ["y"], consts=["b", *extra], opset=ACTIVATIONS[act][1])
    check_fused(model, {"a": a}, "com.mopt.FusedMatMul", isa=isa, **k_tol(40))


@pytest.mark.parametrize("shape", [(1, 7, 17), (64, 300, 100), (30, 700, 33)], ids=str)
def test_fused_matmul_silu_full_tiles(shape: tuple, isa: str) -> None:
    """SiLU finished in the micro-kernel's registers (full tiles), over one and several depth blocks."""
    m, k, n = shape
    a, b = rnd((m, k), 1), rnd((k, n), 2)
    acts, _ = _act_node("Silu", "t")
    model = graph_model([helper.make_node("MatMul", ["a", "b"], ["t"]), *acts], {"a": a, "b": b}, ["y"], consts=["b"])
    check_fused(model, {"a": a}, "com.mopt.FusedMatMul", isa=isa, **k_tol(k))


def test_fused_gemm_runtime_b(isa: str) -> None:
    a, b = rnd((9, 40), 1), rnd((40, 17), 2)
    model = graph_model([helper.make_node("Gemm", ["a", "b"], ["t"]), helper.make_node("Relu", ["t"], ["y"])], {"a": a, "b": b}, ["y"])
    check_fused(model, {"a": a, "b": b}, "com.mopt.FusedGemm", isa=isa, **k_tol(40))


@pytest.mark.parametrize("b_where", list(B_WHERE), ids=str)
@pytest.mark.parametrize("shapes", [((5, 40), (40, 17)), ((3, 5, 40), (3, 40, 17)), ((40,), (40, 17))], ids=["2d", "batched", "1d-2d"])
def test_fused_matmul_bias_and_alpha(shapes: tuple, b_where: str, isa: str) -> None:
    """com.mopt.FusedMatMul's own inputs: a bias over the last axis, alpha, an activation."""
    sa, sb = shapes
    a, b, bias = rnd(sa, 1), rnd(sb, 2), rnd((sb[-1],), 3)
    want = np.maximum(0.0, 0.5 * np.matmul(a.astype(np.float64), b) + bias).astype(np.float32)
    check_native(
        "FusedMatMul",
        {"a": a, "b": b, "bias": bias},
        [want],
        {"alpha": 0.5, "activation": "LeakyRelu", "activation_alpha": 0.0},
        isa=isa,
        consts=B_WHERE[b_where],
        output_dtypes=[TensorProto.FLOAT],
        domain="com.mopt",
        **k_tol(40),
    )


@pytest.mark.parametrize("shapes", [((1, 7), (7, 17)), ((2, 5, 33), (33, 40)), ((3, 2, 17, 9), (2, 9, 31)), ((130, 300), (300, 19))], ids=str)
@pytest.mark.parametrize("b_where", list(B_WHERE))
def test_fused_matmul_residual(shapes: tuple, b_where: str, isa: str) -> None:
    """com.mopt.FusedMatMul's input 3: a residual of the result's shape, added after the bias."""
    sa, sb = shapes
    a, b, bias = rnd(sa, 4), rnd(sb, 5), rnd((sb[-1],), 6)
    prod = np.matmul(a.astype(np.float64), b)
    res = rnd(prod.shape, 7)
    want = (prod + bias + res).astype(np.float32)
    check_native(
        "FusedMatMul", {"a": a, "b": b, "bias": bias, "res": res}, [want], isa=isa, consts=B_WHERE[b_where],
        output_dtypes=[TensorProto.FLOAT], domain="com.mopt", **k_tol(sa[-1]),
    )


@pytest.mark.parametrize(("M", "N", "K"), [(1, 1, 1), (14, 33, 7), (129, 17, 300)])
def test_fused_gemm_bias_and_residual(M: int, N: int, K: int, isa: str) -> None:
    a, b, c, res = rnd((M, K), 8), rnd((N, K), 9), rnd((N,), 10), rnd((M, N), 11)
    want = np.maximum(0.0, a.astype(np.float64) @ b.T.astype(np.float64) + c + res).astype(np.float32)
    check_native(
        "FusedGemm", {"a": a, "b": b, "c": c, "res": res}, [want], {"transB": 1, "activation": "Relu"}, isa=isa, consts=("b", "c"),
        output_dtypes=[TensorProto.FLOAT], domain="com.mopt", **k_tol(K),
    )


@pytest.mark.parametrize(
    ("M", "N", "K", "act"),
    # C of 1 MB or more in one depth block: full tiles streamed past the caches (rows aligned, N a
    # multiple of 16), with and without an activation finished in registers; rows unaligned
    # (N = 500) and two depth blocks (K = 400) take ordinary stores
    [(600, 512, 96, ""), (600, 512, 96, "Relu"), (531, 512, 300, "Gelu"), (600, 500, 96, "Relu"), (520, 512, 400, "")],
    ids=str,
)
def test_fused_matmul_large_output(M: int, N: int, K: int, act: str, isa: str) -> None:
    """A C of a megabyte or more (stored with non-temporal stores where aligned) equals numpy's."""
    a, b, bias, res = rnd((M, K), 12), rnd((K, N), 13), rnd((N,), 14), rnd((M, N), 15)
    t = a.astype(np.float64) @ b.astype(np.float64) + bias + res
    if act == "Relu":
        t = np.maximum(0.0, t)
    elif act == "Gelu":
        t = 0.5 * t * (1.0 + np.vectorize(math.erf)(t / math.sqrt(2.0)))
    attrs = {"activation": act} if act else {}
    check_native(
        "FusedMatMul", {"a": a, "b": b, "bias": bias, "res": res}, [t.astype(np.float32)], attrs, isa=isa, consts=("b", "bias"),
        output_dtypes=[TensorProto.FLOAT], domain="com.mopt", **k_tol(K),
    )


def test_fused_matmul_residual_of_wrong_shape_is_an_error() -> None:
    from mopt.errors import MoptError

    a, b = rnd((4, 8), 1), rnd((8, 5), 2)
    with pytest.raises(MoptError, match="does not broadcast to the product"):
        check_native(
            "FusedMatMul", {"a": a, "b": b, "bias": None, "res": rnd((4, 3), 3)}, [a @ b], isa="scalar",
            output_dtypes=[TensorProto.FLOAT], domain="com.mopt",
        )


@pytest.mark.parametrize("op", ["FusedMatMul", "FusedGemm"])
@pytest.mark.parametrize("res_shape", [(1, 5), (4, 1), (5,)], ids=str)
def test_fused_residual_that_broadcasts_is_added_after_the_gemm(op: str, res_shape: tuple, isa: str) -> None:
    a, b, res = rnd((4, 8), 1), rnd((8, 5), 2), rnd(res_shape, 3)
    want = np.maximum(0.0, a.astype(np.float64) @ b + res).astype(np.float32)
    check_native(
        op, {"a": a, "b": b, "c": None, "res": res}, [want], {"activation": "Relu"}, isa=isa, consts=("b",),
        output_dtypes=[TensorProto.FLOAT], domain="com.mopt", **k_tol(8),
    )
