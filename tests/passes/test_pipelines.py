"""The -O levels (pipelines.py) and the pass manager (manager.py): what each level runs, that a
wrong level is refused, that -O2 fuses a Conv+BN+Add+Relu block into one FusedConv, and that the
records and the --print-changes text name each pass and what it did."""

from __future__ import annotations

import gc
import re

import onnx
import pytest

import mopt
from mopt.frontend import import_onnx
from mopt.ir import Graph, IRError
from mopt.passes import Pass, PassManager, PassRecord, pipeline, register_pass
from mopt.passes.cleanup.dead_code import EliminateDeadCode
from mopt.passes.fold.constants import FoldConstants
from mopt.passes.manager import registered_passes
from mopt.passes.pattern import ApplyRules

from .helpers import Weights, assert_outputs_unchanged, at_level, bn_inputs, imported_ops, make_model, node, ops, the

LEVEL_PASSES = {
    0: [],
    1: ["LowerQDQToInt8", "FoldConstants", "EliminateDeadCode", "ApplyRules(level=1)", "EliminateDeadCode"],
    2: ["LowerQDQToInt8", "FoldConstants", "EliminateDeadCode", "ApplyRules(level=1)", "EliminateDeadCode", "ApplyRules(level=2)", "EliminateDeadCode"],
}
LEVEL_PASSES[3] = [*LEVEL_PASSES[2], "ApplyRules(level=3)", "EliminateDeadCode", "ChooseWinograd"]


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_levels_are_lists_of_passes(level: int) -> None:
    passes = pipeline(level)
    assert isinstance(passes, list)
    assert all(isinstance(p, Pass) for p in passes)
    assert [p.name for p in passes] == LEVEL_PASSES[level]
    assert all(p.min_level <= max(level, 1) for p in passes)
    if level >= 1:
        assert [p.name for p in pipeline(level - 1)] == [p.name for p in passes][: len(pipeline(level - 1))], (
            "each level extends the one before"
        )
    assert not any(a is b for a, b in zip(passes, pipeline(level), strict=True)), "every call builds fresh passes"


@pytest.mark.parametrize("level", [-1, 4, 10, 1.5, "2", None])
def test_invalid_level_is_refused(level: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"optimization level must be 0, 1, 2 or 3, got {level}")):
        pipeline(level)  # type: ignore[arg-type]


def test_invalid_level_is_refused_by_compile() -> None:
    model = make_model([node("Relu", ["x"], ["y"])], {"x": [2]}, ["y"])
    with pytest.raises(ValueError, match="optimization level must be 0, 1, 2 or 3, got 7"):
        mopt.compile(model, 7)


def resnet_block(residual: bool = True) -> onnx.ModelProto:
    """x -> Conv -> BatchNormalization -> Add(x) -> Relu, a ResNet basic block's tail."""
    w = Weights(0)
    nodes = [node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), node("BatchNormalization", bn_inputs("c"), ["n"])]
    if residual:
        nodes += [node("Add", ["n", "x"], ["s"]), node("Relu", ["s"], ["y"])]
    else:
        nodes += [node("Relu", ["n"], ["y"])]
    return make_model(nodes, {"x": [2, 4, 6, 6]}, ["y"], {"w": w.normal(4, 4, 3, 3), "b": w.normal(4), **w.batchnorm(4)})


@pytest.mark.parametrize(
    ("level", "want"),
    [
        (0, {"Add": 1, "BatchNormalization": 1, "Conv": 1, "Relu": 1}),
        (1, {"Add": 1, "Conv": 1, "Relu": 1}),
        (2, {"com.mopt.FusedConv": 1}),
        (3, {"com.mopt.FusedConv": 1}),
    ],
)
def test_levels_on_a_residual_block(level: int, want: dict[str, int]) -> None:
    model = resnet_block()
    assert imported_ops(model) == {"Add": 1, "BatchNormalization": 1, "Conv": 1, "Relu": 1}
    graph = at_level(model, level)
    assert ops(graph) == want
    if level >= 2:
        fused = the(graph, "com.mopt.FusedConv")
        assert fused.attr("activation") == "Relu"
        assert fused.attr("pads") == [1, 1, 1, 1]
        assert fused.inputs[0] is graph.inputs[0]
        assert fused.inputs[3] is graph.inputs[0], "the block's input is also the residual"
        assert fused.inputs[2] is not None
        assert fused.inputs[2].is_const, "BatchNorm became the bias"
        assert sorted(graph.constants) == sorted(v.name for v in fused.inputs[1:3] if v is not None), "BatchNorm parameters are gone"
    assert_outputs_unchanged(model, graph, level=level)


def test_o2_fuses_conv_bn_relu_without_residual() -> None:
    model = resnet_block(residual=False)
    graph = at_level(model, 2)
    fused = the(graph, "com.mopt.FusedConv")
    assert ops(graph) == {"com.mopt.FusedConv": 1}
    assert fused.attr("activation") == "Relu"
    assert len(fused.inputs) == 3
    assert_outputs_unchanged(model, graph, level=2)


def test_records_name_each_pass_and_what_it_did() -> None:
    compiled = mopt.compile(resnet_block(), 2)
    records = compiled.records
    assert [r.name for r in records] == LEVEL_PASSES[2]
    by_name = {r.name: r for r in records}
    rules1, rules2 = by_name["ApplyRules(level=1)"], by_name["ApplyRules(level=2)"]
    assert rules1.changed
    assert rules1.details == ["FoldBatchNormIntoConv: 1x"]
    assert (rules1.nodes_before, rules1.nodes_after, rules1.added, rules1.removed) == (4, 3, 1, 2)
    assert rules2.changed
    assert rules2.details == ["FuseResidualAdd: 1x", "FuseActivation: 1x"]
    assert (rules2.nodes_before, rules2.nodes_after, rules2.added, rules2.removed) == (3, 1, 1, 3)
    assert not records[0].changed
    assert records[0].details == []
    assert all(r.seconds >= 0 for r in records)
    assert rules2.summary() == f"ApplyRules(level=2): +1 -3 nodes ({rules2.seconds:.2f} s)"


def test_print_changes_text() -> None:
    lines: list[str] = []
    mopt.compile(resnet_block(), 2, print_changes=True, log=lines.append)
    text = "\n".join(lines)
    summaries = [ln for ln in lines if not ln.startswith(" ")]
    assert [s.split(":")[0] for s in summaries] == LEVEL_PASSES[2]
    for s in summaries:
        assert re.fullmatch(r"[\w()=]+: \+\d+ -\d+ nodes \(\d+\.\d\d s\)", s), s
    assert re.search(r"^ApplyRules\(level=1\): \+1 -2 nodes .*\n    FoldBatchNormIntoConv: 1x$", text, re.M)
    assert re.search(r"^ApplyRules\(level=2\): \+1 -3 nodes .*\n    FuseResidualAdd: 1x\n    FuseActivation: 1x$", text, re.M)


def test_explain_says_where_each_rule_applied_and_why_not() -> None:
    """With --explain the details also say at which node each rule applied or why it did not."""
    model = resnet_block()
    model.graph.output.append(onnx.helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, None))  # s read twice: no Relu fusion
    lines: list[str] = []
    compiled = mopt.compile(model, 2, explain=True, log=lines.append)
    assert "    FoldBatchNormIntoConv at 'n'" in lines
    assert "    FuseResidualAdd at 's'" in lines
    assert "    FuseActivation at 'y': not applied: FusedConv output feeds other nodes" in lines
    assert ops(compiled.graph) == {"Relu": 1, "com.mopt.FusedConv": 1}
    silent: list[str] = []
    mopt.compile(model, 2, log=silent.append)
    assert silent == [], "nothing is printed unless asked"


def test_print_changes_at_o0_prints_nothing() -> None:
    lines: list[str] = []
    compiled = mopt.compile(resnet_block(), 0, print_changes=True, log=lines.append)
    assert lines == []
    assert compiled.records == []


# -- the manager ----------------------------------------------------------------------------------
class _BreakUseLists(Pass):
    """A buggy pass: rewires an input without telling the value's use-list."""

    def run(self, graph: Graph) -> bool:
        n = graph.nodes[-1]
        n.inputs[0] = graph.inputs[0]
        self.note("rewired")
        return True


class _CountNodes(Pass):
    def __init__(self) -> None:
        super().__init__()
        self.explain = False
        self.seen: list[int] = []

    def run(self, graph: Graph) -> bool:
        self.seen.append(len(graph.nodes))
        self.note(f"explain={self.explain}")
        return False


def _graph() -> Graph:
    return import_onnx(make_model([node("Relu", ["x"], ["r"]), node("Neg", ["r"], ["y"])], {"x": [3]}, ["y"]))


def test_manager_verifies_the_ir_after_each_pass() -> None:
    with pytest.raises(IRError, match="does not list its use"):
        PassManager([_BreakUseLists()], verify_ir=True).run(_graph())
    records = PassManager([_BreakUseLists()], verify_ir=False).run(_graph())
    assert records[0].details == ["rewired"]


@pytest.mark.parametrize(("env", "verifies"), [("1", True), ("0", False), (None, False)])
def test_manager_verify_default_comes_from_mopt_verify(monkeypatch: pytest.MonkeyPatch, env: str | None, verifies: bool) -> None:
    if env is None:
        monkeypatch.delenv("MOPT_VERIFY", raising=False)
    else:
        monkeypatch.setenv("MOPT_VERIFY", env)
    assert PassManager([]).verify_ir is verifies


def test_manager_hands_explain_to_passes_and_logs_details() -> None:
    counter = _CountNodes()
    lines: list[str] = []
    records = PassManager([counter, EliminateDeadCode(), counter], explain=True, log=lines.append).run(_graph())
    assert counter.seen == [2, 2]
    assert [r.name for r in records] == ["_CountNodes", "EliminateDeadCode", "_CountNodes"]
    assert records[0].details == records[2].details == ["explain=True"], "details start afresh on each run of a pass"
    assert lines[1] == "    explain=True"
    assert all(isinstance(r, PassRecord) and not r.changed for r in records)


class _ReplaceChain(Pass):
    """Replaces every node by a new one, collecting the garbage in between (as Python may at any time)."""

    def run(self, graph: Graph) -> bool:
        x = graph.inputs[0]
        count = len(graph.nodes)
        graph.remove_nodes(list(graph.nodes))
        graph.outputs.clear()
        gc.collect()  # the removed nodes are freed; new objects may reuse their memory, and their id()
        for _ in range(count):
            x = graph.make_node("Neg", [x], name="neg").outputs[0]
        graph.outputs.append(x)
        return True


def test_record_counts_nodes_added_and_removed_even_after_garbage_collection() -> None:
    """The manager tells nodes apart by id(); it used to let removed nodes be freed during the
    pass, so new nodes could take their ids and counted as neither added nor removed."""
    chain = [node("Relu", ["x" if i == 0 else f"r{i - 1}"], [f"r{i}"]) for i in range(50)]
    graph = import_onnx(make_model(chain, {"x": [3]}, ["r49"]))
    (record,) = PassManager([_ReplaceChain()], verify_ir=True).run(graph)
    assert (record.nodes_before, record.nodes_after) == (50, 50)
    assert (record.added, record.removed) == (50, 50)
    assert record.summary().startswith("_ReplaceChain: +50 -50 nodes")


def test_registered_passes() -> None:
    reg = registered_passes()
    assert reg["FoldConstants"] is FoldConstants
    assert reg["EliminateDeadCode"] is EliminateDeadCode
    assert reg["ApplyRules"] is ApplyRules
    assert FoldConstants.min_level == 1

    @register_pass(min_level=3)
    class _Layout(Pass):
        def run(self, graph: Graph) -> bool:
            return False

    try:
        assert registered_passes()["_Layout"] is _Layout
        assert _Layout.min_level == 3
        assert repr(_Layout()) == "_Layout()"
    finally:
        from mopt.passes import manager

        manager._REGISTRY.pop("_Layout")


def test_apply_rules_reaches_a_fixpoint_within_max_rounds() -> None:
    """Identity chains vanish in one run of ApplyRules; max_rounds=1 still leaves a valid graph."""
    chain = [node("Identity", ["x" if i == 0 else f"i{i - 1}"], [f"i{i}"]) for i in range(4)]
    model = make_model([*chain, node("Relu", ["i3"], ["y"])], {"x": [3]}, ["y"])
    graph = import_onnx(model)
    rec = PassManager([ApplyRules(level=1)], verify_ir=True).run(graph)
    assert ops(graph) == {"Relu": 1}
    assert rec[0].details == ["RemoveIdentity: 4x"]
    assert ApplyRules(level=1).run(graph) is False
