"""Identity(x) ==> x;  Dropout(x) (inference, mask unused) ==> x."""

from __future__ import annotations

from mopt.ir.graph import Value
from mopt.passes.pattern import Emitter, Match, Pat, Rule, Verdict


def _keeps_output_name(m: Match) -> Verdict:
    out = m.root.outputs[0]
    x = m.value("x")
    if out.is_graph_output and (x.is_graph_input or x.is_const or x.is_graph_output):
        return Verdict.no("it gives a graph output its name")
    return Verdict.yes()


class RemoveIdentity(Rule):
    level = 1

    def pattern(self, p: Pat):
        return p.Identity(p.any("x"))

    def check(self, m: Match) -> Verdict:
        return _keeps_output_name(m)

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        return m.x


class RemoveDropout(Rule):
    level = 1

    def pattern(self, p: Pat):
        return p.op("Dropout", capture="drop", any_inputs=True)

    def check(self, m: Match) -> Verdict:
        node = m.root
        if len(node.outputs) > 1 and (node.outputs[1].uses or node.outputs[1].is_graph_output):
            return Verdict.no("its mask output is used")
        training = node.inputs[2] if len(node.inputs) > 2 else None
        if training is not None and (not training.is_const or bool(training.const)):
            return Verdict.no("training_mode may be true")
        if node.inputs[0] is None:
            return Verdict.no("no data input")
        m.values["x"] = node.inputs[0]
        return _keeps_output_name(m)

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        return m.x


RULES = [RemoveIdentity(), RemoveDropout()]
