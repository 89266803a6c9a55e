from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunekit.dependency.groups import ChannelGroup
from prunekit.errors import InvalidParameterError
from prunekit.importance import BNScale, Magnitude, ScoreContext, UnscorableGroupError, make_criterion


def test_l1_is_mean_over_slots_of_per_unit_abs_sums(two_layer, hidden_group):
    ctx = ScoreContext.from_model(two_layer)
    scores = Magnitude(p=1)(hidden_group, ctx)
    # fc1 rows: |1|+|-2|, |.5|+|.5|, |-3|+|1| ; fc2 columns: |1|+|-1|, |0|+|1|, |2|+|0| ; bias excluded
    expected = torch.tensor([(3 + 2) / 2, (1 + 1) / 2, (4 + 2) / 2])
    torch.testing.assert_close(scores, expected)


def test_l2_takes_root_of_squares_per_slot(two_layer, hidden_group):
    ctx = ScoreContext.from_model(two_layer)
    scores = Magnitude(p=2)(hidden_group, ctx)
    expected = torch.tensor([
        (math.sqrt(5) + math.sqrt(2)) / 2, (math.sqrt(0.5) + 1) / 2, (math.sqrt(10) + 2) / 2,
    ])
    torch.testing.assert_close(scores, expected)


@pytest.mark.parametrize("reduction, expected", [
    ("sum", [5.0, 2.0, 6.0]), ("max", [3.0, 1.0, 4.0]), ("first", [3.0, 1.0, 4.0]),
])
def test_reductions_across_slots(two_layer, hidden_group, reduction, expected):
    scores = Magnitude(p=1, reduction=reduction)(hidden_group, ScoreContext.from_model(two_layer))
    torch.testing.assert_close(scores, torch.tensor(expected))


def test_include_bias_and_roles(two_layer, hidden_group):
    ctx = ScoreContext.from_model(two_layer)
    with_bias = Magnitude(p=1, reduction="sum", include_bias=True)(hidden_group, ctx)
    torch.testing.assert_close(with_bias, torch.tensor([5.1, 2.2, 6.3]))
    out_only = Magnitude(p=1, roles=("out",))(hidden_group, ctx)
    torch.testing.assert_close(out_only, torch.tensor([3.0, 1.0, 4.0]))


def test_several_positions_per_unit_are_summed(two_layer, make_slot):
    # units {0: rows 0 and 2, 1: row 1}
    group = ChannelGroup("g", 2, (make_slot("fc1.weight", 0, [0, 1, 0], "out", "fc1"),))
    scores = Magnitude(p=1)(group, ScoreContext.from_model(two_layer))
    torch.testing.assert_close(scores, torch.tensor([7.0, 1.0]))


def test_positions_of_other_groups_are_ignored(two_layer, make_slot):
    group = ChannelGroup("g", 1, (make_slot("fc1.weight", 0, [-1, 0, -1], "out", "fc1"),))
    torch.testing.assert_close(Magnitude(p=1)(group, ScoreContext.from_model(two_layer)), torch.tensor([1.0]))


def test_bad_options_raise_with_the_parameter_name(two_layer, hidden_group):
    ctx = ScoreContext.from_model(two_layer)
    with pytest.raises(InvalidParameterError, match="'p' parameter of Magnitude"):
        Magnitude(p=3)(hidden_group, ctx)
    with pytest.raises(InvalidParameterError, match="'reduction' parameter"):
        Magnitude(reduction="median")(hidden_group, ctx)
    with pytest.raises(InvalidParameterError, match="'roles' parameter"):
        Magnitude(roles=("output",))(hidden_group, ctx)


def test_bn_scale_reads_gamma_of_norm_slots(make_slot):
    model = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.BatchNorm2d(3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -2.0, 1.0]))
    group = ChannelGroup("0:out", 3, (
        make_slot("0.weight", 0, [0, 1, 2], "out", "0"),
        make_slot("1.weight", 0, [0, 1, 2], "norm", "1"),
        make_slot("1.bias", 0, [0, 1, 2], "norm", "1"),
        make_slot("1.running_var", 0, [0, 1, 2], "norm", "1"),
    ))
    torch.testing.assert_close(BNScale()(group, ScoreContext.from_model(model)), torch.tensor([0.5, 2.0, 1.0]))


def test_bn_scale_without_norm_is_unscorable(two_layer, hidden_group):
    with pytest.raises(UnscorableGroupError, match="fc1:out"):
        BNScale()(hidden_group, ScoreContext.from_model(two_layer))


def test_registry_builds_l1_with_options_and_suggests_names():
    crit = make_criterion("l1", reduction="sum")
    assert isinstance(crit, Magnitude) and crit.p == 1 and crit.reduction == "sum"
    with pytest.raises(InvalidParameterError, match="did you mean 'taylor'"):
        make_criterion("taylr")
