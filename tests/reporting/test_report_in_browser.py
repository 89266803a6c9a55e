"""The HTML report as a reader sees it: opened in a real Chromium (Debian's), offline.

Skipped only where no Chromium or playwright is installed; ``scripts/setup.sh`` installs both.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from prunekit.reporting import Report
from prunekit.reporting.html import render_html

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")


def _open(path: Path, width: int = 1280) -> dict:
    """Load the page; return what a reader would hit: errors, requests, images, overflow, headings."""
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.resolve().as_uri())
            images = page.evaluate("Array.from(document.images).map(i => ({w: i.naturalWidth, h: i.naturalHeight, "
                                   "shown: i.getBoundingClientRect().width, right: i.getBoundingClientRect().right}))")
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
            summary_rows = page.evaluate("document.querySelector('table').rows.length")
        finally:
            browser.close()
    return {"errors": errors, "requests": requests, "images": images, "scroll_width": scroll_width,
            "headings": headings, "summary_rows": summary_rows}


def test_report_renders_offline_with_every_plot_decoded(make_report: Callable[..., Report], tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text(render_html(make_report()))
    seen = _open(path)
    assert seen["errors"] == []
    assert seen["requests"] == [path.resolve().as_uri()]  # nothing fetched: the report works offline
    assert len(seen["images"]) == 4
    for image in seen["images"]:  # decoded PNGs, drawn, inside the page
        assert image["w"] > 100 and image["h"] > 50 and image["shown"] > 100 and image["right"] <= 1280
    assert seen["scroll_width"] <= 1280  # no sideways scrolling on a laptop screen
    assert seen["headings"][:3] == ["Dense vs compressed", "Recovery", "Quantization"]
    assert seen["summary_rows"] == 9  # header + accuracy, F1, params, MACs, size, 2 latencies, energy


def test_wide_tables_and_plots_stay_inside_the_page(make_report: Callable[..., Report], tmp_path: Path) -> None:
    """A transformer's 48 layer rows and long module names must not push the page sideways."""
    layers = [{"name": f"model.encoder.layer.{i // 8}.attention.self.query_projection_{i}", "before": 384, "after": 192}
              for i in range(48)]
    path = tmp_path / "report.html"
    path.write_text(render_html(make_report(layers=layers, notes=["x" * 400])))
    seen = _open(path)
    assert seen["errors"] == []
    assert all(image["right"] <= 1280 for image in seen["images"])
    assert seen["scroll_width"] <= 1280
