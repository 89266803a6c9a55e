"""Least-squares reconstruction after a structured cut: exact where the removed unit is a linear
function of the kept ones, and never worse than bias compensation or none on the calibration data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.dependency.groups import PruningPlan
from prunekit.errors import InvalidParameterError
from prunekit.pruning.oneshot import prune_structured, reconstruct_plan
from prunekit.pruning.oneshot.reconstruct import FitStats, remove_inputs
from prunekit.pruning.oneshot.stats import InputStats

from ._decoders import calibration, tiny_decoder

torch.set_num_threads(1)


def _stats(x: torch.Tensor, mode: str) -> InputStats | FitStats:
    stats = InputStats(x.shape[1], hessian=False) if mode == "bias" else FitStats(x.shape[1], dense=False)
    stats.add(x)
    return stats


def _cut(layer: nn.Linear, removed: list[int], x: torch.Tensor, mode: str, damping: float = 0.0) -> torch.Tensor:
    """Outputs of a copy of ``layer`` whose ``removed`` inputs are gone, compensated per ``mode``."""
    cut = nn.Linear(layer.in_features, layer.out_features).double()
    cut.load_state_dict(layer.state_dict())
    remove_inputs(cut, torch.tensor(removed), _stats(x, mode), mode, damping=damping)
    assert torch.all(cut.weight[:, removed] == 0)
    return cut(x).detach()


def test_a_removed_unit_that_is_a_linear_function_of_kept_ones_is_reconstructed_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    kept = torch.randn(200, 3, generator=g, dtype=torch.float64)
    removed = 2.0 * kept[:, :1] - 0.5 * kept[:, 2:] + 3.0  # x_3 = 2 x_0 - 0.5 x_2 + 3
    x = torch.cat([kept, removed], 1)
    layer = nn.Linear(4, 5).double()
    with torch.no_grad():
        layer.weight.normal_(generator=g)
        layer.weight[:, 3] += 2.0  # the removed unit matters
    target = layer(x).detach()
    exact = _cut(layer, [3], x, "least_squares")
    assert torch.allclose(exact, target, atol=1e-4)  # InputStats multiplies in float32
    for mode in ("none", "bias"):
        assert (_cut(layer, [3], x, mode) - target).abs().max() > 0.5


def test_least_squares_error_is_at_most_bias_error_which_is_at_most_plain_removal() -> None:
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(12, 12, generator=g, dtype=torch.float64)
    x = torch.relu(torch.randn(300, 12, generator=g, dtype=torch.float64) @ mix + 0.3)  # correlated, non-zero mean
    layer = nn.Linear(12, 6).double()
    target = layer(x).detach()
    errors = {mode: float((_cut(layer, [1, 4, 7, 9], x, mode) - target).pow(2).mean()) for mode in
              ("least_squares", "bias", "none")}
    assert errors["least_squares"] < errors["bias"] < errors["none"]
    damped = float((_cut(layer, [1, 4, 7, 9], x, "least_squares", damping=0.01) - target).pow(2).mean())
    assert errors["least_squares"] <= damped < errors["bias"]


def test_relative_weighting_keeps_one_massive_token_from_shifting_the_others() -> None:
    """A removed unit fires massively on one token in ten (as BERT's [CLS] in an early FFN): the
    uniform refit moves every token towards that token's lost contribution; weighting tokens by
    ``1 / ||y||^2`` minimizes the relative errors instead, so they come out lower."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(400, 6, generator=g, dtype=torch.float64)
    x[:, 5] = 0.1 * x[:, 5]
    x[::10, 5] = 60.0  # the massive token
    layer = nn.Linear(6, 4).double()
    target = layer(x).detach()
    weight = 1.0 / target.pow(2).sum(1)
    relative = {}
    for weighting in ("uniform", "relative"):
        stats = FitStats(6, dense=False)
        stats.add(x, weight=weight if weighting == "relative" else None)
        cut = nn.Linear(6, 4).double()
        cut.load_state_dict(layer.state_dict())
        remove_inputs(cut, torch.tensor([5]), stats, "least_squares")
        relative[weighting] = float(((cut(x).detach() - target).pow(2).sum(1) * weight).sum())
    assert relative["relative"] < 0.5 * relative["uniform"]
    stats = FitStats(6, dense=False)
    stats.add(x, weight=weight)
    cut = nn.Linear(6, 4).double()
    cut.load_state_dict(layer.state_dict())
    remove_inputs(cut, torch.tensor([5]), stats, "bias")  # the weighted mean, massive tokens down-weighted
    shift = layer.weight[:, 5].detach() * float((x[:, 5] * weight).sum() / weight.sum())
    assert torch.allclose(cut.bias, layer.bias + shift, atol=1e-6)


def block0_ffn_outputs(model: nn.Module, kind: str, batches: list) -> torch.Tensor:
    """Block 0's FFN output projection over every calibration batch (tokens, hidden)."""
    name = "model.layers.0.mlp.down_proj" if kind == "llama" else "transformer.h.0.mlp.c_proj"
    seen: list[torch.Tensor] = []
    hook = model.get_submodule(name).register_forward_hook(lambda _m, _a, out: seen.append(out.detach()))
    with torch.no_grad():
        for b in batches:
            model(b)
    hook.remove()
    return torch.cat(seen)


@pytest.mark.transformers
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_in_a_decoder_block_0_ffn_output_error_orders_the_modes(kind: str) -> None:
    pytest.importorskip("transformers")
    dense = tiny_decoder(kind, layers=2)
    batches = calibration()
    target = block0_ffn_outputs(dense, kind, batches)
    errors, plans = {}, {}
    for mode in ("least_squares", "bias", "none"):
        small, result = prune_structured(dense, batches, channel_ratio=0.5, reconstruct=mode, damping=0.0)
        errors[mode] = float((block0_ffn_outputs(small, kind, batches) - target).pow(2).mean())
        plans[mode] = {g: u for g, u in result.plan.removed.items() if ".0." in g}  # block 0: same inputs, same plan
    assert plans["least_squares"] == plans["bias"] == plans["none"] != {}
    assert errors["least_squares"] < errors["bias"] <= errors["none"]  # LLaMA's down_proj has no bias: equal
    assert (errors["bias"] < errors["none"]) == (kind == "gpt2")


@pytest.mark.transformers
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_refitting_to_the_dense_outputs_takes_up_the_drift_of_the_heads_cut_before(kind: str) -> None:
    """Block 0 with heads and channels cut: the attention output projection sees the same inputs in
    both modes (same refit), so the FFN output projection sees the same drifted inputs in both;
    fitted to the dense outputs it must land closer to them than fitted to its own outputs."""
    pytest.importorskip("transformers")
    dense = tiny_decoder(kind, layers=2)
    batches = calibration()
    target = block0_ffn_outputs(dense, kind, batches)
    errors = {}
    for mode in ("least_squares", "least_squares_dense"):
        small, _ = prune_structured(dense, batches, channel_ratio=0.25, head_ratio=0.5, reconstruct=mode, damping=0.0)
        errors[mode] = float((block0_ffn_outputs(small, kind, batches) - target).pow(2).mean())
    assert errors["least_squares_dense"] < errors["least_squares"]
    weighted, _ = prune_structured(dense, batches, channel_ratio=0.25, head_ratio=0.5, reconstruct="least_squares_dense",
                                   weighting="relative")
    assert torch.isfinite(block0_ffn_outputs(weighted, kind, batches)).all()


@pytest.mark.transformers
def test_a_given_plan_is_applied_as_given_and_refit() -> None:
    pytest.importorskip("transformers")
    dense = tiny_decoder("llama", layers=2)
    batches = calibration()
    _, scored = prune_structured(dense, batches, channel_ratio=0.25, head_ratio=0.5)
    chosen = {gid: tuple(range(len(units))) for gid, units in scored.plan.removed.items()}  # not Wanda's choice
    small, result = reconstruct_plan(dense, PruningPlan(chosen, {"criterion": "first units"}), batches)
    assert result.plan.removed == chosen
    assert result.plan.meta == {"criterion": "first units", "reconstruct": "least_squares", "damping": 0.01,
                                "weighting": "uniform"}
    assert small.model.layers[0].mlp.down_proj.in_features == 48 - 12
    plain, _ = reconstruct_plan(dense, PruningPlan(chosen), batches, reconstruct="none")
    with torch.no_grad():
        ref = torch.cat([dense(b).logits for b in batches])
        err_ls = (torch.cat([small(b).logits for b in batches]) - ref).pow(2).mean()
        err_none = (torch.cat([plain(b).logits for b in batches]) - ref).pow(2).mean()
    assert err_ls < err_none


def test_bad_reconstruct_damping_and_plan_are_one_line_errors() -> None:
    pytest.importorskip("transformers")
    model, batches = tiny_decoder("llama"), calibration()
    with pytest.raises(InvalidParameterError, match=r"'reconstruct' parameter of prune_structured must be one of "
                                                    r"'none', 'bias', 'least_squares', 'least_squares_dense'\. Got 'ls'"):
        prune_structured(model, batches, channel_ratio=0.3, reconstruct="ls")
    with pytest.raises(InvalidParameterError, match=r"'weighting' parameter of prune_structured must be one of "
                                                    r"'uniform', 'relative'\. Got 'norm'"):
        prune_structured(model, batches, channel_ratio=0.3, reconstruct="least_squares", weighting="norm")
    with pytest.raises(InvalidParameterError, match=r"'damping' parameter of prune_structured .* Got -1"):
        prune_structured(model, batches, channel_ratio=0.3, damping=-1)
    with pytest.raises(InvalidParameterError, match=r"removes units of group 'nope'"):
        reconstruct_plan(model, PruningPlan({"nope": (0,)}), batches)
    _, scored = prune_structured(model, batches, channel_ratio=0.25)
    gid = next(iter(scored.plan.removed))
    with pytest.raises(InvalidParameterError, match=rf"group '{gid}', which has 48 units"):
        reconstruct_plan(model, PruningPlan({gid: (0, 48)}), batches)
