"""Training whose numbers reproduce on another machine: fixed torch threads, deterministic kernels.

CPU kernels split reductions (a conv's weight gradient, a matmul) across intra-op threads, and
float addition is not associative: the same seed gives slightly different weights on a 2-core
and a 16-core machine, and after a few epochs a different accuracy. Fixing the thread count and
asking torch for deterministic algorithms removes that source (different instruction sets, e.g.
AVX2 vs AVX-512 kernels, can still round differently).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from prunekit.errors import InvalidParameterError


@contextmanager
def reproducible(threads: int | None) -> Iterator[None]:
    """Within the block: ``torch.set_num_threads(threads)`` (unless None) and deterministic algorithms.

    Ops without a deterministic implementation warn instead of failing (``warn_only``). Both
    settings are restored on exit.
    """
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InvalidParameterError(f"The 'threads' parameter of reproducible must be None or an int >= 1. "
                                    f"Got {threads!r} instead.")
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])
