"""What a linear consumer does when some of its input units are removed: how much of their
contribution the kept weights take over.

For ``y = W x + b`` whose inputs ``r`` are removed (their columns zeroed, later cut out):

- ``"none"``: nothing; the removed units' contribution is lost.
- ``"bias"``: their mean contribution ``W_r E[x_r]`` is folded into the bias (FLAP's bias
  compensation); exact for units that are constant over the calibration tokens.
- ``"least_squares"``: the kept columns and the bias are refit to the old outputs on the
  calibration inputs, ``min ||W x + b - W'_k x_k - b'||^2``, whose solution is
  ``W'_k = W_k + W_r H_rk H_kk^-1`` with ``H`` the uncentered second moment of ``[x; 1]`` (Kwon et
  al. 2022's layer-wise reconstruction; ZipLM). A removed unit that is a linear function of the
  kept ones (plus a constant) is then re-expressed exactly. ``damping`` adds that fraction of the
  mean diagonal of ``H_kk`` to its diagonal, so rarely active or collinear units do not blow the
  refit up on tokens outside the calibration set.
- ``"least_squares_dense"``: the same refit, but to the *dense* model's outputs on the dense
  model's inputs, ``min ||W x_dense + b - W'_k x_k - b'||^2`` with ``x`` the pruned model's inputs
  (Kwon et al. 2022 reconstruct the original layer outputs): it also takes up the drift that the
  blocks pruned before have caused in this consumer's inputs. Needs the cross moment of the pruned
  and dense inputs, collected by running the dense block beside the pruned one
  (:class:`PairedStats`). Both refits are ridge regressions centred on the current weights:
  ``W'_k = W_k + (W C_k - W_k H_kk)(H_kk + damping)^-1``, with ``C = E[[x_dense;1][x_k;1]^T]``
  (``C = H`` for ``"least_squares"``, which gives the formula above).

Every mode zeroes the removed columns, so the block's output is already the pruned model's and
the next block is calibrated on it.
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.pruning.oneshot.blocks import linear_weight, set_linear_weight
from prunekit.pruning.oneshot.stats import InputStats

RECONSTRUCT = ("none", "bias", "least_squares", "least_squares_dense")


def check_reconstruct(value: object, owner: str) -> str:
    if value not in RECONSTRUCT:
        raise InvalidParameterError(f"The 'reconstruct' parameter of {owner} must be one of "
                                    f"{', '.join(repr(m) for m in RECONSTRUCT)}. Got {value!r} instead.")
    return str(value)


def check_damping(value: object, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < float("inf"):
        raise InvalidParameterError(f"The 'damping' parameter of {owner} must be a float >= 0 (a fraction of "
                                    f"the mean diagonal of the inputs' second moment). Got {value!r} instead.")
    return float(value)


class PairedStats:
    """``sum`` and ``sum x x^T`` of a consumer's inputs in the pruned model, and the cross sum
    ``sum x_dense x^T`` with the dense model's inputs on the same tokens."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu") -> None:
        self.tokens = 0
        self.sum = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.sum_dense = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.xtx = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)
        self.cross = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)  # dense x pruned

    def add(self, x: torch.Tensor, x_dense: torch.Tensor, tokens: torch.Tensor | None = None) -> None:
        if tokens is not None and tuple(x.shape[:-1]) == tuple(tokens.shape):
            x, x_dense = x[tokens.to(x.device)], x_dense[tokens.to(x.device)]
        x = x.detach().reshape(-1, x.shape[-1]).float()  # float32 products, float64 sums (as InputStats)
        x_dense = x_dense.detach().reshape(-1, x_dense.shape[-1]).float()
        self.tokens += x.shape[0]
        self.sum += x.sum(0, dtype=torch.float64)
        self.sum_dense += x_dense.sum(0, dtype=torch.float64)
        self.xtx += (x.t() @ x).double()
        self.cross += (x_dense.t() @ x).double()

    def nbytes(self) -> int:
        return 8 * (2 * self.xtx.numel() + 2 * self.sum.numel())


def observe_pair(held, dense_held, index: int, block: nn.Module, dense_block: nn.Module, name: str) -> PairedStats:
    """Run block ``index`` of the pruned and the dense model on every held batch, pairing consumer ``name``'s inputs."""
    layer, dense_layer = block.get_submodule(name), dense_block.get_submodule(name)
    seen: dict[str, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(lambda _m, args: seen.__setitem__("pruned", args[0])),
             dense_layer.register_forward_pre_hook(lambda _m, args: seen.__setitem__("dense", args[0]))]
    stats = PairedStats(seen_features(layer), device=layer.weight.device)
    try:
        for b in range(len(held.hidden)):
            held.run(index, block, b)
            dense_held.run(index, dense_block, b)
            stats.add(seen["pruned"], seen["dense"], held.tokens[b] if b < len(held.tokens) else None)
    finally:
        for h in hooks:
            h.remove()
    return stats


def seen_features(layer: nn.Module) -> int:
    return linear_weight(layer).shape[1]


def remove_inputs(layer: nn.Module, positions: torch.Tensor, stats: InputStats | PairedStats, mode: str, *,
                  damping: float = 0.0) -> None:
    """Remove input ``positions`` of a ``Linear``/``Conv1D`` consumer in place, compensating per ``mode``.

    ``stats`` are the consumer's inputs on the calibration tokens (with ``hessian=True`` for
    ``"least_squares"``; a :class:`PairedStats` for ``"least_squares_dense"``).
    """
    positions = torch.as_tensor(positions, dtype=torch.long).unique()
    if positions.numel() == 0:
        return
    weight = linear_weight(layer).to(torch.float64)  # (out, in)
    bias = getattr(layer, "bias", None)
    if mode in ("least_squares", "least_squares_dense"):
        weight, new_bias = _least_squares(weight, bias, positions, stats, damping, dense=mode == "least_squares_dense")
        if bias is not None:
            with torch.no_grad():
                bias.copy_(new_bias.to(bias.dtype))
    elif mode == "bias" and bias is not None:
        mean = stats.mean().to(weight.device)[positions]
        with torch.no_grad():
            bias += (weight[:, positions] @ mean).to(bias.dtype)
    weight[:, positions] = 0.0
    set_linear_weight(layer, weight)


def _augmented(xx: torch.Tensor, sum_left: torch.Tensor, sum_right: torch.Tensor, n: int) -> torch.Tensor:
    """``E[[a;1][b;1]^T]`` from ``sum a b^T``, ``sum a`` and ``sum b`` over ``n`` tokens."""
    size = xx.shape[0]
    out = torch.empty(size + 1, size + 1, dtype=torch.float64, device=xx.device)
    out[:size, :size] = xx / n
    out[:size, size] = sum_left / n
    out[size, :size] = sum_right / n
    out[size, size] = 1.0
    return out


def _least_squares(weight: torch.Tensor, bias: torch.Tensor | None, removed: torch.Tensor, stats, damping: float,
                   *, dense: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W', b')``: the kept columns (and bias) refit; removed columns left as they were."""
    if getattr(stats, "xtx", None) is None:
        raise RuntimeError("least-squares reconstruction needs InputStats built with hessian=True")
    n_in = weight.shape[1]
    n = max(stats.tokens, 1)
    device = weight.device
    second = _augmented(stats.xtx.to(device), stats.sum.to(device), stats.sum.to(device), n)  # E[z z^T]
    cross = (_augmented(stats.cross.to(device), stats.sum_dense.to(device), stats.sum.to(device), n)
             if dense else second)  # E[z_dense z^T]
    full = torch.cat([weight, (bias.detach().to(torch.float64) if bias is not None
                               else torch.zeros(weight.shape[0], dtype=torch.float64, device=device))[:, None]], 1)
    keep_mask = torch.ones(n_in + 1, dtype=torch.bool, device=device)
    keep_mask[removed.to(device)] = False
    if bias is None:
        keep_mask[n_in] = False  # no bias to refit: the constant part stays lost
    kept = keep_mask.nonzero().squeeze(1)
    h_kk = second[kept][:, kept]
    residual = full @ cross[:, kept] - full[:, kept] @ h_kk  # (out, k): what the kept inputs must still explain
    if damping > 0:
        h_kk = h_kk + damping * h_kk.diagonal().mean().clamp(min=1e-12) * torch.eye(len(kept), dtype=torch.float64,
                                                                                     device=device)
    delta = torch.linalg.lstsq(h_kk, residual.t()).solution.t()  # residual @ H_kk^-1 (H_kk symmetric)
    refit = full.clone()
    refit[:, kept] += delta
    return refit[:, :n_in], (refit[:, n_in] if bias is not None else None)
