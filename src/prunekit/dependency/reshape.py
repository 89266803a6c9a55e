"""Shape algebra for reshapes: which input axes become which output axes."""

from __future__ import annotations

from collections.abc import Sequence


def factorize(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """Split a reshape into minimal blocks of input axes and output axes with equal products.

    Size-1 axes standing alone form their own block with nothing on the other side.

    >>> factorize((2, 6, 4), (2, 3, 2, 4))
    [([0], [0]), ([1], [1, 2]), ([2], [3])]
    """
    blocks: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(in_shape) or j < len(out_shape):
        if i < len(in_shape) and in_shape[i] == 1:
            blocks.append(([i], []))
            i += 1
            continue
        if j < len(out_shape) and out_shape[j] == 1:
            blocks.append(([], [j]))
            j += 1
            continue
        if i >= len(in_shape) or j >= len(out_shape):
            raise ValueError(f"cannot factorize reshape {tuple(in_shape)} -> {tuple(out_shape)}")
        ins, outs = [i], [j]
        prod_in, prod_out = in_shape[i], out_shape[j]
        i, j = i + 1, j + 1
        while prod_in != prod_out:
            if prod_in < prod_out:
                if i >= len(in_shape):
                    raise ValueError(f"cannot factorize reshape {tuple(in_shape)} -> {tuple(out_shape)}")
                ins.append(i)
                prod_in *= in_shape[i]
                i += 1
            else:
                if j >= len(out_shape):
                    raise ValueError(f"cannot factorize reshape {tuple(in_shape)} -> {tuple(out_shape)}")
                outs.append(j)
                prod_out *= out_shape[j]
                j += 1
        blocks.append((ins, outs))
    return blocks
