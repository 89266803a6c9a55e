from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError, NotFittedError
from prunekit.evaluation.complexity import count_macs, count_params
from prunekit.models.builtin import MLP, DigitsCNN
from prunekit.pruning.pruner import StructuredPruner


@pytest.fixture
def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(in_features=8, hidden=(16,), num_classes=3)


def test_local_l2_keeps_the_highest_scored_units_and_their_weights(mlp):
    w1, w2 = mlp.net[1].weight.detach(), mlp.net[3].weight.detach()
    scores = (w1.norm(dim=1) + w2.norm(dim=0)) / 2  # (16,) mean of the two slots' L2 norms
    kept = torch.sort(torch.argsort(scores, descending=True)[:8]).values
    pruner = StructuredPruner(criterion="l2", target="channels", scope="local", ratio=0.5).fit(mlp, torch.randn(1, 8))
    small = pruner.transform(mlp)
    assert small.net[1].out_features == 8 and mlp.net[1].out_features == 16
    torch.testing.assert_close(small.net[1].weight, w1[kept])
    torch.testing.assert_close(small.net[3].weight, w2[:, kept])
    torch.testing.assert_close(pruner.scores_["net.1.weight:0"], scores)
    assert pruner.record_ is not None and pruner.plan_.meta["ratio"] == 0.5


def test_fit_leaves_the_model_alone_and_inplace_transform_edits_it(mlp):
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    pruner = StructuredPruner(criterion="l2", target="channels", scope="local", ratio=0.25, round_to=None).fit(mlp, torch.randn(1, 8))
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    out = pruner.transform(mlp, inplace=True)
    assert out is mlp and mlp.net[1].out_features == 12


def test_gradient_criterion_needs_data(mlp):
    with pytest.raises(InvalidParameterError, match="pass data="):
        StructuredPruner(target="channels", scope="local", criterion="taylor").fit(mlp, torch.randn(1, 8))
    data = [(torch.randn(4, 8), torch.randint(0, 3, (4,)))]
    small = StructuredPruner(target="channels", scope="local", criterion="taylor", ratio=0.5).fit_transform(mlp, torch.randn(1, 8), data)
    assert small.net[1].out_features == 8


def test_transform_before_fit_raises(mlp):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        StructuredPruner().transform(mlp)


@pytest.mark.parametrize("params, match", [
    ({"ratio": 1.5}, "The 'ratio' parameter of StructuredPruner must be a float in \\[0, 1\\). Got 1.5 instead."),
    ({"scope": "layer"}, "'scope' parameter of StructuredPruner must be one of 'local', 'global'. Got 'layer'"),
    ({"target": "flops"}, "'target' parameter"),
    ({"round_to": 0}, "'round_to' parameter"),
    ({"min_keep": 0}, "'min_keep' parameter"),
    ({"ignore": "head"}, "'ignore' parameter"),
    ({"per_module": {"net.1": -0.1}}, "per_module\\['net.1'\\]"),
    ({"criterion": "tayler"}, "unknown criterion 'tayler' \\(did you mean 'taylor'\\?\\)"),
    ({"reduction": "median"}, "'reduction' parameter"),
    ({"normalizer": "z"}, "'normalizer' parameter"),
    ({"target": "cost"}, "'cost' parameter"),
])
def test_invalid_parameters_are_reported_at_fit(mlp, params, match):
    pruner = StructuredPruner(**params)  # constructors only store
    with pytest.raises(InvalidParameterError, match=match):
        pruner.fit(mlp, torch.randn(1, 8))


def test_mac_target_is_met_within_one_rounding_step():
    torch.manual_seed(0)
    model, x = DigitsCNN(width=16), torch.randn(1, 1, 8, 8)
    base = count_macs(model, x).total
    pruner = StructuredPruner(criterion="l2", ratio=0.4, target="macs", scope="global", round_to=4).fit(model, x)
    small = pruner.transform(model)
    achieved = 1 - count_macs(small, x).total / base
    assert achieved == pytest.approx(pruner.plan_.meta["achieved"])
    # either side of the target, by less than the cheapest 4-channel block of the 16-wide convs
    assert abs(achieved - 0.4) < 0.05
    for gid, removed in pruner.plan_.removed.items():
        size = pruner.graph_.group(gid).size
        assert (size - len(removed)) % 4 == 0


def test_params_target_and_ignore():
    torch.manual_seed(0)
    model, x = DigitsCNN(width=8), torch.randn(1, 1, 8, 8)
    pruner = StructuredPruner(criterion="l2", ratio=0.3, target="params", scope="local", ignore=("head",)).fit(model, x)
    assert "head.1.weight:0" not in pruner.plan_.removed
    reached = 1 - count_params(pruner.transform(model)) / count_params(model)
    assert reached == pytest.approx(pruner.plan_.meta["achieved"])
    assert reached >= 0.3  # local steps here are coarse (round_to 8 on every group); the nearer one is above


def test_bn_scale_skips_groups_without_batchnorm():
    torch.manual_seed(0)
    model, x = DigitsCNN(width=8), torch.randn(1, 1, 8, 8)
    with pytest.warns(UserWarning, match="left whole"):
        pruner = StructuredPruner(target="channels", scope="local", criterion="bn_scale", ratio=0.5).fit(model, x)
    assert "head.1.weight:0" in pruner.skipped_ and "head.1.weight:0" not in pruner.plan_.removed
    assert len(pruner.plan_.removed["down.0.weight:0"]) == 8


class HeadAttention(nn.Module):
    """Four heads of width 2; ``mask`` (B, heads) scales each head when given (for the reference)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (m(x).view(b, t, -1, 2).transpose(1, 2) for m in (self.q, self.k, self.v))  # (B, h, T, 2)
        y = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(2), -1) @ v  # (B, h, T, 2)
        if mask is not None:
            y = y * mask[:, :, None, None]
        return self.fc(self.o(y.transpose(1, 2).reshape(b, t, -1)).mean(1))  # (B, 3)


def test_attention_heads_are_scored_by_mask_gradient_and_pruned():
    torch.manual_seed(0)
    model, x = HeadAttention(), torch.randn(1, 5, 8)
    data = [(torch.randn(4, 5, 8), torch.randint(0, 3, (4,)))]
    pruner = StructuredPruner(target="channels", scope="local", criterion="heads", ratio=0.5, ignore=("o",)).fit(model, x, data)
    (group,) = [g for g in pruner.graph_.prunable_groups() if g.unit == "head"]
    mask = torch.ones(4, 4, requires_grad=True)
    loss = nn.functional.cross_entropy(model(data[0][0], mask), data[0][1], reduction="sum")
    expected = torch.autograd.grad(loss, mask)[0].abs().mean(0)  # (heads,) E_x |dL(x)/dmask|, Michel et al.
    torch.testing.assert_close(pruner.scores_[group.id], expected, rtol=1e-5, atol=1e-7)
    assert pruner.plan_.removed == {group.id: tuple(sorted(torch.argsort(expected)[:2].tolist()))}
    small = pruner.transform(model)
    assert small.q.out_features == 4 and small.o.in_features == 4 and small(x).shape == (1, 3)


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor", "taylor_batch", "taylor_weight", "taylor_elementwise", "gradient",
                                       "obd", "output_sensitivity", "obd_weight", "obd_weight_hutchinson", "fisher",
                                       "fisher_weight",
                                       "apoz", "activation", "random", "lamp"])
def test_every_criterion_prunes_a_residual_cnn_globally(criterion):
    torch.manual_seed(0)
    model, x = DigitsCNN(width=4), torch.randn(1, 1, 8, 8)
    data = [(torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))]
    pruner = StructuredPruner(target="channels", criterion=criterion, ratio=0.5, scope="global", normalizer="lamp", round_to=None).fit(model, x, data)
    total = sum(g.size for g in pruner.graph_.prunable_groups())
    assert pruner.plan_.n_removed == total // 2
    assert set(pruner.scores_) == {g.id for g in pruner.graph_.prunable_groups()}
    assert pruner.transform(model)(x).shape == (1, 10)
