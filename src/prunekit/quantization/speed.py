"""Measure before promising: fp32 vs int8 ONNX Runtime latency in one process, alternating.

A thin layer over :mod:`prunekit.evaluation.measure`, which owns the ORT settings and the rule
for "faster beyond noise"; this module keeps the quantization-facing names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from prunekit.errors import InvalidParameterError
from prunekit.evaluation.measure import Comparison, MeasureSettings, Samples, compare, ort_session, time_onnx


def make_session(path: str | os.PathLike[str], *, threads: int | None = None) -> object:
    """A CPU session configured like every other prunekit timing (see :class:`MeasureSettings`)."""
    return ort_session(path, MeasureSettings(threads=threads))


@dataclass(frozen=True)
class Latency:
    """Median seconds per run for each model, at each batch size (and the raw rounds, when timed)."""

    median_s: Mapping[str, Mapping[int, float]]  # model name -> batch size -> seconds
    samples: Samples | None = field(default=None, repr=False)
    threads: int | None = None

    def ratio(self, name: str, baseline: str, batch: int) -> float:
        """Speed-up of ``name`` over ``baseline`` (> 1 means faster), from the medians."""
        return self.median_s[baseline][batch] / self.median_s[name][batch]


def measure_latency(
    paths: Mapping[str, str | os.PathLike[str]],
    feeds: Mapping[int, Mapping[str, np.ndarray]],
    *,
    repeats: int = 50,
    warmup: int = 10,
    threads: int | None = None,
    settings: MeasureSettings | None = None,
) -> Latency:
    """Time every model on every feed (one feed per batch size), alternating; keep the rounds."""
    if repeats < 1 or warmup < 0:
        raise InvalidParameterError(
            f"measure_latency needs repeats >= 1 and warmup >= 0. Got repeats={repeats}, warmup={warmup} instead."
        )
    settings = (settings or MeasureSettings(threads=threads, warmup=warmup, runs=repeats)).resolved()
    samples = time_onnx(paths, feeds, settings)
    medians = {name: {b: float(np.median(t)) for b, t in per.items()} for name, per in samples.items()}
    return Latency(medians, samples, settings.threads)


def choose_faster(latency: Latency, *, candidate: str, baseline: str, batches: Sequence[int],
                  margin: float = 1.0, settings: MeasureSettings | None = None) -> tuple[str, str]:
    """Pick ``candidate`` only if it beats ``baseline`` at every batch size; say why either way.

    With timed rounds (``latency.samples``) the rule is :func:`prunekit.evaluation.measure.compare`
    on those rounds (the confidence interval of the paired ratio must clear ``margin``); hand-made
    medians alone fall back to ``ratio > margin``.
    """
    if latency.samples is not None:
        result = decide(latency, candidate=candidate, baseline=baseline, batches=batches, margin=margin,
                        settings=settings)
        return result.chosen, result.reason
    ratios = {b: latency.ratio(candidate, baseline, b) for b in batches}
    text = ", ".join(f"batch {b}: {r:.2f}x" for b, r in ratios.items())
    if all(r > margin for r in ratios.values()):
        return candidate, f"{candidate} is faster than {baseline} ({text})"
    slow = [b for b, r in ratios.items() if r <= margin]
    return baseline, (f"{candidate} is not faster than {baseline} at batch {', '.join(map(str, slow))} ({text}); "
                      f"keeping {baseline}")


def decide(latency: Latency, *, candidate: str, baseline: str, batches: Sequence[int], margin: float = 1.0,
           settings: MeasureSettings | None = None) -> Comparison:
    """:func:`compare` on rounds already timed (no extra rounds: the timing is over)."""
    samples = latency.samples or {}
    rounds = len(next(iter(samples[baseline].values())))
    fixed = MeasureSettings(threads=latency.threads or (settings.threads if settings else None),
                            runs=rounds, max_runs=rounds)
    return compare(lambda n: samples, candidate=candidate, baseline=baseline, batches=list(batches),
                   settings=fixed, margin=margin)
