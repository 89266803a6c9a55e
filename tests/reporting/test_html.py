"""Standalone HTML: the summary table, embedded PNG plots, and escaped text."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from typing import Callable

from prunekit.reporting import ModelMetrics, Report
from prunekit.reporting.html import render_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_summary_table_values_and_ratios(make_report: Callable[..., Report]) -> None:
    html = render_html(make_report())
    assert "<th>metric</th><th>dense</th><th>compressed</th><th>ratio / change</th>" in html
    assert "<tr><td>MACs</td><td>6.20M</td><td>1.55M</td><td>4.00×</td></tr>" in html
    assert "<tr><td>accuracy</td><td>98.00%</td><td>97.25%</td><td>-0.75 pts</td></tr>" in html
    assert "<tr><td>latency p50, batch 32 (ms)</td><td>6.4</td><td>1.6</td><td>4.00×</td></tr>" in html
    assert "kept the recipe's limit of 1.00%" in html


def test_plots_are_embedded_pngs_and_nothing_external(make_report: Callable[..., Report]) -> None:
    html = render_html(make_report())
    images = _images(html)
    assert len(images) == 4  # comparison, trajectory, sensitivity, layer channels
    assert all(img.startswith(PNG_MAGIC) for img in images)
    assert not re.search(r"(src|href)=[\"']?https?:", html)


def test_only_the_comparison_plot_without_optional_data() -> None:
    bare = Report(recipe_name="x", dense=ModelMetrics(params=2, macs=3), compressed=ModelMetrics(params=1, macs=1))
    html = render_html(bare)
    assert len(_images(html)) == 1
    assert "Pruning trajectory" not in html and "Sensitivity" not in html


def test_text_is_escaped(make_report: Callable[..., Report]) -> None:
    html = render_html(make_report(notes=["<script>alert(1)</script>"], recipe_name="a<b"))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "prunekit report: a&lt;b" in html


def test_broken_promise_is_flagged(make_report: Callable[..., Report]) -> None:
    html = render_html(make_report(compressed=ModelMetrics(params=1, macs=1, accuracy=0.90)))
    assert "class='bad'" in html and "broke the recipe's limit" in html


def test_int8_scores_are_named_by_what_they_measure(make_report: Callable[..., Report]) -> None:
    from prunekit.reporting import QuantizationInfo

    q = QuantizationInfo(mode="dynamic", method="dynamic", chosen_artifact="m.int8.onnx", reason="faster",
                         float_accuracy=0.772, int8_accuracy=0.77)
    html = render_html(make_report(task="embedding", quantization=q))
    assert "<td>float mean cosine to the dense model (validation split)</td><td>0.772</td>" in html
    assert "77.20%" not in html  # a cosine is not a percentage
    assert "<th>stage</th><th>linear-probe accuracy</th>" in html  # an embedding model's accuracy is its probe's
    lm = render_html(make_report(task="causal_lm", quantization=replace(q, float_accuracy=-2.5)))  # scored as -loss
    assert "<td>float next-token loss (validation split)</td><td>2.5</td>" in lm


def test_a_single_step_trajectory_is_a_table_not_a_plot(make_report: Callable[..., Report]) -> None:
    one = render_html(make_report(trajectory=[{"step": 0, "sparsity": 0.5, "accuracy": 0.97}]))
    two = render_html(make_report())
    assert len(_images(two)) - len(_images(one)) == 1
    assert "Pruning trajectory" in one and "<td>0.97</td>" in one
