"""Measure before promising: fp32 vs int8 ONNX Runtime latency in one process, alternating, medians.

Alternating the models run by run spreads machine noise (other processes, frequency changes)
evenly over both, so the ratio is trustworthy even when absolute times drift.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from prunekit.errors import InvalidParameterError


def make_session(path: str | os.PathLike[str], *, threads: int = 1,
                 level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    """A CPU session with a fixed thread count, so fp32 and int8 are timed under equal terms."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Latency:
    """Median seconds per run for each model, at each batch size."""

    median_s: Mapping[str, Mapping[int, float]]  # model name -> batch size -> seconds

    def ratio(self, name: str, baseline: str, batch: int) -> float:
        """Speed-up of ``name`` over ``baseline`` (> 1 means faster)."""
        return self.median_s[baseline][batch] / self.median_s[name][batch]


def measure_latency(
    paths: Mapping[str, str | os.PathLike[str]],
    feeds: Mapping[int, Mapping[str, np.ndarray]],
    *,
    repeats: int = 50,
    warmup: int = 10,
    threads: int = 1,
) -> Latency:
    """Time every model on every feed (one feed per batch size), round-robin, and keep medians."""
    if repeats < 1 or warmup < 0:
        raise InvalidParameterError(
            f"measure_latency needs repeats >= 1 and warmup >= 0. Got repeats={repeats}, warmup={warmup} instead."
        )
    from prunekit.evaluation.latency import alternating_timings

    sessions = {name: make_session(p, threads=threads) for name, p in paths.items()}
    result: dict[str, dict[int, float]] = {name: {} for name in sessions}
    for batch, feed in feeds.items():
        runners = {name: (lambda s=session, f=dict(feed): s.run(None, f)) for name, session in sessions.items()}
        for name, t in alternating_timings(runners, warmup=warmup, runs=repeats).items():
            result[name][batch] = float(np.median(t))
    return Latency(result)


def choose_faster(latency: Latency, *, candidate: str, baseline: str, batches: Sequence[int],
                  margin: float = 1.0) -> tuple[str, str]:
    """Pick ``candidate`` only if it beats ``baseline`` at every batch size; say why either way."""
    ratios = {b: latency.ratio(candidate, baseline, b) for b in batches}
    text = ", ".join(f"batch {b}: {r:.2f}x" for b, r in ratios.items())
    if all(r > margin for r in ratios.values()):
        return candidate, f"{candidate} is faster than {baseline} ({text})"
    slow = [b for b, r in ratios.items() if r <= margin]
    return baseline, (f"{candidate} is not faster than {baseline} at batch {', '.join(map(str, slow))} ({text}); "
                      f"keeping {baseline}")
