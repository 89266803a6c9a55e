"""rich tables render the same numbers as the report."""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from rich.console import Console

from prunekit.dependency.groups import ChannelGroup, Slot
from prunekit.reporting import Report
from prunekit.reporting.tables import groups_table, layer_table, summary_table


def _text(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_summary_table_rows(make_report: Callable[..., Report]) -> None:
    text = _text(summary_table(make_report()))
    line = next(l for l in text.splitlines() if "parameters" in l)
    assert "412,234" in line and "103,058" in line and "4.00×" in line
    assert "-0.75 pts" in text and "latency p50, batch 1 (ms)" in text


def test_layer_table_columns_follow_rows() -> None:
    text = _text(layer_table([{"name": "stem.0", "params": 576, "macs": 36_864}, {"name": "x", "extra": 1.23456}]))
    header = next(l for l in text.splitlines() if "name" in l)
    assert header.index("params") < header.index("macs") < header.index("extra")
    assert "36,864" in text and "1.235" in text


def test_groups_table_from_channel_groups() -> None:
    slot = Slot(tensor="stem.0.weight", axis=0, unit_of_position=np.arange(4), role="out", module="stem.0")
    frozen = ChannelGroup(id="head:out", size=10, slots=(slot,), prunable=False, reason="model output")
    text = _text(groups_table([ChannelGroup(id="stem.0:out", size=4, slots=(slot,)), frozen]))
    assert "stem.0:out" in text and "no: model output" in text
    assert any("stem.0:out" in l and " 4 " in l and "yes" in l for l in text.splitlines())
