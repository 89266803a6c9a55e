from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError, PrunekitWarning
from prunekit.pruning.masking import (
    apply_masks,
    check_nm,
    make_permanent,
    nm_incompatible,
    nm_masks,
    sparsity_report,
    unstructured_masks,
)


class ConvNet(nn.Module):
    """Conv (8 -> 8 channels, so 2:4 and 4:8 fit the input axis) then two linears."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(8, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 8, 4, 4)
        x = torch.relu(self.stem(x))  # (B, 8, 4, 4)
        x = torch.relu(self.fc1(x.flatten(1)))  # (B, 16)
        return self.fc2(x)  # (B, 3)


def _model() -> ConvNet:
    torch.manual_seed(0)
    return ConvNet()


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {"stem.weight": model.stem.weight, "fc1.weight": model.fc1.weight, "fc2.weight": model.fc2.weight}


def test_global_masks_drop_exactly_the_lowest_magnitudes():
    model = _model()
    masks = unstructured_masks(model, sparsity=0.6)
    weights = _weights(model)
    assert set(masks) == set(weights)
    total = sum(w.numel() for w in weights.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(0.6 * total)
    dropped = torch.cat([weights[k].detach().abs()[~masks[k]] for k in masks])
    kept = torch.cat([weights[k].detach().abs()[masks[k]] for k in masks])
    assert dropped.max() <= kept.min()


def test_local_masks_hit_the_sparsity_in_every_layer():
    model = _model()
    masks = unstructured_masks(model, sparsity=0.3, scope="local")
    for key, w in _weights(model).items():
        assert int((~masks[key]).sum()) == round(0.3 * w.numel())
        assert w.detach().abs()[~masks[key]].max() <= w.detach().abs()[masks[key]].min()


def test_ties_are_broken_by_position_deterministically():
    lin = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        lin[0].weight.fill_(1.0)
    first = unstructured_masks(lin, sparsity=0.5)["0.weight"]
    again = unstructured_masks(lin, sparsity=0.5)["0.weight"]
    expected = torch.tensor([[False, False, False, False], [True, True, True, True]])
    assert torch.equal(first, expected) and torch.equal(again, expected)


def test_custom_scores_mapping_and_callable_drive_the_choice():
    model = _model()
    neg = {k: -w.detach().abs() for k, w in _weights(model).items()}  # prefer small weights
    from_map = unstructured_masks(model, sparsity=0.5, scores=neg)
    from_fn = unstructured_masks(model, sparsity=0.5, scores=lambda name: neg[name])
    w = model.fc1.weight.detach().abs()
    assert torch.equal(from_map["fc1.weight"], from_fn["fc1.weight"])
    assert w[from_map["fc1.weight"]].max() <= w[~from_map["fc1.weight"]].min()


def test_bad_parameters_are_rejected_with_their_name():
    model = _model()
    with pytest.raises(InvalidParameterError, match="'sparsity'.*Got 1.0"):
        unstructured_masks(model, sparsity=1.0)
    with pytest.raises(InvalidParameterError, match="'scope'.*'layer'"):
        unstructured_masks(model, sparsity=0.5, scope="layer")
    with pytest.raises(InvalidParameterError, match="'ignore'.*'fc9'"):
        unstructured_masks(model, sparsity=0.5, ignore=("fc9",))
    with pytest.raises(InvalidParameterError, match="stem.weight.*shape \\(8, 8, 3, 3\\)"):
        unstructured_masks(model, sparsity=0.5, scores={k: torch.ones(3) for k in _weights(model)})


def test_ignore_leaves_layers_dense():
    model = _model()
    masks = unstructured_masks(model, sparsity=0.5, ignore=("fc2",))
    assert set(masks) == {"stem.weight", "fc1.weight"}


def test_masks_stay_exact_through_sgd_with_momentum_and_weight_decay():
    model = _model()
    masks = unstructured_masks(model, sparsity=0.7)
    apply_masks(model, masks)
    before = sparsity_report(model)["global"]
    assert before["zeros"] == round(0.7 * before["total"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 8, 4, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        assert torch.all(model.fc1.weight_orig.grad[~masks["fc1.weight"]] == 0)
        opt.step()
    model(x)  # the pre-hook recomputes weight = orig * mask
    for key, w in _weights(model).items():
        assert torch.all(w[~masks[key]] == 0)
        assert torch.all(w[masks[key]] != 0)
    assert sparsity_report(model)["global"] == before
    out = model(x)
    make_permanent(model)
    state = model.state_dict()
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    assert torch.equal(model(x), out)
    assert sparsity_report(model)["global"] == before


def test_remasking_grows_masks_and_never_revives_weights():
    model = _model()
    first = unstructured_masks(model, sparsity=0.4)
    apply_masks(model, first)
    # scores that would love to keep exactly the weights already pruned
    revive = {k: (~m).float() for k, m in first.items()}
    second = unstructured_masks(model, sparsity=0.6, scores=revive)
    for key in first:
        assert torch.all(~second[key][~first[key]])
    apply_masks(model, second)
    rep = sparsity_report(model)["global"]
    assert rep["zeros"] == round(0.6 * rep["total"])
    with pytest.raises(InvalidParameterError, match="already masked"):
        unstructured_masks(model, sparsity=0.2)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_masks_are_valid_on_conv_and_linear(n, m):
    model = _model()
    masks = nm_masks(model, n=n, m=m, ignore=("fc2",))
    apply_masks(model, masks)
    for key in ("stem.weight", "fc1.weight"):
        w = _weights(model)[key]
        assert check_nm(w, n, m)
        assert int((w == 0).sum()) == w.numel() * (m - n) // m  # random weights: exactly m-n zeros per group
    # the conv groups run along in_channels: regrouping along the kernel width breaks the pattern
    conv = model.stem.weight.detach()
    assert not check_nm(conv.permute(0, 3, 2, 1), n, m)


def test_nm_keeps_the_largest_in_each_linear_group():
    lin = nn.Sequential(nn.Linear(8, 1, bias=False))
    with torch.no_grad():
        lin[0].weight.copy_(torch.tensor([[0.1, -0.9, 0.5, 0.2, 3.0, -2.0, 0.0, 1.0]]))
    mask = nm_masks(lin, n=2, m=4)["0.weight"]
    assert mask.tolist() == [[False, True, True, False, True, True, False, False]]


def test_check_nm_counts_nonzeros_per_group():
    assert check_nm(torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, 4.0]]), 2, 4)
    assert not check_nm(torch.tensor([[1.0, 2.0, 3.0, 0.0]]), 2, 4)
    assert not check_nm(torch.zeros(2, 6), 2, 4)  # input dim not a multiple of m
    with pytest.raises(InvalidParameterError, match="'n'.*below m=4"):
        check_nm(torch.zeros(2, 4), 4, 4)


def test_nm_skips_indivisible_layers_with_a_reason():
    model = nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 2))
    assert nm_incompatible(model, m=4) == {"1.weight": "input dim 6 is not a multiple of m=4"}
    with pytest.warns(PrunekitWarning, match="1.weight.*input dim 6"):
        masks = nm_masks(model, n=2, m=4)
    assert set(masks) == {"0.weight"}
    with pytest.raises(InvalidParameterError, match="'1.weight'.*2:4"):
        nm_masks(model, n=2, m=4, on_indivisible="error")


def test_sparsity_report_counts_by_hand():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 2.0]]))
        model[1].weight.copy_(torch.tensor([[3.0, 0.0]]))
    rep = sparsity_report(model)
    assert rep["layers"]["0.weight"] == {"zeros": 2, "total": 4, "sparsity": 0.5}
    assert rep["layers"]["1.weight"] == {"zeros": 1, "total": 2, "sparsity": 0.5}
    assert rep["global"] == {"zeros": 3, "total": 6, "sparsity": 0.5}


def test_apply_masks_rejects_unknown_names_and_shapes():
    model = _model()
    with pytest.raises(InvalidParameterError, match="'fc7.weight'"):
        apply_masks(model, {"fc7.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(InvalidParameterError, match="'fc2.weight'.*shape \\(3, 16\\)"):
        apply_masks(model, {"fc2.weight": torch.ones(3, 3, dtype=torch.bool)})
