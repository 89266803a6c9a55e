from __future__ import annotations

import numpy as np
import pytest
import torch

from prunekit.dependency.groups import ChannelGroup, PruningPlan, Slot
from prunekit.errors import InvalidParameterError, PrunekitWarning
from prunekit.pruning.allocate import allocate, constrain


def _group(gid: str, size: int, module: str, **kw) -> ChannelGroup:
    return ChannelGroup(gid, size, (Slot(f"{module}.weight", 0, np.arange(size), "out", module),), **kw)


A = _group("a", 4, "a")
B = _group("b", 4, "b")
SCORES = {"a": torch.tensor([4.0, 1.0, 3.0, 2.0]), "b": torch.tensor([40.0, 10.0, 30.0, 20.0])}


def test_local_removes_the_lowest_fraction_of_every_group():
    plan = allocate([A, B], SCORES, ratio=0.5)
    assert plan.removed == {"a": (1, 3), "b": (1, 3)}


def test_global_without_normalization_cuts_the_smaller_scale_layer():
    # the 4 lowest raw scores are all of a; min_keep=1 keeps a's best unit
    plan = allocate([A, B], SCORES, ratio=0.5, scope="global", normalizer="none")
    assert plan.removed == {"a": (1, 2, 3)}


def test_global_with_normalization_picks_units_across_layers():
    # mean-normalized: a -> [1.6, .4, 1.2, .8]
    scores = {"a": torch.tensor([4.0, 1.0, 3.0, 2.0]), "b": torch.tensor([40.0, 5.0, 35.0, 20.0])}
    plan = allocate([A, B], scores, ratio=0.25, scope="global", normalizer="mean")
    # b normalized: [1.6, .2, 1.4, .8]; lowest two overall: b1 (.2), a1 (.4)
    assert plan.removed == {"a": (1,), "b": (1,)}
    plan = allocate([A, B], scores, ratio=0.5, scope="global", normalizer="mean")
    # next lowest: a3 (.8) and b3 (.8): tie broken by order of groups
    assert plan.removed == {"a": (1, 3), "b": (1, 3)}


def test_global_lamp_protects_the_largest_unit_of_each_group():
    plan = allocate([A, B], SCORES, ratio=0.75, scope="global", normalizer="lamp", min_keep=1)
    assert plan.removed == {"a": (1, 2, 3), "b": (1, 2, 3)}


def test_min_keep_and_group_min_units_are_floors():
    small = _group("s", 4, "s", min_units=3)
    plan = allocate([A, small], {"a": SCORES["a"], "s": SCORES["a"]}, ratio=0.75, min_keep=2)
    assert plan.removed == {"a": (1, 3), "s": (1,)}


@pytest.mark.parametrize("size, n_remove, round_to, expected_keep", [
    (64, 10, 8, 56),   # keep 54 -> nearest multiple 56
    (64, 1, 8, 64),    # keep 63 -> 64: no cut
    (64, 63, 8, 8),    # keep 1 -> at least one block
    (60, 3, 8, 56),    # keep 57 -> 56
    (12, 6, 8, 6),     # group smaller than 2 * round_to: not rounded
    (64, 0, 8, 64),    # nothing asked, nothing rounded into a cut
])
def test_round_to_rounds_kept_units(size, n_remove, round_to, expected_keep):
    g = _group("g", size, "g")
    assert size - constrain(g, n_remove, round_to=round_to) == expected_keep


def test_round_to_and_min_keep_together_round_the_floor_up():
    g = _group("g", 64, "g")
    assert 64 - constrain(g, 60, round_to=8, min_keep=10) == 16


def test_round_to_skips_head_groups():
    heads = _group("h", 16, "h", unit="head")
    assert constrain(heads, 3, round_to=8) == 3


def test_ignore_skips_groups_touching_an_ignored_out_slot_and_non_prunable_groups():
    frozen = _group("f", 4, "f", prunable=False, reason="output")
    nested = _group("n", 4, "head.1")
    scores = {"a": SCORES["a"], "f": SCORES["a"], "n": SCORES["a"]}
    plan = allocate([A, frozen, nested], scores, ratio=0.5, ignore=("head",))
    assert plan.removed == {"a": (1, 3)}
    plan = allocate([A, nested], scores, ratio=0.5, ignore=("a*",))
    assert set(plan.removed) == {"n"}


def test_per_module_overrides_leave_the_global_ranking():
    plan = allocate([A, B], SCORES, ratio=0.5, scope="global", normalizer="none", per_module={"b": 0.25})
    assert plan.removed["b"] == (1,)
    assert plan.removed["a"] == (1, 3)  # half of the remaining (free) units: only a's


def test_cost_target_is_met_within_one_step():
    # cost = units kept, weighted: a unit of a costs 1, of b costs 10
    weight = {"a": 1.0, "b": 10.0}

    def measure(plan: PruningPlan) -> float:
        return sum(weight[g] * (4 - len(plan.removed.get(g, ()))) for g in weight)

    for scope in ("global", "local"):
        plan = allocate([A, B], SCORES, ratio=0.3, scope=scope, target="params", measure=measure, normalizer="mean")
        achieved = 1 - measure(plan) / 44.0
        assert abs(achieved - 0.3) <= max(weight.values()) * (2 if scope == "local" else 1) / 44.0
        assert plan.meta["achieved"] == pytest.approx(achieved)


def test_cost_target_takes_the_nearer_plan_either_side_of_the_crossing():
    # mean-normalized ranking: a1, b1, a3, b3, ...; removed cost after k units: 1, 11, 12, 22 of 44.
    # 30% (13.2) lies between k=3 (27.3%) and k=4 (50%): k=3 is 2.7 pts short, k=4 20 pts over.
    weight = {"a": 1.0, "b": 10.0}

    def measure(plan: PruningPlan) -> float:
        return sum(weight[g] * (4 - len(plan.removed.get(g, ()))) for g in weight)

    plan = allocate([A, B], SCORES, ratio=0.3, scope="global", target="params", measure=measure)
    assert plan.removed == {"a": (1, 3), "b": (1,)}
    assert plan.meta["achieved"] == pytest.approx(12 / 44)


def test_unreachable_cost_target_warns_and_returns_the_deepest_cut():
    with pytest.warns(PrunekitWarning, match="cannot be reached"):
        plan = allocate([A], {"a": SCORES["a"]}, ratio=0.9, scope="global", target="macs",
                        measure=lambda p: 4 - len(p.removed.get("a", ())), min_keep=2)
    assert plan.removed == {"a": (1, 3)}


def test_bad_parameters_raise_with_the_rule():
    with pytest.raises(InvalidParameterError, match="'ratio' parameter of allocate must be a float in"):
        allocate([A], SCORES, ratio=1.0)
    with pytest.raises(InvalidParameterError, match="'target' parameter"):
        allocate([A], SCORES, ratio=0.5, target="flops")
    with pytest.raises(InvalidParameterError, match="needs a measure"):
        allocate([A], SCORES, ratio=0.5, target="macs")
    with pytest.raises(InvalidParameterError, match="per_module"):
        allocate([A], SCORES, ratio=0.5, per_module={"a": 2.0})
