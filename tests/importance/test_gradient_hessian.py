from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.dependency.groups import ChannelGroup
from prunekit.errors import InvalidParameterError
from prunekit.importance import GradientMagnitude, WeightFisher, WeightOBD, WeightTaylor, collect, weight_scores


def _ctx(model, calib, loss, needs=("grads",)):
    return collect(model, calib, needs=needs, loss_fn=loss)


def _w(model):
    return {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}


def test_collect_averages_gradients_and_squares_over_batches(two_layer, calib, linear_loss, grads_by_hand):
    ctx = _ctx(two_layer, calib, linear_loss)
    assert ctx.n_batches == 2
    for name in ("fc1.weight", "fc1.bias", "fc2.weight"):
        mean = (grads_by_hand[0][name] + grads_by_hand[1][name]) / 2
        mean_sq = (grads_by_hand[0][name] ** 2 + grads_by_hand[1][name] ** 2) / 2
        np.testing.assert_allclose(ctx.grads[name].numpy(), mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ctx.grad_sq[name].numpy(), mean_sq, rtol=1e-6, atol=1e-7)


def test_gradient_magnitude_sums_abs_mean_gradient_per_unit(two_layer, calib, linear_loss, grads_by_hand, hidden_group):
    ctx = _ctx(two_layer, calib, linear_loss)
    g = {k: (grads_by_hand[0][k] + grads_by_hand[1][k]) / 2 for k in ("fc1.weight", "fc2.weight")}
    expected = (np.abs(g["fc1.weight"]).sum(1) + np.abs(g["fc2.weight"]).sum(0)) / 2
    np.testing.assert_allclose(GradientMagnitude()(hidden_group, ctx).numpy(), expected, rtol=1e-6)


def test_taylor_group_sums_signed_products_across_slots_then_abs(two_layer, calib, linear_loss, grads_by_hand,
                                                                 hidden_group):
    ctx = _ctx(two_layer, calib, linear_loss)
    w = _w(two_layer)
    g = {k: (grads_by_hand[0][k] + grads_by_hand[1][k]) / 2 for k in ("fc1.weight", "fc2.weight")}
    signed = (w["fc1.weight"] * g["fc1.weight"]).sum(1) + (w["fc2.weight"] * g["fc2.weight"]).sum(0)
    np.testing.assert_allclose(WeightTaylor()(hidden_group, ctx).numpy(), np.abs(signed), rtol=1e-6, atol=1e-7)
    elementwise = (np.abs(w["fc1.weight"] * g["fc1.weight"]).sum(1) + np.abs(w["fc2.weight"] * g["fc2.weight"]).sum(0)) / 2
    np.testing.assert_allclose(WeightTaylor("elementwise")(hidden_group, ctx).numpy(), elementwise, rtol=1e-6, atol=1e-7)
    with pytest.raises(InvalidParameterError, match="'variant' parameter of WeightTaylor"):
        WeightTaylor("second")(hidden_group, ctx)


def test_taylor_group_equals_gate_gradient(two_layer, calib, linear_loss, hidden_group):
    """|sum w*g| over a unit is |dL/dgate| for a gate scaling the unit's fc1 row and fc2 column."""
    x, c = calib[0]
    ctx = collect(two_layer, [calib[0]], needs={"grads"}, loss_fn=linear_loss)
    gate = torch.ones(3, requires_grad=True)
    w1 = two_layer.fc1.weight.detach() * gate[:, None]  # (3, 2)
    w2 = two_layer.fc2.weight.detach() * gate[None, :]  # (2, 3)
    y = torch.relu(x @ w1.T + two_layer.fc1.bias.detach()) @ w2.T  # (1, 2)
    (dgate,) = torch.autograd.grad(linear_loss(y, c), gate)
    torch.testing.assert_close(WeightTaylor()(hidden_group, ctx), dgate.abs())


def test_fisher_and_obd_fisher(two_layer, calib, linear_loss, grads_by_hand, hidden_group):
    ctx = _ctx(two_layer, calib, linear_loss)
    w = _w(two_layer)
    sq = {k: (grads_by_hand[0][k] ** 2 + grads_by_hand[1][k] ** 2) / 2 for k in ("fc1.weight", "fc2.weight")}
    fisher = (sq["fc1.weight"].sum(1) + sq["fc2.weight"].sum(0)) / 2
    np.testing.assert_allclose(WeightFisher()(hidden_group, ctx).numpy(), fisher, rtol=1e-6, atol=1e-7)
    obd = (0.5 * (sq["fc1.weight"] * w["fc1.weight"] ** 2).sum(1) + 0.5 * (sq["fc2.weight"] * w["fc2.weight"] ** 2).sum(0)) / 2
    np.testing.assert_allclose(WeightOBD()(hidden_group, ctx).numpy(), obd, rtol=1e-6, atol=1e-7)
    assert WeightOBD().requires == {"weights", "grads"} and WeightOBD("hutchinson").requires == {"weights", "hessian"}


def test_hutchinson_is_exact_for_a_diagonal_hessian(make_slot):
    # y = W x with W (3, 1); L = 0.5 * sum((y - t)^2)  =>  H = x^2 * I, so v * Hv = x^2 for any +-1 v
    model = nn.Linear(1, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0], [-2.0], [0.5]]))
    data = [(torch.tensor([[2.0]]), torch.zeros(1, 3)), (torch.tensor([[-3.0]]), torch.ones(1, 3))]
    loss = lambda y, t: 0.5 * ((y - t) ** 2).sum()  # noqa: E731
    ctx = collect(model, data, needs={"hessian"}, loss_fn=loss, hutchinson_samples=3, seed=1)
    torch.testing.assert_close(ctx.hessian_diag["weight"], torch.full((3, 1), (4.0 + 9.0) / 2))
    group = ChannelGroup("out", 3, (make_slot("weight", 0, [0, 1, 2], "out", ""),))
    w2 = torch.tensor([1.0, 4.0, 0.25])
    torch.testing.assert_close(WeightOBD("hutchinson")(group, ctx), 0.5 * 6.5 * w2)


def test_weight_scores_have_the_tensor_shape(two_layer, calib, linear_loss, grads_by_hand):
    ctx = collect(two_layer, calib, needs={"grads", "weights"}, loss_fn=linear_loss)
    g = (grads_by_hand[0]["fc1.weight"] + grads_by_hand[1]["fc1.weight"]) / 2
    np.testing.assert_allclose(weight_scores("taylor_weight", "fc1.weight", ctx).numpy(),
                               np.abs(_w(two_layer)["fc1.weight"] * g), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(weight_scores("l1", "fc2.weight", ctx).numpy(), np.abs(_w(two_layer)["fc2.weight"]))
    for name in ("gradient", "taylor_elementwise", "obd_weight", "fisher_weight", "random", "l2"):
        assert weight_scores(name, "fc1.weight", ctx).shape == (3, 2)
    with pytest.raises(InvalidParameterError, match="no single-weight form"):
        weight_scores("apoz", "fc1.weight", ctx)
