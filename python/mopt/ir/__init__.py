"""mopt's graph IR."""

from mopt.ir.dtypes import DType
from mopt.ir.graph import Attr, Graph, Node, Value
from mopt.ir.printer import format_graph
from mopt.ir.verify import IRError, verify

__all__ = ["Attr", "DType", "Graph", "IRError", "Node", "Value", "format_graph", "verify"]
