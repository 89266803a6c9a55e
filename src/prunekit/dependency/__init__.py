"""Channel coupling: which slices of which tensors must be removed together."""

from prunekit.dependency.rules.common import register_elementwise
from prunekit.dependency.graph import DependencyGraph, build_graph
from prunekit.dependency.groups import ChannelGroup, PruningPlan, Slot

__all__ = ["ChannelGroup", "DependencyGraph", "PruningPlan", "Slot", "build_graph", "register_elementwise"]
