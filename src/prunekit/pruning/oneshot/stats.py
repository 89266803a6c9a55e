"""Running statistics of a linear layer's inputs, accumulated batch by batch with forward hooks.

Wanda needs the L2 norm of each input feature over all calibration tokens; SparseGPT needs the
layer-wise Hessian ``H = 2 X X^T / n`` of the reconstruction loss ``||W X - W' X||^2``. Both are
sums over tokens, so only a vector or an (in, in) matrix is held per layer, never the inputs.
"""

from __future__ import annotations

import torch
from torch import nn


class InputStats:
    """Token count, per-feature sum of squares and sum, and optionally ``sum x x^T``, of one layer's input."""

    def __init__(self, in_features: int, *, hessian: bool, device: torch.device | str = "cpu") -> None:
        self.tokens = 0
        self.sq_sum = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.sum = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.xtx = torch.zeros(in_features, in_features, dtype=torch.float64, device=device) if hessian else None

    def add(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> None:
        """Add the input rows of ``x`` (..., in); with ``tokens`` (a bool mask over ``x``'s leading
        dims, e.g. (B, T) from an attention mask) only the real tokens, not the padding."""
        if tokens is not None and tuple(x.shape[:-1]) == tuple(tokens.shape):
            x = x[tokens.to(x.device)]
        x = x.detach().reshape(-1, x.shape[-1]).float()  # (tokens, in); float32 products, float64 sums
        self.tokens += x.shape[0]
        self.sq_sum += (x * x).sum(0, dtype=torch.float64)
        self.sum += x.sum(0, dtype=torch.float64)
        if self.xtx is not None:
            self.xtx += (x.t() @ x).double()

    def norms(self) -> torch.Tensor:
        """``||X_j||_2`` over every calibration token, per input feature j."""
        return self.sq_sum.sqrt()

    def mean(self) -> torch.Tensor:
        return self.sum / max(self.tokens, 1)

    def hessian(self) -> torch.Tensor:
        """``2 X X^T / n``: the Hessian of the mean squared reconstruction error w.r.t. a weight row."""
        if self.xtx is None:
            raise RuntimeError("InputStats was built without hessian=True")
        return 2.0 * self.xtx / max(self.tokens, 1)

    def nbytes(self) -> int:
        total = self.sq_sum.numel() * 8 + self.sum.numel() * 8
        return total + (self.xtx.numel() * 8 if self.xtx is not None else 0)


class collect_inputs:
    """Context manager: hooks that feed each named layer's input into its ``InputStats``.

    Set ``tokens`` to the current batch's bool (B, T) mask of real tokens to leave padding out.
    """

    def __init__(self, layers: dict[str, nn.Module], *, hessian: bool, in_features: dict[str, int]) -> None:
        self.stats = {name: InputStats(in_features[name], hessian=hessian, device=layer.weight.device)
                      for name, layer in layers.items()}
        self._layers = layers
        self._handles: list = []
        self.tokens: torch.Tensor | None = None

    def __enter__(self) -> dict[str, InputStats]:
        for name, layer in self._layers.items():
            stats = self.stats[name]
            self._handles.append(layer.register_forward_pre_hook(lambda _m, args, s=stats: s.add(args[0], self.tokens)))
        return self.stats

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
