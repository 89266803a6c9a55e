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

Every mode zeroes the removed columns, so the block's output is already the pruned model's and
the next block is calibrated on it.
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.pruning.oneshot.blocks import linear_weight, set_linear_weight
from prunekit.pruning.oneshot.stats import InputStats

RECONSTRUCT = ("none", "bias", "least_squares")


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


def remove_inputs(layer: nn.Module, positions: torch.Tensor, stats: InputStats, mode: str, *,
                  damping: float = 0.0) -> None:
    """Remove input ``positions`` of a ``Linear``/``Conv1D`` consumer in place, compensating per ``mode``.

    ``stats`` are the consumer's inputs on the calibration tokens (with ``hessian=True`` for
    ``"least_squares"``).
    """
    positions = torch.as_tensor(positions, dtype=torch.long).unique()
    if positions.numel() == 0:
        return
    weight = linear_weight(layer).to(torch.float64)  # (out, in)
    bias = getattr(layer, "bias", None)
    if mode == "least_squares":
        weight, new_bias = _least_squares(weight, bias, positions, stats, damping)
        if bias is not None:
            with torch.no_grad():
                bias.copy_(new_bias.to(bias.dtype))
    elif mode == "bias" and bias is not None:
        mean = stats.mean().to(weight.device)[positions]
        with torch.no_grad():
            bias += (weight[:, positions] @ mean).to(bias.dtype)
    weight[:, positions] = 0.0
    set_linear_weight(layer, weight)


def _least_squares(weight: torch.Tensor, bias: torch.Tensor | None, removed: torch.Tensor, stats: InputStats,
                   damping: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W', b')``: the kept columns (and bias) refit to ``W x + b``; removed columns left as they were."""
    if stats.xtx is None:
        raise RuntimeError("least-squares reconstruction needs InputStats built with hessian=True")
    n_in = weight.shape[1]
    n = max(stats.tokens, 1)
    device = weight.device
    second = torch.empty(n_in + 1, n_in + 1, dtype=torch.float64, device=device)  # E[[x;1][x;1]^T]
    second[:n_in, :n_in] = stats.xtx.to(device) / n
    second[:n_in, n_in] = second[n_in, :n_in] = stats.sum.to(device) / n
    second[n_in, n_in] = 1.0
    full = torch.cat([weight, (bias.detach().to(torch.float64) if bias is not None
                               else torch.zeros(weight.shape[0], dtype=torch.float64, device=device))[:, None]], 1)
    keep_mask = torch.ones(n_in + 1, dtype=torch.bool, device=device)
    keep_mask[removed.to(device)] = False
    if bias is None:
        keep_mask[n_in] = False  # no bias to refit: the constant part stays lost
    kept = keep_mask.nonzero().squeeze(1)
    lost = removed.to(device)
    h_kk = second[kept][:, kept]
    if damping > 0:
        h_kk = h_kk + damping * h_kk.diagonal().mean().clamp(min=1e-12) * torch.eye(len(kept), dtype=torch.float64,
                                                                                     device=device)
    transfer = torch.linalg.lstsq(h_kk, second[kept][:, lost]).solution  # H_kk^-1 H_kr: (k, r)
    refit = full.clone()
    refit[:, kept] += full[:, lost] @ transfer.t()
    return refit[:, :n_in], (refit[:, n_in] if bias is not None else None)
