"""Number formatting and the dense-vs-compressed summary rows, shared by the HTML and the CLI tables."""

from __future__ import annotations

from typing import Any

from prunekit.reporting.report import Report


def fmt_int(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def fmt_count(value: float | None) -> str:
    """Large counts with an SI suffix: 1234567 -> '1.23M'."""
    if value is None:
        return "—"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.2f}{suffix}"
    return f"{value:g}"


def fmt_bytes(value: int | None) -> str:
    if value is None:
        return "—"
    for limit, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= limit:
            return f"{value / limit:.2f} {suffix}"
    return f"{value} B"


def fmt_float(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def fmt_delta_pts(value: float | None) -> str:
    """An accuracy difference in percentage points, signed."""
    return "—" if value is None else f"{100 * value:+.2f} pts"


def fmt_cell(value: Any) -> str:
    """Any table cell: ints with separators, floats to 4 significant digits, the rest as text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_rows(report: Report) -> list[tuple[str, str, str, str]]:
    """(metric, dense, compressed, ratio or change) rows, in reading order."""
    d, c, r = report.dense, report.compressed, report.ratios()
    rows = []
    if d.accuracy is not None or c.accuracy is not None:
        rows.append(("accuracy", fmt_pct(d.accuracy), fmt_pct(c.accuracy), fmt_delta_pts(r["accuracy_delta"])))
    if d.f1_macro is not None or c.f1_macro is not None:
        rows.append(("macro F1", fmt_float(d.f1_macro), fmt_float(c.f1_macro), fmt_delta_pts(r["f1_delta"])))
    for name in sorted(set(d.task_metrics) | set(c.task_metrics)):
        rows.append((name, fmt_float(d.task_metrics.get(name)), fmt_float(c.task_metrics.get(name)), ""))
    rows.append(("parameters", fmt_int(d.params), fmt_int(c.params), fmt_ratio(r["params"])))
    rows.append(("MACs", fmt_count(d.macs), fmt_count(c.macs), fmt_ratio(r["macs"])))
    rows.append(("file size", fmt_bytes(d.file_size_bytes), fmt_bytes(c.file_size_bytes), fmt_ratio(r["file_size"])))
    for bs in sorted(set(d.latency_ms) | set(c.latency_ms)):
        rows.append((f"latency p50, batch {bs} (ms)", fmt_float(d.latency_ms.get(bs)), fmt_float(c.latency_ms.get(bs)),
                     fmt_ratio(r["latency"].get(bs))))
    if d.energy_mj is not None or c.energy_mj is not None:
        rows.append(("energy per sample (mJ)", fmt_float(d.energy_mj), fmt_float(c.energy_mj), fmt_ratio(r["energy"])))
    return rows
