"""Union-find over channel nodes, with per-set flags (frozen, inexact, head) and reasons.

Every channel position that flows through the traced graph is a node; ops that force two
positions to be removed together union them. A set is one prunable unit.
"""

from __future__ import annotations

import numpy as np


class ChannelSets:
    """The sets are kept with the smallest node as root, so roots do not depend on union order.

    Parents live in a numpy array: tracing ResNet-50 makes ~300k unions, mostly whole channel
    axes coupled at once, which :meth:`union_arrays` does with vectorised root finding instead of
    a Python loop per channel.
    """

    _VECTOR_ROUNDS = 4  # vectorised passes before the remaining pairs go one by one

    def __init__(self) -> None:
        self._parent = np.zeros(0, dtype=np.int64)
        self._size = 0
        self.frozen: dict[int, str] = {}  # node -> reason the set may not be pruned
        self.inexact: dict[int, str] = {}  # node -> op that mixes statistics over the axis
        self.head: set[int] = set()  # nodes whose set is a whole attention head / group

    def new(self, n: int) -> np.ndarray:
        start, stop = self._size, self._size + n
        if stop > len(self._parent):
            grown = np.empty(max(stop, 2 * len(self._parent), 1024), dtype=np.int64)
            grown[:start] = self._parent[:start]
            self._parent = grown
        self._parent[start:stop] = np.arange(start, stop, dtype=np.int64)
        self._size = stop
        return np.arange(start, stop, dtype=np.int64)

    def __len__(self) -> int:
        return self._size

    def find(self, x: int) -> int:
        parent = self._parent
        root = int(x)
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:  # path compression
            parent[x], x = root, int(parent[x])
        return root

    def _roots(self, nodes: np.ndarray) -> np.ndarray:
        """Roots of ``nodes`` (1-D), found by pointer jumping; the nodes are compressed onto them."""
        parent = self._parent
        roots = parent[nodes]
        while True:
            up = parent[roots]
            if np.array_equal(up, roots):
                break
            roots = up
        parent[nodes] = roots
        return roots

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            if ra < rb:
                ra, rb = rb, ra
            self._parent[ra] = rb

    def union_arrays(self, a: np.ndarray, b: np.ndarray) -> None:
        """Union ``a[i]`` with ``b[i]`` for every ``i``."""
        a = np.asarray(a, dtype=np.int64).ravel()
        b = np.asarray(b, dtype=np.int64).ravel()
        for _ in range(self._VECTOR_ROUNDS):
            ra, rb = self._roots(a), self._roots(b)
            apart = ra != rb
            if not apart.any():
                return
            # a root met twice keeps one of its new parents; the next round sees the others
            self._parent[np.maximum(ra[apart], rb[apart])] = np.minimum(ra[apart], rb[apart])
            a, b = a[apart], b[apart]
        for x, y in zip(a.tolist(), b.tolist()):
            self.union(x, y)

    def union_all(self, nodes: np.ndarray) -> None:
        flat = np.asarray(nodes, dtype=np.int64).ravel()
        if flat.size > 1:
            self.union_arrays(np.full(flat.size - 1, flat[0]), flat[1:])

    def freeze(self, nodes: np.ndarray, reason: str) -> None:
        for x in np.asarray(nodes).ravel().tolist():
            self.frozen.setdefault(x, reason)

    def mark_inexact(self, nodes: np.ndarray, reason: str) -> None:
        for x in np.asarray(nodes).ravel().tolist():
            self.inexact.setdefault(x, reason)

    def roots(self, nodes: np.ndarray) -> np.ndarray:
        flat = np.asarray(nodes, dtype=np.int64).ravel()
        return self._roots(flat).reshape(np.shape(nodes))

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
