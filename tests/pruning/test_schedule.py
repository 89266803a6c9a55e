from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.pruning.masking import apply_masks, sparsity_report, unstructured_masks
from prunekit.pruning.schedule import (
    SCHEDULES,
    Adaptive,
    Cubic,
    Iterative,
    OneShot,
    run_adaptive,
    run_schedule,
)

KEYS = {"step", "sparsity", "loss", "accuracy", "accepted", "rolled_back"}


# ----------------------------------------------------------------------------- fixed schedules

# Zhu & Gupta with s_i=0, s_f=0.8, t0=0, n*dt=100, dt=25, by hand:
# t=25: 0.8 - 0.8 * 0.75**3 = 0.8 - 0.3375 = 0.4625; t=50: 0.8 - 0.8 * 0.125 = 0.7;
# t=75: 0.8 - 0.8 * 0.015625 = 0.7875
CUBIC_TABLE = [(0, 0.0), (10, 0.0), (25, 0.4625), (49, 0.4625), (50, 0.7), (75, 0.7875), (100, 0.8), (500, 0.8)]


@pytest.mark.parametrize("step,expected", CUBIC_TABLE)
def test_cubic_matches_the_hand_table(step, expected):
    assert Cubic(0.0, 0.8, 0, 100, 25).target(step) == pytest.approx(expected, abs=1e-12)


def test_cubic_with_offset_start_and_initial_sparsity():
    # s_i=0.2, s_f=0.6, t0=10, t1=30, dt=10; t=20: 0.6 + (0.2-0.6) * 0.5**3 = 0.6 - 0.05 = 0.55
    sched = Cubic(0.2, 0.6, 10, 30, 10)
    assert [sched.target(t) for t in (0, 9, 10, 20, 29, 30)] == pytest.approx([0.0, 0.0, 0.2, 0.55, 0.55, 0.6])
    assert sched.pruning_steps() == [10, 20, 30]


def test_cubic_rejects_a_frequency_that_misses_end_step():
    with pytest.raises(InvalidParameterError, match="'frequency'.*divide.*100.*Got 30"):
        Cubic(0.0, 0.8, 0, 100, 30).target(0)
    with pytest.raises(InvalidParameterError, match="'final'.*>= initial=0.5"):
        Cubic(0.5, 0.4, 0, 10, 5).pruning_steps()


def test_iterative_targets_are_equal_steps():
    sched = Iterative(0.6, 3)
    assert sched.targets() == pytest.approx([0.2, 0.4, 0.6])
    assert sched.pruning_steps() == [0, 1, 2]
    assert sched.target(7) == pytest.approx(0.6)
    with pytest.raises(InvalidParameterError, match="'steps'.*Got 0"):
        Iterative(0.6, 0).targets()


def test_oneshot_and_registry():
    assert OneShot(0.5).target(0) == 0.5 and OneShot(0.5).pruning_steps() == [0]
    with pytest.raises(InvalidParameterError, match="'target_fraction'.*Got 1.5"):
        OneShot(1.5).target(0)
    assert SCHEDULES.names() == ["adaptive", "cubic", "iterative", "oneshot"]
    assert SCHEDULES.get("cubic") is Cubic


def test_run_schedule_calls_in_order_and_logs_the_trajectory():
    calls: list[str] = []
    state = {"s": 0.0}

    def prune_to(f: float) -> None:
        calls.append(f"prune {f:.2f}")
        state["s"] = f

    def evaluate() -> dict:
        calls.append("eval")
        return {"loss": 1.0 + state["s"], "accuracy": 1.0 - state["s"]}

    def recover() -> None:
        calls.append("recover")

    traj = run_schedule(Iterative(0.6, 3), prune_to=prune_to, recover=recover, evaluate=evaluate)
    rounds = [[f"prune {f}", "recover", "eval"] for f in ("0.20", "0.40", "0.60")]
    assert calls == ["eval"] + [c for r in rounds for c in r]
    assert traj.baseline == {"loss": 1.0, "accuracy": 1.0}
    rows = traj.to_list()
    assert [set(r) for r in rows] == [KEYS] * 3
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert [r["loss"] for r in rows] == pytest.approx([1.2, 1.4, 1.6])
    assert all(r["accepted"] and not r["rolled_back"] for r in rows)
    assert traj.final_sparsity == pytest.approx(0.6) and traj.stop_reason == "schedule"


def test_run_schedule_skips_steps_with_nothing_new_to_prune():
    seen: list[float] = []
    traj = run_schedule(Cubic(0.0, 0.5, 0, 20, 10), prune_to=seen.append, recover=lambda: None)
    # t=0 gives 0.0 (nothing to prune); t=10: 0.5 - 0.5 * 0.125 = 0.4375; t=20: 0.5
    assert seen == pytest.approx([0.4375, 0.5])
    assert [r["step"] for r in traj.to_list()] == [10, 20] and traj.baseline is None


# ----------------------------------------------------------------------------- adaptive


def _threshold_problem(threshold: float):
    """A fake pruner whose loss jumps by 1.0 once the fraction passes ``threshold``."""
    state = {"s": 0.0}
    log: list[tuple[str, float]] = []

    def prune_to(f: float) -> None:
        log.append(("prune", f))
        state["s"] = f

    def state_set(snap: dict) -> None:
        log.append(("restore", snap["s"]))
        state.update(snap)

    closures = dict(
        state_get=lambda: dict(state),
        state_set=state_set,
        prune_to=prune_to,
        recover=lambda: None,
        evaluate=lambda: {"loss": 1.0 + (1.0 if state["s"] > threshold else 0.0), "accuracy": None},
    )
    return state, log, closures


def test_adaptive_grows_shrinks_and_stops_when_the_tolerance_binds():
    state, log, closures = _threshold_problem(0.55)
    traj = run_adaptive(**closures, target=0.9, tolerance=0.1)
    rows = traj.to_list()
    # by hand: 0.1 ok (step -> 0.15), 0.25 ok (-> 0.225), 0.475 ok (-> 0.3375), 0.8125 fails
    assert [r["sparsity"] for r in rows[:5]] == pytest.approx([0.1, 0.25, 0.475, 0.8125, 0.64375])
    assert [r["accepted"] for r in rows[:5]] == [True, True, True, False, False]
    restores = [v for kind, v in log if kind == "restore"]
    assert restores[0] == pytest.approx(0.475)
    assert traj.stop_reason == "tolerance"
    assert all(r["sparsity"] <= 0.55 for r in rows if r["accepted"])
    assert all(r["rolled_back"] == (not r["accepted"]) for r in rows)
    # ends on the last good state, within one min_step of where the loss breaks
    assert state["s"] == traj.final_sparsity
    assert 0.55 - 0.01 < traj.final_sparsity <= 0.55
    assert rows[-1]["rolled_back"] and rows[-1]["sparsity"] - traj.final_sparsity <= 0.01 + 1e-12


def test_adaptive_stops_at_the_target_and_at_max_iters():
    state, _, closures = _threshold_problem(2.0)  # never breaks
    traj = run_adaptive(**closures, target=0.3, tolerance=0.0)
    assert [r["sparsity"] for r in traj.to_list()] == pytest.approx([0.1, 0.25, 0.3])
    assert traj.stop_reason == "target" and state["s"] == pytest.approx(0.3)
    state, _, closures = _threshold_problem(0.15)
    traj = run_adaptive(**closures, target=0.9, tolerance=0.1, max_iters=3)
    assert traj.stop_reason == "max_iters" and len(traj.to_list()) == 3
    assert state["s"] == pytest.approx(0.1) == traj.final_sparsity


def test_adaptive_rejects_bad_parameters_and_bad_evaluate():
    _, _, closures = _threshold_problem(0.5)
    with pytest.raises(InvalidParameterError, match="'shrink'.*\\(0, 1\\).*Got 1.5"):
        run_adaptive(**closures, target=0.5, tolerance=0.1, shrink=1.5)
    with pytest.raises(InvalidParameterError, match="'min_step'.*Got 0.5"):
        Adaptive(0.5, 0.1, initial_step=0.1, min_step=0.5).run(**closures)
    closures["evaluate"] = lambda: 0.3
    with pytest.raises(InvalidParameterError, match="'evaluate'.*'loss'.*Got 0.3"):
        run_adaptive(**closures, target=0.5, tolerance=0.1)


def test_adaptive_rolls_back_a_loss_spike_on_a_real_masked_model():
    torch.manual_seed(0)
    holder = {"model": nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))}
    x, y = torch.randn(32, 8), torch.randn(32, 2)
    seen_on_entry: list[float] = []
    evals = {"n": 0}

    def prune_to(f: float) -> None:
        model = holder["model"]
        seen_on_entry.append(sparsity_report(model)["global"]["sparsity"])
        apply_masks(model, unstructured_masks(model, sparsity=f))

    def recover() -> None:
        model = holder["model"]
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
        for _ in range(2):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    def evaluate() -> dict:
        evals["n"] += 1
        with torch.no_grad():
            loss = float(nn.functional.mse_loss(holder["model"](x), y))
        return {"loss": 1e6 if evals["n"] in (4, 5) else loss}  # call 1 is the baseline: spike proposals 3 and 4

    def state_set(snap: nn.Module) -> None:
        holder["model"] = snap  # adopting the snapshot is allowed: the driver never reuses it

    traj = run_adaptive(
        state_get=lambda: copy.deepcopy(holder["model"]), state_set=state_set,
        prune_to=prune_to, recover=recover, evaluate=evaluate, target=0.6, tolerance=10.0,
    )
    rows = traj.to_list()
    assert [r["accepted"] for r in rows[:5]] == [True, True, False, False, True]
    assert rows[2]["rolled_back"] and rows[3]["rolled_back"] and rows[2]["loss"] == 1e6
    # by hand: 0.25 + 0.225 = 0.475 spikes; step 0.1125 -> 0.3625 spikes; step 0.05625 -> 0.30625
    assert [r["sparsity"] for r in rows[2:5]] == pytest.approx([0.475, 0.3625, 0.30625])
    # both proposals after a spike start from the last good state (0.25), not the spiked one
    assert seen_on_entry[3:5] == pytest.approx([0.25, 0.25], abs=1e-3)
    assert traj.stop_reason == "target"
    assert sparsity_report(holder["model"])["global"]["sparsity"] == pytest.approx(0.6, abs=1e-3)
