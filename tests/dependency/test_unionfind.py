"""The channel union-find: vectorised unions give the same sets, rooted at their smallest node."""

from __future__ import annotations

import numpy as np
import pytest

from prunekit.dependency.unionfind import ChannelSets


def _partition(labels: list[int]) -> set[frozenset[int]]:
    sets: dict[int, set[int]] = {}
    for node, label in enumerate(labels):
        sets.setdefault(label, set()).add(node)
    return {frozenset(s) for s in sets.values()}


@pytest.mark.parametrize("seed", range(6))
def test_union_arrays_matches_pairwise_unions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    fast, slow = ChannelSets(), ChannelSets()
    fast.new(n), slow.new(n)
    reference = list(range(n))  # naive labels: relabel the whole set on every union

    for _ in range(40):
        k = int(rng.integers(1, 40))
        a = rng.integers(0, n, k)
        b = rng.integers(0, n, k) if rng.random() < 0.7 else np.full(k, rng.integers(0, n))  # stars too
        fast.union_arrays(a, b)
        for x, y in zip(a.tolist(), b.tolist()):
            slow.union(x, y)
            lx, ly = reference[x], reference[y]
            reference = [lx if label == ly else label for label in reference]

    roots = fast.roots(np.arange(n)).tolist()
    assert _partition(roots) == _partition(reference)
    assert roots == [slow.find(x) for x in range(n)]
    for members in _partition(roots):
        assert {roots[m] for m in members} == {min(members)}  # the smallest node is the root


def test_union_all_and_growth() -> None:
    sets = ChannelSets()
    first = sets.new(3)
    second = sets.new(2000)  # grows the parent array past its first capacity
    assert len(sets) == 2003 and second[0] == 3
    sets.union_all(np.array([second[5], first[2], second[9]]))
    assert sets.roots(np.array([[second[5], second[9]], [first[2], first[0]]])).tolist() == [[2, 2], [2, 0]]
