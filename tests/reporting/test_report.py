"""Report data: ratios come from the measurements, JSON round-trips exactly, files are written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from prunekit.reporting import ModelMetrics, Report


def test_ratios_are_dense_over_compressed(make_report: Callable[..., Report]) -> None:
    r = make_report().ratios()
    assert r["params"] == pytest.approx(412_234 / 103_058)
    assert r["macs"] == pytest.approx(4.0)
    assert r["file_size"] == pytest.approx(15.0)
    assert r["latency"] == {1: pytest.approx(2.5), 32: pytest.approx(4.0)}
    assert r["energy"] == pytest.approx(2.5)
    assert r["accuracy_delta"] == pytest.approx(-0.0075)
    assert r["f1_delta"] == pytest.approx(-0.009)


def test_missing_or_zero_measurements_give_none() -> None:
    dense = ModelMetrics(params=10, macs=100, latency_ms={1: 1.0, 8: 2.0})
    small = ModelMetrics(params=0, macs=50, latency_ms={1: 0.5})
    r = Report(recipe_name="x", dense=dense, compressed=small).ratios()
    assert r["params"] is None and r["macs"] == 2.0 and r["file_size"] is None
    assert r["latency"] == {1: 2.0}  # batch 8 was measured on one side only
    assert r["accuracy_delta"] is None


@pytest.mark.parametrize(("acc", "ok"), [(0.9725, True), (0.97, True), (0.9699, False)])
def test_accuracy_ok_against_the_recipe_limit(make_report: Callable[..., Report], acc: float, ok: bool) -> None:
    small = ModelMetrics(params=1, macs=1, accuracy=acc)
    assert make_report(compressed=small).accuracy_ok is ok
    assert make_report(compressed=small, max_accuracy_drop=None).accuracy_ok is None


def test_json_round_trip_is_exact(make_report: Callable[..., Report]) -> None:
    report = make_report()
    again = Report.from_json(report.to_json())
    assert again == report
    assert again.dense.latency_ms == {1: 0.80, 32: 6.4}  # int keys restored from JSON strings
    assert again.sensitivity["block.0"] == [(0.25, 0.97), (0.5, 0.93)]


def test_ratios_in_json_are_derived_not_stored(make_report: Callable[..., Report]) -> None:
    data = json.loads(make_report().to_json())
    assert data["derived"]["ratios"]["macs"] == pytest.approx(4.0)
    data["derived"]["ratios"]["macs"] = 99.0  # an edited derived value cannot survive a reload
    data["compressed"]["macs"] = 3_099_264
    assert Report.from_dict(data).ratios()["macs"] == pytest.approx(2.0)


def test_report_without_optional_sections_round_trips() -> None:
    bare = Report(recipe_name="x", dense=ModelMetrics(params=2, macs=3), compressed=ModelMetrics(params=1, macs=1))
    assert Report.from_json(bare.to_json()) == bare


def test_write_creates_both_files(make_report: Callable[..., Report], tmp_path: Path) -> None:
    paths = make_report().write(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["report.html", "report.json"]
    assert Report.from_json(paths["json"].read_text(encoding="utf-8")) == make_report()
    assert paths["html"].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert paths["json"].stat().st_mode & 0o044 == 0o044  # readable by others, like any report
