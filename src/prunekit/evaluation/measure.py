"""The one place that decides how prunekit times ONNX models, and when a speed-up is real.

Every timing that drives a decision (int8 or float, a layer kept in float) or fills the report
goes through here, so they share one ORT configuration (:class:`MeasureSettings`: thread
count, graph optimization, warm-up, rounds) and one rule for "faster":

* models are timed alternating, round by round (:func:`prunekit.evaluation.latency.alternating_timings`),
  so each round gives a PAIRED ratio ``baseline time / candidate time`` measured under the
  same machine conditions;
* the median of those ratios gets a distribution-free 95% confidence interval from order
  statistics (binomial: ranks ``n/2 ± 1.96·sqrt(n)/2``);
* the candidate is faster only when the whole interval lies above ``margin`` (default 1.0);
  when the interval still straddles it, more rounds are timed, up to ``max_runs``; if it never
  clears, the baseline stays (an undecided speed-up is not a speed-up).

Spread is reported, not hidden: :func:`spread_warning` flags a run whose latency p25–p75 is wide
relative to its median (another process was competing for the cores).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunekit.errors import InvalidParameterError

Samples = dict[str, dict[int, list[float]]]  # model -> batch size -> seconds per round
_LEVELS = ("disable", "basic", "extended", "all")
BUSY_SPREAD = 0.25  # (p75 - p25) / p50 above this: the machine was busy while timing


@dataclass(frozen=True)
class MeasureSettings:
    """ORT session and timing settings shared by every decision and the report.

    ``threads=None`` means :func:`prunekit.evaluation.latency.physical_cores`, resolved once by
    :meth:`resolved`, so the decision and the table it justifies use the same number.
    """

    threads: int | None = None
    warmup: int = 5
    runs: int = 50
    max_runs: int = 400  # decisions only: rounds are doubled up to this while the interval straddles the margin
    optimization: str = "all"

    def __post_init__(self) -> None:
        for name, low in (("warmup", 0), ("runs", 1), ("max_runs", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InvalidParameterError(
                    f"The '{name}' parameter of MeasureSettings must be an int >= {low}. Got {value!r} instead.")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise InvalidParameterError(
                f"The 'threads' parameter of MeasureSettings must be None or an int >= 1. Got {self.threads!r} instead.")
        if self.optimization not in _LEVELS:
            raise InvalidParameterError(
                f"The 'optimization' parameter of MeasureSettings must be one of {_LEVELS}. "
                f"Got {self.optimization!r} instead.")

    def resolved(self) -> MeasureSettings:
        """These settings with ``threads`` fixed to a number."""
        from prunekit.evaluation.latency import physical_cores

        if self.threads is not None:
            return self
        return MeasureSettings(threads=physical_cores(), warmup=self.warmup, runs=self.runs,
                               max_runs=self.max_runs, optimization=self.optimization)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the report."""
        s = self.resolved()
        return {"threads": s.threads, "inter_op_threads": 1, "graph_optimization": s.optimization,
                "warmup": s.warmup, "runs": s.runs, "max_runs_for_decisions": s.max_runs,
                "order": "alternating, flipped every round"}


def session_options(settings: MeasureSettings) -> Any:
    """ONNX Runtime options for ``settings``: intra-op threads, 1 inter-op thread, sequential."""
    import onnxruntime as ort

    s = settings.resolved()
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(s.threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[s.optimization]
    return options


def ort_session(path: str | os.PathLike[str], settings: MeasureSettings) -> Any:
    """A CPU inference session configured by ``settings``."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=session_options(settings), providers=["CPUExecutionProvider"])


def time_onnx(paths: Mapping[str, str | os.PathLike[str]], feeds: Mapping[int, Mapping[str, np.ndarray]],
              settings: MeasureSettings, *, runs: int | None = None,
              clock: Callable[[], float] = time.perf_counter) -> Samples:
    """Seconds per round for every model on every feed (one feed per batch size), alternating."""
    sessions = {name: ort_session(p, settings) for name, p in paths.items()}
    return _time_sessions(sessions, feeds, warmup=settings.warmup, runs=runs or settings.runs, clock=clock)


def _time_sessions(sessions: Mapping[str, Any], feeds: Mapping[int, Mapping[str, np.ndarray]], *, warmup: int,
                   runs: int, clock: Callable[[], float] = time.perf_counter) -> Samples:
    from prunekit.evaluation.latency import alternating_timings

    out: Samples = {name: {} for name in sessions}
    for batch, feed in feeds.items():
        runners = {name: (lambda s=session, f=dict(feed): s.run(None, f)) for name, session in sessions.items()}
        for name, seconds in alternating_timings(runners, warmup=warmup, runs=runs, clock=clock).items():
            out[name][batch] = list(seconds)
    return out


@dataclass(frozen=True)
class RatioStats:
    """Paired per-round speed-ratios ``baseline / candidate`` (> 1: candidate faster)."""

    p25: float
    p50: float
    p75: float
    low: float  # 95% confidence interval of the median ratio
    high: float
    rounds: int

    def text(self) -> str:
        return (f"{self.p50:.2f}x (p25-p75 {self.p25:.2f}-{self.p75:.2f}, 95% CI {self.low:.2f}-{self.high:.2f}, "
                f"{self.rounds} rounds)")


def ratio_stats(baseline_s: Sequence[float], candidate_s: Sequence[float]) -> RatioStats:
    """Statistics of the round-by-round ratios of two alternating timing series."""
    if len(baseline_s) != len(candidate_s) or not len(baseline_s):
        raise InvalidParameterError(
            f"ratio_stats needs two equally long, non-empty timing series. Got {len(baseline_s)} and {len(candidate_s)}.")
    ratios = np.sort(np.asarray(baseline_s, dtype=np.float64) / np.maximum(np.asarray(candidate_s, dtype=np.float64), 1e-12))
    n = len(ratios)
    half = 1.96 * math.sqrt(n) / 2
    lo_rank, hi_rank = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half) - 1)
    p25, p50, p75 = (float(np.percentile(ratios, q)) for q in (25, 50, 75))
    return RatioStats(p25=p25, p50=p50, p75=p75, low=float(ratios[lo_rank]), high=float(ratios[hi_rank]), rounds=n)


@dataclass(frozen=True)
class Comparison:
    """Outcome of :func:`compare`: the winner, why, and the numbers behind it."""

    chosen: str
    reason: str
    ratios: dict[int, RatioStats]
    samples: Samples = field(repr=False)
    threads: int | None = None

    def median_s(self) -> dict[str, dict[int, float]]:
        return {name: {b: float(np.median(t)) for b, t in per.items()} for name, per in self.samples.items()}


def compare(sample: Callable[[int], Samples], *, candidate: str, baseline: str, batches: Sequence[int],
            settings: MeasureSettings, margin: float = 1.0) -> Comparison:
    """Is ``candidate`` faster than ``baseline`` at every batch size, beyond noise?

    ``sample(rounds)`` times both models alternating for ``rounds`` rounds and returns
    :data:`Samples` (a seam: tests pass fake timings). Rounds accumulate, doubling, while some
    batch's interval straddles ``margin``, up to ``settings.max_runs``.
    """
    s = settings.resolved()
    samples = sample(s.runs)
    while True:
        stats = {b: ratio_stats(samples[baseline][b], samples[candidate][b]) for b in batches}
        undecided = [b for b, r in stats.items() if r.low <= margin < r.high]
        rounds = len(samples[baseline][batches[0]])
        if not undecided or rounds >= s.max_runs:
            break
        more = sample(min(rounds, s.max_runs - rounds))
        for name in samples:
            for b in samples[name]:
                samples[name][b] = samples[name][b] + more[name][b]
    text = "; ".join(f"batch {b}: {r.text()}" for b, r in stats.items())
    where = f"ONNX Runtime, {s.threads} thread{'s' if s.threads != 1 else ''}"
    if all(r.low > margin for r in stats.values()):
        return Comparison(candidate, f"{candidate} is faster than {baseline} beyond noise ({where}; {text})",
                          stats, samples, s.threads)
    unclear = ", ".join(str(b) for b, r in stats.items() if r.low <= margin)
    verdict = "slower than" if all(r.high < margin for r in stats.values()) else "not faster beyond noise than"
    return Comparison(baseline, f"{candidate} is {verdict} {baseline} at batch {unclear} ({where}; {text}); "
                                f"keeping {baseline}", stats, samples, s.threads)


def compare_onnx(paths: Mapping[str, str | os.PathLike[str]], feeds: Mapping[int, Mapping[str, np.ndarray]], *,
                 candidate: str, baseline: str, settings: MeasureSettings, margin: float = 1.0) -> Comparison:
    """:func:`compare` on ONNX files, timed like :func:`time_onnx` (sessions built and warmed once)."""
    s = settings.resolved()
    sessions = {name: ort_session(p, s) for name, p in paths.items()}
    warm = {"done": False}

    def sample(rounds: int) -> Samples:
        out = _time_sessions(sessions, feeds, warmup=0 if warm["done"] else s.warmup, runs=rounds)
        warm["done"] = True
        return out

    return compare(sample, candidate=candidate, baseline=baseline, batches=list(feeds), settings=s, margin=margin)


def spread(seconds: Sequence[float]) -> dict[str, float]:
    """p25/p50/p75/p95 in ms and the relative spread ``(p75 - p25) / p50``."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p25, p50, p75, p95 = (float(np.percentile(ms, q)) for q in (25, 50, 75, 95))
    return {"p25_ms": p25, "p50_ms": p50, "p75_ms": p75, "p95_ms": p95,
            "relative_spread": (p75 - p25) / p50 if p50 > 0 else float("inf")}


def spread_warning(timings: Mapping[str, Mapping[int, Mapping[str, float]]], *, threads: int | None,
                   limit: float = BUSY_SPREAD) -> str | None:
    """A warning when any latency's p25–p75 spread exceeds ``limit`` of its median, else None.

    ``timings[name][batch]`` holds ``p25_ms``, ``p50_ms``, ``p75_ms`` (as from :func:`spread`).
    """
    wide = []
    for name, per in timings.items():
        for batch, t in per.items():
            if {"p25_ms", "p50_ms", "p75_ms"} <= set(t) and t["p50_ms"] > 0:
                rel = (t["p75_ms"] - t["p25_ms"]) / t["p50_ms"]
                if rel > limit:
                    wide.append(f"{name} batch {batch}: p25-p75 is {100 * rel:.0f}% of p50")
    if not wide:
        return None
    return (f"the machine was busy while timing ({', '.join(wide)}; limit {100 * limit:.0f}%, {threads} threads): "
            f"latency figures are noisy; rerun on an idle machine before trusting absolute numbers")
