from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.importance import (
    CRITERIA,
    DegenerateScoresError,
    Lamp,
    Magnitude,
    Normalized,
    RandomCriterion,
    ScoreContext,
    collect,
    get_normalizer,
    make_criterion,
    score_groups,
)


def test_lamp_matches_the_formula():
    s = torch.tensor([3.0, 1.0, 2.0])
    # power 1: ascending 1, 2, 3 -> 1/(1+2+3), 2/(2+3), 3/3
    torch.testing.assert_close(Lamp(power=1)(s), torch.tensor([1.0, 1 / 6, 2 / 5]))
    # power 2 (the paper, on magnitudes): 1/(1+4+9), 4/(4+9), 9/9
    torch.testing.assert_close(Lamp()(s), torch.tensor([1.0, 1 / 14, 4 / 13]))


def test_lamp_keeps_order_and_ties_break_by_index():
    s = torch.tensor([2.0, 2.0, 5.0, 0.5])
    out = Lamp(power=1)(s)
    torch.testing.assert_close(out, torch.tensor([2 / 9, 2 / 7, 1.0, 0.5 / 9.5]))
    assert torch.equal(torch.argsort(out, stable=True), torch.argsort(s, stable=True))


@pytest.mark.parametrize("name, expected", [
    ("none", [1.0, 2.0, 3.0]), ("mean", [0.5, 1.0, 1.5]), ("max", [1 / 3, 2 / 3, 1.0]),
    ("sum", [1 / 6, 2 / 6, 3 / 6]), ("gaussian", [-1.224745, 0.0, 1.224745]),
])
def test_normalizers(name, expected):
    torch.testing.assert_close(get_normalizer(name, "test")(torch.tensor([1.0, 2.0, 3.0])), torch.tensor(expected))


def test_unknown_normalizer_names_the_parameter():
    with pytest.raises(InvalidParameterError, match="'normalizer' parameter of X must be one of"):
        get_normalizer("softmax", "X")


def test_lamp_criterion_is_normalized_l2(two_layer, hidden_group):
    ctx = ScoreContext.from_model(two_layer)
    crit = make_criterion("lamp")
    assert isinstance(crit, Normalized)
    torch.testing.assert_close(crit(hidden_group, ctx), Lamp()(Magnitude(p=2)(hidden_group, ctx)))


def test_random_is_seeded_and_group_specific(two_layer, hidden_group):
    ctx = ScoreContext.from_model(two_layer)
    a, b = RandomCriterion(seed=3)(hidden_group, ctx), RandomCriterion(seed=3)(hidden_group, ctx)
    assert torch.equal(a, b) and a.shape == (3,)
    assert not torch.equal(a, RandomCriterion(seed=4)(hidden_group, ctx))


def test_collect_leaves_the_model_as_it_was(two_layer, calib, linear_loss):
    two_layer.train()
    two_layer.fc2.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in two_layer.state_dict().items()}
    ctx = collect(two_layer, calib, needs={"grads", "hessian", "activations", "gates", "gate_hessian"},
                  loss_fn=linear_loss)
    assert two_layer.training and not two_layer.fc2.weight.requires_grad
    assert all(p.grad is None for p in two_layer.parameters())
    assert all(torch.equal(before[k], v) for k, v in two_layer.state_dict().items())
    assert "fc2.weight" in ctx.grads  # frozen weights are scored too
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in two_layer.modules())
    assert set(ctx.gates) == {"fc1.weight:0"} and ctx.gates["fc1.weight:0"].sites == ("consumer:fc2",)


def test_collect_batches_limit_and_errors(two_layer, calib, linear_loss):
    assert collect(two_layer, calib, needs={"grads"}, loss_fn=linear_loss, batches=1).n_batches == 1
    with pytest.raises(InvalidParameterError, match="need calibration data"):
        collect(two_layer, None, needs={"grads"})
    with pytest.raises(InvalidParameterError, match="yielded no batches"):
        collect(two_layer, [], needs={"grads"})
    with pytest.raises(InvalidParameterError, match="'needs' parameter of collect"):
        collect(two_layer, calib, needs={"gradients"})
    with pytest.raises(InvalidParameterError, match="'batches' parameter"):
        collect(two_layer, calib, needs={"grads"}, batches=0)


@pytest.mark.parametrize("name", CRITERIA.names())
def test_every_criterion_gives_finite_deterministic_scores(name, two_layer, calib, linear_loss, hidden_group):
    crit = make_criterion(name)
    before = {k: v.clone() for k, v in two_layer.state_dict().items()}
    ctx = collect(two_layer, calib, needs=crit.requires, loss_fn=linear_loss, groups=[hidden_group])
    if name == "obd":  # the loss is linear in the gates: no curvature to rank by
        with pytest.raises(DegenerateScoresError, match="group 'fc1:out' the same score 0: .*second derivative"):
            score_groups([hidden_group], ctx, crit)
        return
    scores, skipped = score_groups([hidden_group], ctx, crit)
    if name == "bn_scale":  # no BatchNorm in this group
        assert set(skipped) == {"fc1:out"}
        return
    s = scores["fc1:out"]
    assert s.shape == (3,) and s.dtype == torch.float32 and torch.isfinite(s).all()
    assert torch.equal(s, score_groups([hidden_group], ctx, crit)[0]["fc1:out"])
    assert all(torch.equal(before[k], v) for k, v in two_layer.state_dict().items())


def test_score_groups_rejects_wrong_shapes(two_layer, hidden_group):
    class Bad:
        requires = frozenset({"weights"})

        def __call__(self, group, ctx):
            return torch.zeros(group.size + 1)

    with pytest.raises(InvalidParameterError, match="must give 3 finite scores"):
        score_groups([hidden_group], ScoreContext.from_model(two_layer), Bad())
    with pytest.raises(InvalidParameterError, match="'criterion' parameter"):
        make_criterion(nn.ReLU())
