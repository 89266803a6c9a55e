"""Union-find over channel nodes, with per-set flags (frozen, inexact, head) and reasons.

Every channel position that flows through the traced graph is a node; ops that force two
positions to be removed together union them. A set is one prunable unit.
"""

from __future__ import annotations

import numpy as np


class ChannelSets:
    def __init__(self) -> None:
        self._parent: list[int] = []
        self.frozen: dict[int, str] = {}  # node -> reason the set may not be pruned
        self.inexact: dict[int, str] = {}  # node -> op that mixes statistics over the axis
        self.head: set[int] = set()  # nodes whose set is a whole attention head / group

    def new(self, n: int) -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._parent)

    def find(self, x: int) -> int:
        parent = self._parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            if ra < rb:
                ra, rb = rb, ra
            self._parent[ra] = rb

    def union_arrays(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            self.union(x, y)

    def union_all(self, nodes: np.ndarray) -> None:
        flat = np.asarray(nodes).ravel().tolist()
        for x in flat[1:]:
            self.union(flat[0], x)

    def freeze(self, nodes: np.ndarray, reason: str) -> None:
        for x in np.asarray(nodes).ravel().tolist():
            self.frozen.setdefault(x, reason)

    def mark_inexact(self, nodes: np.ndarray, reason: str) -> None:
        for x in np.asarray(nodes).ravel().tolist():
            self.inexact.setdefault(x, reason)

    def roots(self, nodes: np.ndarray) -> np.ndarray:
        return np.fromiter((self.find(x) for x in np.asarray(nodes).ravel().tolist()), dtype=np.int64,
                           count=np.asarray(nodes).size).reshape(np.shape(nodes))

    def root_flags(self) -> tuple[dict[int, str], dict[int, str], set[int]]:
        """Flags resolved onto set roots: frozen reasons, inexact reasons, head roots."""
        frozen = {}
        for node, reason in self.frozen.items():
            frozen.setdefault(self.find(node), reason)
        inexact = {}
        for node, reason in self.inexact.items():
            inexact.setdefault(self.find(node), reason)
        head = {self.find(n) for n in self.head}
        return frozen, inexact, head
