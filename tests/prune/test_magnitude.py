"""Block magnitude pruning (mopt.prune.magnitude, `mopt prune --sparsity`): the result is valid
ONNX, exactly the original with the chosen blocks zeroed, the blocks are the smallest by norm,
and the pruned model runs the block-sparse kernel with the same outputs as onnx.reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.cli import main
from mopt.errors import InvalidArgumentError
from mopt.lower.block_sparse import block_density
from mopt.prune.magnitude import block_mask, parse_block, prune_blocks
from mopt.testing.assert_close import assert_close
from mopt.testing.reference import run_reference



def big_mlp() -> onnx.ModelProto:
    """x [batch, 64] -> Gemm(transB) 96 -> Relu -> MatMul 40 (+ bias Add) -> Gemm 10."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((96, 64)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((96, 40)).astype(np.float32) * 0.2
    w3 = rng.standard_normal((40, 10)).astype(np.float32) * 0.2
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Add", ["h2", "b2"], ["a2"]),
        helper.make_node("Gemm", ["a2", "w3"], ["y"], name="fc3"),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in
             [("w1", w1), ("b1", np.full(96, 0.1, np.float32)), ("w2", w2), ("b2", np.zeros(40, np.float32)), ("w3", w3)]]  # fmt: skip
    g = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def by_hand(model: onnx.ModelProto, masks: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The original model with the masked entries zeroed, nothing else touched."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.name in masks:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * masks[t.name], t.name))
    return m


@pytest.mark.parametrize("block", [(1, 8), (2, 8), (4, 4), (1, 1)], ids=str)
@pytest.mark.parametrize("sparsity", [0.5, 0.8])
def test_pruned_model_is_the_original_with_blocks_zeroed(sparsity: float, block: tuple[int, int]) -> None:
    model = big_mlp()
    res = prune_blocks(model, sparsity, block)
    onnx.checker.check_model(res.model, full_check=True)
    assert [layer.name for layer in res.layers] == ["fc1", "fc2", "fc3"]
    # only the three weights changed, and only to zero
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in res.model.graph.initializer}
    for name, a in after.items():
        if name in res.masks:
            np.testing.assert_array_equal(a, before[name] * res.masks[name])
        else:
            np.testing.assert_array_equal(a, before[name])
    for layer in res.layers:
        assert layer.zeroed == round(sparsity * layer.blocks)
    x = np.random.default_rng(1).standard_normal((9, 64)).astype(np.float32)
    want = run_reference(by_hand(model, res.masks), {"x": x})[0]
    assert_close(run_reference(res.model, {"x": x})[0], want, rtol=0, atol=0, context="reference")
    got = mopt.Session(res.model, 2, sparse_max_density=1.0).run(None, {"x": x})[0]
    assert_close(got, want, rtol=1e-5, atol=1e-5, context=f"mopt {sparsity} {block}")


def test_smallest_blocks_go_first() -> None:
    b = np.ones((2, 16), np.float32)
    b[0, 8:] = 0.1  # the weakest 1x8 block
    b[1, :8] = 0.5
    keep = block_mask(b, 0.25, (1, 8))
    assert not keep[0, 8:].any() and keep[0, :8].all() and keep[1].all()
    keep = block_mask(b, 0.5, (1, 8))
    assert keep[0, :8].all() and keep[1, 8:].all() and not keep[1, :8].any()


def test_edge_blocks_and_transposed_gemm_follow_the_operator_view() -> None:
    # fc1 is Gemm(transB=1): its stored weight [96, 64] is B^T; 1x8 blocks are 8 outputs of one input
    res = prune_blocks(big_mlp(), 0.7, (1, 8))
    w1 = numpy_helper.to_array(next(t for t in res.model.graph.initializer if t.name == "w1"))
    b = w1.T  # [K=64, N=96]
    nz = (b != 0).reshape(64, 12, 8).any(axis=2)
    assert block_density(b) == pytest.approx(nz.mean())
    assert nz.mean() == pytest.approx(0.3, abs=0.01)
    # fc3's N = 10 ends in a 2-wide block
    assert res.layers[2].blocks == 40 * 2


def test_pruned_model_runs_block_sparse() -> None:
    res = prune_blocks(big_mlp(), 0.8)
    cm = mopt.compile(res.model, 2)
    # fused with their Relu / bias Add, the nodes are named after the last op of the fusion
    assert [(c.op, c.shape, c.sparse) for c in cm.sparse_choices] == [
        ("FusedGemm", (64, 96), True), ("FusedMatMul", (96, 40), True), ("Gemm", (40, 10), True)]


def test_errors_are_sentences() -> None:
    with pytest.raises(InvalidArgumentError, match="fraction"):
        prune_blocks(big_mlp(), 1.5)
    with pytest.raises(InvalidArgumentError, match="ROWSxCOLS"):
        parse_block("8")
    conv_only = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w")]))
    with pytest.raises(InvalidArgumentError, match="no MatMul/Gemm"):
        prune_blocks(conv_only, 0.5)


def test_cli_prune_sparsity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "mlp.onnx", tmp_path / "mlp.pruned.onnx"
    onnx.save(big_mlp(), str(src))
    rc = main(["prune", str(src), "--sparsity", "0.8", "--block", "1x8", "-o", str(out), "--runs", "2", "--batch", "4", "--threads", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fc1 (Gemm 64x96)" in text and "block-sparse kernel" in text and "mopt ms (batch 4)" in text
    onnx.checker.check_model(onnx.load(str(out)))
    mo = tmp_path / "mlp.mopt"
    assert main(["compile", str(src), "--sparsity", "0.8", "-o", str(mo)]) == 0
    text = capsys.readouterr().out
    assert "block-sparse: 'fc3' (Gemm 40x10): block density 0.20 <= 0.50, block-sparse kernel" in text and mo.exists()
    assert main(["compile", str(src), "--sparsity", "0.8", "--prune", "0.5"]) == 2
    assert "--sparsity goes alone" in capsys.readouterr().err
