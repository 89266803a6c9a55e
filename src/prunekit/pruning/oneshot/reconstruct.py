"""What a linear consumer does when some of its input units are removed: how much of their
contribution the kept weights take over.

For ``y = W x + b`` whose inputs ``r`` are removed (their columns zeroed, later cut out):

- ``"none"``: nothing; the removed units' contribution is lost.
- ``"bias"``: their mean contribution ``W_r E[x_r]`` is folded into the bias (FLAP's bias
  compensation); exact for units that are constant over the calibration tokens. On BERT-like
  encoders it can be a disaster: a removed FFN channel that fires massively on one token ([CLS] in
  MiniLM's first layer, almost 60x the median contribution) moves every token by its mean.
- ``"least_squares"``: the kept columns and the bias are refit to the old outputs on the
  calibration inputs, ``min ||W x + b - W'_k x_k - b'||^2``, whose solution is
  ``W'_k = W_k + W_r H_rk H_kk^-1`` with ``H`` the uncentered second moment of ``[x; 1]`` (Kwon et
  al. 2022's layer-wise reconstruction; ZipLM). A removed unit that is a linear function of the
  kept ones (plus a constant) is then re-expressed exactly. ``damping`` adds that fraction of the
  mean diagonal of ``H_kk`` to its diagonal, so rarely active or collinear units do not blow the
  refit up on tokens outside the calibration set.
- ``weighting="relative"`` (:func:`observe_fit`) weighs each token by ``1 / ||y||^2`` in the sums
  of the refits and the bias's mean: relative errors are fitted, so such tokens no longer dominate.
- ``"least_squares_dense"``: the same refit, but to the *dense* model's outputs on the dense
  model's inputs, ``min ||W x_dense + b - W'_k x_k - b'||^2`` with ``x`` the pruned model's inputs
  (Kwon et al. 2022 reconstruct the original layer outputs): it also takes up the drift that the
  blocks pruned before have caused in this consumer's inputs. Needs the cross moment of the pruned
  and dense inputs, collected by running the dense block beside the pruned one
  (:class:`FitStats`). Both refits are ridge regressions centred on the current weights:
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


WEIGHTING = ("uniform", "relative")


def check_weighting(value: object, owner: str) -> str:
    if value not in WEIGHTING:
        raise InvalidParameterError(f"The 'weighting' parameter of {owner} must be one of "
                                    f"{', '.join(repr(m) for m in WEIGHTING)}. Got {value!r} instead.")
    return str(value)


class FitStats:
    """Weighted sums over calibration tokens for a least-squares refit: ``sum w``, ``sum w x`` and
    ``sum w x x^T`` of the consumer's inputs in the pruned model and, with ``dense``, ``sum w x_dense``
    and ``sum w x_dense x^T`` with the dense model's inputs on the same tokens."""

    def __init__(self, in_features: int, *, dense: bool, device: torch.device | str = "cpu") -> None:
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        self.tokens = 0.0  # total weight
        self.sum, self.xtx = zeros(in_features), zeros(in_features, in_features)
        self.sum_dense, self.cross = (zeros(in_features), zeros(in_features, in_features)) if dense else (None, None)

    def add(self, x: torch.Tensor, x_dense: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> None:
        """Add token rows ``x`` (tokens, in) (and their dense counterparts), each weighted by ``weight`` (tokens,)."""
        x = x.detach().float()  # float32 products, float64 sums (as InputStats)
        w = torch.ones(x.shape[0], device=x.device) if weight is None else weight.detach().float()
        self.tokens += float(w.sum(dtype=torch.float64))
        self.sum += (w @ x).double()
        self.xtx += ((x * w[:, None]).t() @ x).double()
        if self.cross is not None:
            x_dense = x_dense.detach().float()
            self.sum_dense += (w @ x_dense).double()
            self.cross += ((x_dense * w[:, None]).t() @ x).double()

    def mean(self) -> torch.Tensor:
        """The weighted mean input (what ``"bias"`` folds in)."""
        return self.sum / (self.tokens if self.tokens > 0 else 1.0)

    def nbytes(self) -> int:
        return 8 * sum(t.numel() for t in (self.sum, self.xtx, self.sum_dense, self.cross) if t is not None)


def observe_fit(held, index: int, block: nn.Module, name: str, *, weighting: str = "uniform", dense_held=None,
                dense_block: nn.Module | None = None) -> FitStats:
    """Run block ``index`` on every held batch (and the dense block beside it when ``dense_held`` is
    given), summing consumer ``name``'s inputs on the real tokens. ``weighting="relative"`` weights each
    token by ``1 / ||y||^2``, ``y`` the consumer's output before the refit (the dense one's when paired):
    the refit then fits relative errors, so a few tokens with massive outputs (BERT's [CLS] in an early
    FFN: almost 60x the median) cannot pull every other token towards their removed contribution."""
    layer = block.get_submodule(name)
    dense_layer = dense_block.get_submodule(name) if dense_block is not None else None
    seen: dict[str, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(lambda _m, args: seen.__setitem__("pruned", args[0]))]
    if dense_layer is not None:
        hooks.append(dense_layer.register_forward_pre_hook(lambda _m, args: seen.__setitem__("dense", args[0])))
    stats = FitStats(linear_weight(layer).shape[1], dense=dense_layer is not None, device=layer.weight.device)
    try:
        for b in range(len(held.hidden)):
            held.run(index, block, b)
            if dense_held is not None:
                dense_held.run(index, dense_block, b)
            tokens = held.tokens[b] if b < len(held.tokens) else None
            rows = {k: _rows(v, tokens) for k, v in seen.items()}
            weight = None
            if weighting == "relative":
                source, target = (dense_layer, rows["dense"]) if dense_layer is not None else (layer, rows["pruned"])
                weight = 1.0 / source(target).float().pow(2).sum(1).clamp(min=1e-12)
            stats.add(rows["pruned"], rows.get("dense"), weight)
    finally:
        for h in hooks:
            h.remove()
    return stats


def _rows(x: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
    """The (tokens, features) rows of a consumer input, padding left out."""
    if tokens is not None and tuple(x.shape[:-1]) == tuple(tokens.shape):
        x = x[tokens.to(x.device)]
    return x.reshape(-1, x.shape[-1])


def remove_inputs(layer: nn.Module, positions: torch.Tensor, stats: InputStats | FitStats, mode: str, *,
                  damping: float = 0.0) -> None:
    """Remove input ``positions`` of a ``Linear``/``Conv1D`` consumer in place, compensating per ``mode``.

    ``stats`` sum the consumer's inputs on the calibration tokens: an :class:`InputStats` for
    ``"bias"``, a :class:`FitStats` for the least-squares modes (paired with the dense inputs for
    ``"least_squares_dense"``).
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
    if not isinstance(stats, FitStats) or (dense and stats.cross is None):
        raise RuntimeError("least-squares reconstruction needs FitStats (built with dense=True for the dense target)")
    n_in = weight.shape[1]
    n = stats.tokens if stats.tokens > 0 else 1.0
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
