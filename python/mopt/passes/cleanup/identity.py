"""Identity(x) ==> x;  Dropout(x) (inference, mask unused) ==> x;  Cast(x, to=type of x) ==> x."""

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


class RemoveNoOpCast(Rule):
    """A Cast (or CastLike) to the type x already has: exporters write one around every norm and
    mask for mixed precision (Llama's RMSNorm as torch.onnx exports it at float32: 25 of them, each
    a copy of its tensor)."""

    level = 1

    def pattern(self, p: Pat):
        return p.op(("Cast", "CastLike"), capture="cast", any_inputs=True)

    def check(self, m: Match) -> Verdict:
        node = m.root
        x = node.inputs[0] if node.inputs else None
        if x is None or x.dtype is None:
            return Verdict.no("the input's type is unknown")
        if node.op_type == "Cast":
            to = node.attr("to")
        else:
            like = node.inputs[1] if len(node.inputs) > 1 else None
            to = None if like is None or like.dtype is None else int(like.dtype)
        if to is None or int(to) != int(x.dtype):
            return Verdict.no("it changes the type")
        out = node.outputs[0]
        if out.dtype is not None and int(out.dtype) != int(x.dtype):
            return Verdict.no("its output is declared with another type")
        m.values["x"] = x
        return _keeps_output_name(m)

    def rewrite(self, m: Match, emit: Emitter) -> Value:
        return m.x


RULES = [RemoveIdentity(), RemoveDropout(), RemoveNoOpCast()]
