"""Asked vs reached, by hand, for each target metric; and the split table."""

from __future__ import annotations

import pytest

from prunekit.data import digits
from prunekit.recipes.facts import asked_vs_reached, split_sources
from prunekit.recipes.schema import PruningSpec
from prunekit.reporting.report import ModelMetrics

DENSE = ModelMetrics(params=1000, macs=8000, latency_ms={1: 2.0})
SMALL = ModelMetrics(params=600, macs=3600, latency_ms={1: 1.5})


@pytest.mark.parametrize("metric, reached", [("macs", 0.55), ("params", 0.4), ("channels", 0.25), ("latency", 0.25)])
def test_asked_vs_reached_per_metric(metric, reached):
    spec = PruningSpec(target={"metric": metric, "ratio": 0.5})
    layers = [{"name": "a", "before": 16, "after": 8}, {"name": "b", "before": 16, "after": 16}]
    row = asked_vs_reached(spec, DENSE, SMALL, layers)
    assert row["asked"] == 0.5 and row["reached"] == pytest.approx(reached) and row["metric"] == metric


def test_no_structured_pruning_no_target_row():
    assert asked_vs_reached(None, DENSE, SMALL, []) == {}
    assert asked_vs_reached(PruningSpec(granularity="unstructured"), DENSE, SMALL, []) == {}


def test_split_sources_name_the_split_and_sizes():
    bundle = digits(seed=0)
    table = split_sources(bundle)
    assert table["accuracy, F1, recovery curve (final figures)"] == "test"
    assert table["val samples"] == len(bundle.val.dataset) and table["test samples"] == len(bundle.test.dataset)
    assert "carved from the training data" in table["validation source"]
