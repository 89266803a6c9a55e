"""Shape algebra for reshapes and the union-find underneath the coupling rules."""

from __future__ import annotations

import numpy as np
import pytest

from prunekit.dependency.reshape import factorize
from prunekit.dependency.unionfind import ChannelSets


@pytest.mark.parametrize("src,dst,blocks", [
    ((2, 6, 4), (2, 3, 2, 4), [([0], [0]), ([1], [1, 2]), ([2], [3])]),  # split channels into heads
    ((1, 8, 4, 4), (1, 128), [([0], []), ([], [0]), ([1, 2, 3], [1])]),  # flatten; size-1 axes stand alone
    ((2, 5, 4, 8), (2, 5, 32), [([0], [0]), ([1], [1]), ([2, 3], [2])]),  # merge heads
    ((3, 1, 4), (3, 4), [([0], [0]), ([1], []), ([2], [1])]),  # squeeze
])
def test_factorize_blocks(src, dst, blocks) -> None:
    assert factorize(src, dst) == blocks


def test_factorize_refuses_incompatible_shapes() -> None:
    with pytest.raises(ValueError, match=r"cannot factorize reshape \(2, 3\) -> \(4, 2\)"):
        factorize((2, 3), (4, 2))


def test_union_find_sets_and_flags() -> None:
    sets = ChannelSets()
    a, b = sets.new(3), sets.new(3)
    sets.union_arrays(a, b)
    sets.freeze(b[:1], "why")
    sets.mark_inexact(a[2:], "mean")
    assert sets.roots(b).tolist() == a.tolist()
    frozen, inexact, _ = sets.root_flags()
    assert frozen == {0: "why"} and inexact == {2: "mean"}
    assert len(sets) == 6 and np.array_equal(sets.roots(a), [0, 1, 2])
