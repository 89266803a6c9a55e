"""Pruning schedules: how much to prune at each step, and drivers that log what happened.

A schedule is a pure function of the step (``target(step)``), testable against a table, plus the
steps at which it prunes. The drivers never touch a model: the caller passes closures
(``prune_to(fraction)``, ``recover()``, ``evaluate()``), so the same schedule drives unstructured
masks and structural surgery alike. ``fraction`` is whatever the caller prunes by: a weight
sparsity or a cost (params/MACs) reduction, always measured against the dense model.

Parameters are checked when a schedule is used, not when it is built (constructors store).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from prunekit.errors import InvalidParameterError, check_ratio
from prunekit.registry import Registry

SCHEDULES: Registry[type] = Registry("schedule")


class Schedule(Protocol):
    """What ``run_schedule`` needs: the pruning steps and the target fraction at a step."""

    def target(self, step: int) -> float: ...

    def pruning_steps(self) -> list[int]: ...


def _check_int(value: Any, name: str, owner: str, *, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must be an int >= {low}. Got {value!r} instead."
        )
    return value


def _check_step(step: int, owner: str) -> None:
    _check_int(step, "step", owner, low=0)


@SCHEDULES.register("oneshot")
@dataclass(frozen=True)
class OneShot:
    """Prune to ``target`` once, at step 0."""

    target_fraction: float

    def target(self, step: int) -> float:
        _check_step(step, "OneShot")
        return check_ratio(self.target_fraction, "target_fraction", "OneShot")

    def pruning_steps(self) -> list[int]:
        return [0]


@SCHEDULES.register("iterative")
@dataclass(frozen=True)
class Iterative:
    """Reach ``target_fraction`` in ``steps`` equal increments, recovering after each.

    ``targets()`` is ``[target * (i + 1) / steps for i in range(steps)]``; ``target(step)`` holds
    the last value after the final step.
    """

    target_fraction: float
    steps: int

    def targets(self) -> list[float]:
        goal = check_ratio(self.target_fraction, "target_fraction", "Iterative")
        k = _check_int(self.steps, "steps", "Iterative", low=1)
        return [goal * (i + 1) / k for i in range(k)]

    def target(self, step: int) -> float:
        _check_step(step, "Iterative")
        values = self.targets()
        return values[min(step, len(values) - 1)]

    def pruning_steps(self) -> list[int]:
        return list(range(len(self.targets())))


@SCHEDULES.register("cubic")
@dataclass(frozen=True)
class Cubic:
    """Gradual pruning of Zhu & Gupta (2017), "To prune, or not to prune".

    At the update steps ``t = begin_step + k * frequency`` up to ``end_step``:
    ``s_t = final + (initial - final) * (1 - (t - begin_step) / (end_step - begin_step)) ** 3``.
    Between updates the value holds; after ``end_step`` it stays at ``final``; before
    ``begin_step`` nothing is pruned (0.0). Steps count training iterations, so the caller's
    ``recover`` trains ``frequency`` iterations.
    """

    initial: float
    final: float
    begin_step: int
    end_step: int
    frequency: int

    def _checked(self) -> tuple[float, float, int, int, int]:
        owner = "Cubic"
        s_i = check_ratio(self.initial, "initial", owner)
        s_f = check_ratio(self.final, "final", owner)
        if s_f < s_i:
            raise InvalidParameterError(f"The 'final' parameter of Cubic must be >= initial={s_i}. Got {s_f} instead.")
        t0 = _check_int(self.begin_step, "begin_step", owner, low=0)
        t1 = _check_int(self.end_step, "end_step", owner, low=t0 + 1)
        dt = _check_int(self.frequency, "frequency", owner, low=1)
        if (t1 - t0) % dt:
            raise InvalidParameterError(
                f"The 'frequency' parameter of Cubic must divide end_step - begin_step = {t1 - t0}. "
                f"Got {dt} instead; pick a divisor or move end_step."
            )
        return s_i, s_f, t0, t1, dt

    def target(self, step: int) -> float:
        _check_step(step, "Cubic")
        s_i, s_f, t0, t1, dt = self._checked()
        if step < t0:
            return 0.0
        t = min(t0 + (step - t0) // dt * dt, t1)  # last update at or before `step`
        return s_f + (s_i - s_f) * (1.0 - (t - t0) / (t1 - t0)) ** 3

    def pruning_steps(self) -> list[int]:
        _, _, t0, t1, dt = self._checked()
        return list(range(t0, t1 + 1, dt))


# ----------------------------------------------------------------------------- trajectory


@dataclass
class ScheduleTrajectory:
    """What a driver did, for the report to plot.

    ``baseline`` is the dense model's evaluation (or None); each record is
    ``{step, sparsity, loss, accuracy, accepted, rolled_back}``; ``stop_reason`` says why an
    adaptive run ended ("target", "tolerance", "max_iters"; "schedule" for fixed schedules).
    """

    baseline: dict | None = None
    records: list[dict] = field(default_factory=list)
    stop_reason: str | None = None

    def add(
        self, *, step: int, sparsity: float, metrics: Mapping[str, Any] | None, accepted: bool, rolled_back: bool
    ) -> None:
        metrics = metrics or {}
        self.records.append(
            {
                "step": step,
                "sparsity": float(sparsity),
                "loss": _num(metrics.get("loss")),
                "accuracy": _num(metrics.get("accuracy")),
                "accepted": accepted,
                "rolled_back": rolled_back,
            }
        )

    @property
    def final_sparsity(self) -> float:
        """Fraction of the last accepted step (0.0 when none was accepted)."""
        kept = [r["sparsity"] for r in self.records if r["accepted"]]
        return kept[-1] if kept else 0.0

    def to_list(self) -> list[dict]:
        return [dict(r) for r in self.records]

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "records": self.to_list(), "stop_reason": self.stop_reason}


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _metrics(evaluate: Callable[[], Mapping[str, Any]], owner: str) -> dict:
    out = evaluate()
    if not isinstance(out, Mapping) or "loss" not in out:
        raise InvalidParameterError(
            f"The 'evaluate' callable of {owner} must return a mapping with a 'loss' key. Got {out!r} instead."
        )
    return {"loss": float(out["loss"]), "accuracy": _num(out.get("accuracy"))}


# ----------------------------------------------------------------------------- drivers


def run_schedule(
    schedule: Schedule,
    *,
    prune_to: Callable[[float], None],
    recover: Callable[[], None],
    evaluate: Callable[[], Mapping[str, Any]] | None = None,
) -> ScheduleTrajectory:
    """Drive a fixed schedule: at each pruning step ``prune_to(target)``, ``recover()``, evaluate.

    Steps whose target does not exceed the previous one are skipped (nothing to prune).
    ``evaluate`` is optional; when given, the dense model is evaluated first as the baseline.
    """
    owner = "run_schedule"
    trajectory = ScheduleTrajectory()
    if evaluate is not None:
        trajectory.baseline = _metrics(evaluate, owner)
    done = 0.0
    for step in schedule.pruning_steps():
        fraction = schedule.target(step)
        if fraction <= done:
            continue
        prune_to(fraction)
        recover()
        metrics = _metrics(evaluate, owner) if evaluate is not None else None
        trajectory.add(step=step, sparsity=fraction, metrics=metrics, accepted=True, rolled_back=False)
        done = fraction
    trajectory.stop_reason = "schedule"
    return trajectory


@SCHEDULES.register("adaptive")
@dataclass(frozen=True)
class Adaptive:
    """Grow the pruning step while the loss stays within ``tolerance`` of the dense loss.

    Each iteration proposes ``current + step`` (capped at ``target``), prunes, recovers and
    evaluates. Within ``dense_loss + tolerance`` (absolute): accept, snapshot, ``step *= grow``.
    Otherwise: restore the last good snapshot and ``step *= shrink`` (not below ``min_step``);
    a violation at ``min_step`` means the tolerance binds and the run stops. The run also stops
    at ``target`` or after ``max_iters`` proposals, always on the last good state.
    """

    target_fraction: float
    tolerance: float
    initial_step: float = 0.1
    grow: float = 1.5
    shrink: float = 0.5
    min_step: float = 0.01
    max_iters: int = 50

    def _check(self) -> None:
        owner = "Adaptive"
        check_ratio(self.target_fraction, "target_fraction", owner, low_inclusive=False)
        rules = (
            ("tolerance", self.tolerance, lambda v: v >= 0 and math.isfinite(v), "a finite float >= 0"),
            ("initial_step", self.initial_step, lambda v: 0 < v <= 1, "a float in (0, 1]"),
            ("grow", self.grow, lambda v: 1 <= v < math.inf, "a finite float >= 1"),
            ("shrink", self.shrink, lambda v: 0 < v < 1, "a float in (0, 1)"),
            ("min_step", self.min_step, lambda v: 0 < v <= self.initial_step, "a float in (0, initial_step]"),
        )
        for name, value, ok, rule in rules:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
                raise InvalidParameterError(
                    f"The '{name}' parameter of Adaptive must be {rule}. Got {value!r} instead."
                )
        _check_int(self.max_iters, "max_iters", owner, low=1)

    def run(
        self,
        *,
        state_get: Callable[[], Any],
        state_set: Callable[[Any], None],
        prune_to: Callable[[float], None],
        recover: Callable[[], None],
        evaluate: Callable[[], Mapping[str, Any]],
    ) -> ScheduleTrajectory:
        """Run the search; the caller's state is the last good one when this returns.

        ``state_get()`` must return an independent snapshot (e.g. a deepcopy of the model, or of
        its ``state_dict`` for masks); ``state_set(snapshot)`` restores it. A snapshot is never
        used again after it was passed to ``state_set``, so ``state_set`` may adopt it as is.
        """
        self._check()
        owner = "Adaptive"
        trajectory = ScheduleTrajectory(baseline=_metrics(evaluate, owner))
        allowed = trajectory.baseline["loss"] + self.tolerance
        current, step, good = 0.0, float(self.initial_step), state_get()
        for it in range(1, self.max_iters + 1):
            proposal = min(current + step, self.target_fraction)
            prune_to(proposal)
            recover()
            metrics = _metrics(evaluate, owner)
            if metrics["loss"] <= allowed:  # NaN fails this test too
                current, good = proposal, state_get()
                trajectory.add(step=it, sparsity=proposal, metrics=metrics, accepted=True, rolled_back=False)
                if current >= self.target_fraction:
                    trajectory.stop_reason = "target"
                    return trajectory
                step *= self.grow
                continue
            state_set(good)
            good = state_get()
            trajectory.add(step=it, sparsity=proposal, metrics=metrics, accepted=False, rolled_back=True)
            if step <= self.min_step:
                trajectory.stop_reason = "tolerance"
                return trajectory
            step = max(step * self.shrink, self.min_step)
        trajectory.stop_reason = "max_iters"
        return trajectory


def run_adaptive(
    *,
    state_get: Callable[[], Any],
    state_set: Callable[[Any], None],
    prune_to: Callable[[float], None],
    recover: Callable[[], None],
    evaluate: Callable[[], Mapping[str, Any]],
    target: float,
    tolerance: float,
    initial_step: float = 0.1,
    grow: float = 1.5,
    shrink: float = 0.5,
    min_step: float = 0.01,
    max_iters: int = 50,
) -> ScheduleTrajectory:
    """Functional form of ``Adaptive(...).run(...)``; see ``Adaptive`` for the rules."""
    schedule = Adaptive(target, tolerance, initial_step, grow, shrink, min_step, max_iters)
    return schedule.run(state_get=state_get, state_set=state_set, prune_to=prune_to, recover=recover, evaluate=evaluate)
