"""The one measurement rule: paired ratios, an order-statistic interval, more rounds while undecided."""

from __future__ import annotations

import itertools

import pytest

from prunekit.errors import InvalidParameterError
from prunekit.evaluation.measure import MeasureSettings, compare, ratio_stats, spread, spread_warning
from prunekit.quantization.speed import Latency, choose_faster


def _fake(base_s, cand_s, *, batches=(1,)):
    """A ``sample(rounds)`` that cycles through fixed per-round timings; counts the rounds asked."""
    cycle_b, cycle_c = itertools.cycle(base_s), itertools.cycle(cand_s)
    asked = []

    def sample(rounds):
        asked.append(rounds)
        b = [next(cycle_b) for _ in range(rounds)]
        c = [next(cycle_c) for _ in range(rounds)]
        return {"fp32": {k: list(b) for k in batches}, "int8": {k: list(c) for k in batches}}

    return sample, asked


def test_ratio_stats_interval_is_the_order_statistics_of_the_median():
    # ratios 1..16: n=16, 1.96*sqrt(16)/2 = 3.92 -> ranks floor(8-3.92)=4 and ceil(8+3.92)-1=11 (0-based)
    stats = ratio_stats([float(r) for r in range(16, 0, -1)], [1.0] * 16)
    assert (stats.low, stats.high) == (5.0, 12.0)
    assert stats.p50 == pytest.approx(8.5)
    assert (stats.p25, stats.p75) == (pytest.approx(4.75), pytest.approx(12.25))
    with pytest.raises(InvalidParameterError, match="equally long"):
        ratio_stats([1.0, 2.0], [1.0])


def test_a_clear_speedup_is_chosen_without_extra_rounds():
    sample, asked = _fake([3.0, 3.1, 2.9], [2.0, 2.05, 1.95], batches=(1, 32))
    result = compare(sample, candidate="int8", baseline="fp32", batches=[1, 32],
                     settings=MeasureSettings(threads=3, runs=12, max_runs=96))
    assert result.chosen == "int8"
    assert asked == [12]
    assert result.ratios[1].p50 == pytest.approx(1.5, rel=0.02)
    assert "beyond noise" in result.reason and "3 threads" in result.reason


def test_noise_wider_than_the_gain_keeps_the_baseline_after_more_rounds():
    # medians say int8 is 1.02x faster; paired rounds swing 0.7x..1.5x, so the interval straddles 1
    sample, asked = _fake([1.0, 1.0, 1.0, 1.0], [1.0 / 1.5, 1.0 / 0.7, 1.0 / 1.04, 1.0 / 0.98])
    result = compare(sample, candidate="int8", baseline="fp32", batches=[1],
                     settings=MeasureSettings(threads=1, runs=8, max_runs=32))
    assert result.chosen == "fp32"
    assert asked == [8, 8, 16]  # doubled until max_runs
    assert result.ratios[1].rounds == 32
    assert result.ratios[1].low < 1.0 < result.ratios[1].high
    assert "not faster beyond noise" in result.reason and "keeping fp32" in result.reason
    # the old rule (ratio of medians > 1) would have taken int8 on the same numbers
    medians = result.median_s()
    assert medians["fp32"][1] / medians["int8"][1] > 1.0


def test_a_clearly_slower_candidate_is_called_slower():
    sample, _ = _fake([1.0], [1.25])
    result = compare(sample, candidate="int8", baseline="fp32", batches=[1], settings=MeasureSettings(threads=1, runs=10))
    assert result.chosen == "fp32"
    assert result.reason.startswith("int8 is slower than fp32 at batch 1")


def test_choose_faster_on_timed_rounds_uses_the_interval_not_the_medians():
    samples = {"fp32": {1: [1.0] * 20}, "int8": {1: [1 / 1.5, 1 / 0.7] * 10}}
    latency = Latency({"fp32": {1: 1.0}, "int8": {1: 0.9}}, samples, threads=2)
    chosen, why = choose_faster(latency, candidate="int8", baseline="fp32", batches=(1,))
    assert chosen == "fp32" and "2 threads" in why


def test_spread_and_busy_warning():
    quiet = spread([0.010, 0.0101, 0.0099, 0.0100])
    busy = spread([0.010, 0.020, 0.005, 0.030])
    assert quiet["p50_ms"] == pytest.approx(10.0)
    assert spread_warning({"dense": {1: quiet}}, threads=2) is None
    text = spread_warning({"dense": {1: quiet}, "compressed": {32: busy}}, threads=2)
    assert text is not None and "busy" in text and "compressed batch 32" in text and "2 threads" in text


def test_settings_are_validated_and_resolved():
    assert MeasureSettings().resolved().threads >= 1
    assert MeasureSettings(threads=3).describe()["threads"] == 3
    with pytest.raises(InvalidParameterError, match="'runs' parameter of MeasureSettings"):
        MeasureSettings(runs=0)
    with pytest.raises(InvalidParameterError, match="'optimization' parameter"):
        MeasureSettings(optimization="max")
