"""Remove nodes whose outputs reach no graph output, and constants nobody reads."""

from __future__ import annotations

from mopt.ir.graph import Graph
from mopt.passes.manager import Pass, register_pass


@register_pass(min_level=1)
class EliminateDeadCode(Pass):
    """Remove nodes whose outputs reach no graph output."""

    def run(self, graph: Graph) -> bool:
        live = graph.nodes_reaching_outputs()
        dead = [node for node in graph.nodes if id(node) not in live]
        graph.remove_nodes(dead)
        before = len(graph.constants)
        graph.prune_constants()
        return bool(dead) or len(graph.constants) != before
