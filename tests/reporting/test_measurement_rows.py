"""The summary says how latency spread, which energy figures are estimates, and asked vs reached."""

from __future__ import annotations

import dataclasses

from rich.console import Console

from prunekit.reporting import Report
from prunekit.reporting.format import summary_rows
from prunekit.reporting.html import render_html
from prunekit.reporting.tables import summary_table
from tests.reporting.conftest import DENSE, SMALL


def _report(make_report) -> Report:
    dense = dataclasses.replace(DENSE, latency_spread_ms={1: (0.75, 0.9), 32: (6.0, 7.0)},
                                energy_mj_by_batch={1: 0.5, 32: 0.1}, energy_estimated=True)
    small = dataclasses.replace(SMALL, latency_spread_ms={1: (0.3, 0.35), 32: (1.5, 1.7)},
                                energy_mj_by_batch={1: 0.25, 32: 0.04}, energy_estimated=True)
    return make_report(dense=dense, compressed=small, measurement={"threads": 2, "runs": 50},
                       target={"metric": "macs", "asked": 0.5, "reached": 0.5359, "round_to": 8},
                       splits={"accuracy, F1": "test (300 samples)", "int8 check": "val (200 samples)"})


def test_rows_show_spread_threads_estimates_and_target(make_report):
    rows = {r[0]: r[1:] for r in summary_rows(_report(make_report))}
    assert rows["latency p50 [p25–p75], batch 1 (ms, 2 threads)"] == ("0.8 [0.75–0.9]", "0.32 [0.3–0.35]", "2.50×")
    assert rows["energy per sample, batch 32 (mJ) (estimate)"] == ("0.1", "0.04", "2.50×")
    assert rows["energy per sample, batch 1 (mJ) (estimate)"][2] == "2.00×"
    assert rows["MACs removed: asked / reached"] == ("50.00%", "53.59%", "+3.59 pts")


def test_cli_table_and_html_carry_the_same_rows(make_report):
    report = _report(make_report)
    console = Console(width=200, record=True)
    console.print(summary_table(report))
    text = console.export_text()
    assert "(estimate)" in text and "asked / reached" in text and "2 threads" in text
    assert "latency p50 [p25–p75], batch 1" in text and "0.8 [0.75–0.9]" in text
    html = render_html(report)
    assert "How it was measured" in html and "int8 check" in html and "val (200 samples)" in html
    assert "53.59%" in html


def test_json_round_trip_keeps_the_new_fields(make_report):
    report = _report(make_report)
    again = Report.from_json(report.to_json())
    assert again.dense.latency_spread_ms == {1: (0.75, 0.9), 32: (6.0, 7.0)}
    assert again.compressed.energy_mj_by_batch == {1: 0.25, 32: 0.04}
    assert again.target == report.target and again.measurement == report.measurement and again.splits == report.splits
