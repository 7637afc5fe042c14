"""Rewrite rules as patterns: what to match, what must hold, what to emit.

    class FoldBatchNormIntoConv(Rule):
        def pattern(self, p):
            conv = p.Conv(p.any("x"), p.const("w"), p.optional_const("b"), capture="conv")
            return p.BatchNormalization(conv, *p.consts("gamma", "beta", "mean", "var"))

        def check(self, m):
            return m.has_single_use("conv") or Verdict.no("Conv output feeds other nodes")

        def rewrite(self, m, emit):
            ...
            return emit.Conv(m.x, w, b, **m.attrs("conv"))

A pattern is rooted at its last node; `ApplyRules` tries every rule of its level at every node,
replaces the root's output with what `rewrite` returns, and drops nodes left without users.
A failed check returns a reason, which `mopt compile --explain` shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mopt.ir.graph import Graph, Node, Value
from mopt.passes.manager import Pass, register_pass


# -- patterns ----------------------------------------------------------------------------------
class _Pattern:
    pass


@dataclass
class AnyPat(_Pattern):
    name: str | None


@dataclass
class ConstPat(_Pattern):
    name: str
    optional: bool = False


@dataclass
class OpPat(_Pattern):
    ops: tuple[str, ...]
    inputs: list[_Pattern]
    domain: str | tuple[str, ...] = ""
    capture: str | None = None
    commutative: bool = False
    any_inputs: bool = False  # match whatever inputs the node has (inputs list ignored)
    extra_inputs: bool = False  # the listed inputs match the first ones; more may follow


class Pat:
    """Builds patterns: `p.Conv(...)`, `p.op(("Conv", "FusedConv"), ...)`, `p.any("x")`, `p.const("w")`."""

    def any(self, name: str | None = None) -> AnyPat:
        return AnyPat(name)

    def const(self, name: str) -> ConstPat:
        return ConstPat(name)

    def optional_const(self, name: str) -> ConstPat:
        return ConstPat(name, optional=True)

    def consts(self, *names: str) -> list[ConstPat]:
        return [ConstPat(n) for n in names]

    def op(
        self,
        ops: str | Sequence[str],
        *inputs: _Pattern,
        domain: str | tuple[str, ...] = "",
        capture: str | None = None,
        commutative: bool = False,
        any_inputs: bool = False,
        extra_inputs: bool = False,
    ) -> OpPat:
        names = (ops,) if isinstance(ops, str) else tuple(ops)
        return OpPat(names, list(inputs), domain, capture, commutative, any_inputs, extra_inputs)

    def __getattr__(self, op_type: str):
        if op_type.startswith("_"):
            raise AttributeError(op_type)

        def make(*inputs: _Pattern, **kw: Any) -> OpPat:
            return self.op(op_type, *inputs, **kw)

        return make


# -- matches -----------------------------------------------------------------------------------
class Verdict:
    """The result of a rule's check: truthy when the rewrite may go ahead, with a reason when not."""

    def __init__(self, ok: bool, reason: str = "") -> None:
        self.ok = ok
        self.reason = reason

    @staticmethod
    def no(reason: str) -> Verdict:
        return Verdict(False, reason)

    @staticmethod
    def yes() -> Verdict:
        return Verdict(True)

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class Match:
    root: Node
    values: dict[str, Value] = field(default_factory=dict)
    arrays: dict[str, np.ndarray | None] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    matched: list[Node] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        arrays = self.__dict__.get("arrays", {})
        values = self.__dict__.get("values", {})
        if name in arrays:
            return arrays[name]
        if name in values:
            return values[name]
        raise AttributeError(f"the pattern binds no '{name}'")

    def value(self, name: str) -> Value:
        return self.values[name]

    def node(self, capture: str) -> Node:
        return self.nodes[capture]

    def attr(self, name: str, default: Any = None, capture: str | None = None) -> Any:
        node = self.nodes[capture] if capture else self.root
        return node.attr(name, default)

    def attrs(self, capture: str) -> dict[str, Any]:
        """A captured node's attributes as keyword arguments for the emitter."""
        return {k: a for k, a in self.nodes[capture].attrs.items()}

    def has_single_use(self, capture: str) -> bool:
        """The captured node's outputs are read once, by the pattern, and are no graph output."""
        n = self.nodes[capture]
        for v in n.outputs:
            if v.is_graph_output:
                return False
        out0 = n.outputs[0]
        return len(out0.uses) == 1 and all(not v.uses for v in n.outputs[1:])


def _match(p: _Pattern, v: Value | None, m: Match) -> bool:
    if isinstance(p, AnyPat):
        if v is None:
            return False
        if p.name:
            if p.name in m.values and m.values[p.name] is not v:
                return False
            m.values[p.name] = v
        return True
    if isinstance(p, ConstPat):
        if v is None:
            if p.optional:
                m.arrays[p.name] = None
                return True
            return False
        if not v.is_const:
            return False
        m.values[p.name] = v
        m.arrays[p.name] = v.const
        return True
    assert isinstance(p, OpPat)
    if v is None or v.producer is None or v.graph is not m.root.graph:
        return False
    return _match_node(p, v.producer, m, output_index=v.index)


def _match_node(p: OpPat, node: Node, m: Match, output_index: int = 0) -> bool:
    domains = (p.domain,) if isinstance(p.domain, str) else p.domain
    if node.op_type not in p.ops or node.domain not in domains or output_index != 0:
        return False
    if p.any_inputs:
        ok = True
    else:
        n_pat = len(p.inputs)
        extra = [x for x in node.inputs[n_pat:] if x is not None]
        if extra and not p.extra_inputs:
            return False
        orders = [list(range(n_pat))]
        if p.commutative and n_pat == 2:
            orders.append([1, 0])
        ok = False
        for order in orders:
            trial = Match(m.root, dict(m.values), dict(m.arrays), dict(m.nodes), list(m.matched))
            good = True
            for pi, ni in enumerate(order):
                x = node.inputs[ni] if ni < len(node.inputs) else None
                if not _match(p.inputs[pi], x, trial):
                    good = False
                    break
            if good:
                m.values, m.arrays, m.nodes, m.matched = trial.values, trial.arrays, trial.nodes, trial.matched
                ok = True
                break
    if not ok:
        return False
    if p.capture:
        m.nodes[p.capture] = node
    m.matched.append(node)
    return True


def match(p: OpPat, node: Node) -> Match | None:
    m = Match(node)
    return m if _match_node(p, node, m) else None


# -- emitting ----------------------------------------------------------------------------------
class Emitter:
    """Creates nodes just before the root of a match: `emit.Conv(x, w, b, strides=[1, 1])`.

    Inputs may be Values, numpy arrays (become constants) or None. Attributes may be plain
    Python values or Attr objects (as returned by Match.attrs).
    """

    def __init__(self, graph: Graph, before: Node, hint: str) -> None:
        self.graph = graph
        self.before = before
        self.hint = hint
        self.created: list[Node] = []

    def const(self, array: np.ndarray, hint: str = "c") -> Value:
        return self.graph.add_const(np.asarray(array), f"{self.hint}_{hint}")

    def op(
        self,
        op_type: str,
        inputs: Sequence[Value | np.ndarray | None],
        attrs: dict[str, Any] | None = None,
        *,
        domain: str = "",
        num_outputs: int = 1,
    ) -> list[Value]:
        ins: list[Value | None] = []
        for i, x in enumerate(inputs):
            if x is None or isinstance(x, Value):
                ins.append(x)
            else:
                ins.append(self.const(np.asarray(x), f"{op_type.lower()}_in{i}"))
        while ins and ins[-1] is None:
            ins.pop()
        node = self.graph.make_node(op_type, ins, attrs, num_outputs=num_outputs, domain=domain, name=self.hint, before=self.before)
        self.created.append(node)
        return node.outputs

    def __getattr__(self, op_type: str):
        if op_type.startswith("_"):
            raise AttributeError(op_type)

        def make(*inputs: Value | np.ndarray | None, domain: str = "", **attrs: Any) -> Value:
            return self.op(op_type, inputs, attrs, domain=domain)[0]

        return make


class Rule:
    """A rewrite rule. Subclasses implement pattern(), optionally check(), and rewrite()."""

    level = 1

    @property
    def name(self) -> str:
        return type(self).__name__

    def pattern(self, p: Pat) -> OpPat:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, m: Match) -> Verdict | bool:
        return True

    def rewrite(self, m: Match, emit: Emitter) -> Value | Sequence[Value]:  # pragma: no cover - abstract
        raise NotImplementedError

    def compiled(self) -> OpPat:
        cached = self.__dict__.get("_compiled")
        if cached is None:
            cached = self.pattern(Pat())
            self.__dict__["_compiled"] = cached
        return cached


def _drop_dead(graph: Graph, nodes: Sequence[Node]) -> None:
    """Removes matched nodes whose outputs nobody reads any more (consumers first)."""
    changed = True
    alive = list(nodes)
    while changed:
        changed = False
        for n in list(alive):
            if all(not v.uses and not v.is_graph_output for v in n.outputs):
                graph.remove_node(n)
                alive.remove(n)
                changed = True


def apply_rule(rule: Rule, node: Node, explain: list[str] | None = None) -> bool:
    """Tries one rule at one node; returns True when it rewrote the graph."""
    m = match(rule.compiled(), node)
    if m is None:
        return False
    verdict = rule.check(m)
    if not verdict:
        if explain is not None:
            reason = verdict.reason if isinstance(verdict, Verdict) else "check failed"
            explain.append(f"{rule.name} at '{node.name}': not applied: {reason}")
        return False
    graph = node.graph
    emit = Emitter(graph, node, node.name)
    result = rule.rewrite(m, emit)
    new_values = [result] if isinstance(result, Value) else list(result)
    for old, new in zip(node.outputs, new_values, strict=False):
        if new.dtype is None:
            new.dtype = old.dtype
        if new.shape is None:
            new.shape = old.shape
        graph.replace_all_uses(old, new)
    _drop_dead(graph, list(reversed(m.matched)))
    if explain is not None:
        explain.append(f"{rule.name} at '{node.name}'")
    return True


@register_pass(min_level=1)
class ApplyRules(Pass):
    """Applies the rule catalogue (passes/fusion, passes/cleanup) up to a level, to a fixpoint."""

    def __init__(self, level: int = 1, rules: Sequence[Rule] | None = None, max_rounds: int = 8) -> None:
        super().__init__()
        self.level = level
        self._rules = rules
        self.max_rounds = max_rounds
        self.explain = False

    @property
    def name(self) -> str:
        return f"ApplyRules(level={self.level})"

    def rules(self) -> list[Rule]:
        if self._rules is not None:
            return list(self._rules)
        from mopt.passes.catalogue import ALL_RULES

        return [r for r in ALL_RULES if r.level <= self.level]

    def run(self, graph: Graph) -> bool:
        rules = self.rules()
        changed_any = False
        log: list[str] = []
        counts: dict[str, int] = {}
        for _ in range(self.max_rounds):
            changed = False
            for node in list(graph.nodes):
                if not any(n is node for n in graph.nodes):
                    continue  # removed by an earlier rewrite in this round
                for rule in rules:
                    trace: list[str] = []
                    if apply_rule(rule, node, trace if self.explain else None):
                        counts[rule.name] = counts.get(rule.name, 0) + 1
                        changed = True
                        log.extend(trace)
                        break
                    log.extend(trace)
            changed_any |= changed
            if not changed:
                break
        for name, c in counts.items():
            self.note(f"{name}: {c}x")
        if self.explain:
            for line in log:
                self.note(line)
        return changed_any
