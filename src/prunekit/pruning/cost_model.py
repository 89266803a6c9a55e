"""Price a pruning plan from the dependency graph alone, without building the pruned model.

A params or MACs target is met by bisection over candidate plans. Pricing each candidate by
pruning a copy and re-counting costs a deep copy plus a forward pass per step (95-130 s for a MAC
target on MiniLM on a loaded 2-core machine). Both costs are known in closed form once the
kept fraction of every tensor axis is known, and those fractions come straight from the graph:

* **params**: every parameter's element count times the kept fraction of each of its axes
  (exact: that is what surgery slices);
* **MACs**: the dense model is counted once, per module; a module owning a weight scales with
  the kept fractions of the weight's axes 0 and 1 (out x in for linear and conv, channels for
  depthwise conv), and a module without one (an attention core: QK^T and AV) with the smallest
  kept fraction of its children's output axes (the heads of query/key/value; an output
  projection whose width stays does not dilute it).

The MAC rule is exact for linear, conv and attention layers; anything else is caught by
:func:`prunekit.pruning.allocate.allocate`, which re-counts the chosen plan on a real pruned
copy and falls back to exact pricing when the two disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from prunekit.dependency.graph import DependencyGraph
from prunekit.dependency.groups import PruningPlan
from prunekit.errors import InvalidParameterError

Key = tuple[str, int]  # (tensor name, axis)


class GraphCostModel:
    """``model(plan) -> cost`` for ``target`` "params" or "macs", priced from the graph.

    Parameters
    ----------
    model, graph
        The dense model and its dependency graph (``build_graph``).
    target
        ``"params"`` or ``"macs"``.
    example_inputs
        Needed for ``"macs"``: the dense model is counted once on them.
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, *, target: str, example_inputs: Any = None) -> None:
        if target not in ("params", "macs"):
            raise InvalidParameterError(f"The 'target' parameter of GraphCostModel must be 'params' or 'macs'. "
                                        f"Got {target!r} instead.")
        self.graph = graph
        self.target = target
        self._axes: dict[str, list[Key]] = {}  # tensor name -> its sliced (tensor, axis) keys
        for tensor, axis in graph.slot_roots:
            self._axes.setdefault(tensor, []).append((tensor, axis))
        top = max((int(r.max()) for r in graph.slot_roots.values() if r.size), default=0)
        self._n_roots = top + 1
        self.terms: list[tuple[float, list[Key], str]] = []  # (dense cost, keys, 'product' or 'min')
        if target == "params":
            for name, p in model.named_parameters():
                self.terms.append((float(p.numel()), self.keys_of(name), "product"))
        else:
            self._mac_terms(model, example_inputs)
        self.dense = sum(cost for cost, _, _ in self.terms)

    def _mac_terms(self, model: nn.Module, example_inputs: Any) -> None:
        from prunekit.evaluation.complexity import count_macs

        if example_inputs is None:
            raise InvalidParameterError("GraphCostModel needs example_inputs for target 'macs': pass the model's inputs")
        report = count_macs(model, example_inputs)
        children = {name: [c for c, _ in module.named_children()] for name, module in model.named_modules()}
        for module, macs in report.per_module.items():
            weight = f"{module}.weight" if module else "weight"
            own = [k for k in self.keys_of(weight) if k[1] in (0, 1)]
            if own:
                self.terms.append((float(macs), own, "product"))
                continue
            outs = []
            for child in children.get(module, []):
                name = f"{module}.{child}.weight" if module else f"{child}.weight"
                outs += [k for k in self.keys_of(name) if k[1] == 0]
            self.terms.append((float(macs), outs, "min"))

    def keys_of(self, tensor: str) -> list[Key]:
        """The sliced axes of ``tensor``, one key per axis, found under any of its tied names."""
        by_axis: dict[int, Key] = {}
        for name in (tensor, *self.graph.aliases.get(tensor, ())):
            for key in self._axes.get(name, []):
                by_axis.setdefault(key[1], key)
        return list(by_axis.values())

    def removed_mask(self, plan: PruningPlan) -> np.ndarray:
        """Root id -> removed, for the units ``plan`` removes."""
        removed = np.zeros(self._n_roots, dtype=bool)
        for gid, units in plan.removed.items():
            if units:
                removed[self.graph.unit_roots[gid][np.asarray(units, dtype=np.int64)]] = True
        return removed

    def __call__(self, plan: PruningPlan) -> float:
        removed = self.removed_mask(plan)
        fractions: dict[Key, float] = {}

        def kept(key: Key) -> float:
            if key not in fractions:
                roots = self.graph.slot_roots[key]
                fractions[key] = 1.0 - float(removed[roots].mean()) if roots.size else 1.0
            return fractions[key]

        total = 0.0
        for cost, keys, how in self.terms:
            if not keys:
                total += cost
            elif how == "product":
                total += cost * float(np.prod([kept(k) for k in keys]))
            else:
                total += cost * min(kept(k) for k in keys)
        return total


def graph_cost(model: nn.Module, graph: DependencyGraph, target: str,
               example_inputs: Any = None) -> Callable[[PruningPlan], float]:
    """:class:`GraphCostModel` for ``target``, as the ``estimate`` callable ``allocate`` takes."""
    return GraphCostModel(model, graph, target=target, example_inputs=example_inputs)
