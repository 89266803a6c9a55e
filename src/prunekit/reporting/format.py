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
    threads = report.measurement.get("threads")
    spread = bool(d.latency_spread_ms or c.latency_spread_ms)
    for bs in sorted(set(d.latency_ms) | set(c.latency_ms)):
        label = f"latency p50{' [p25–p75]' if spread else ''}, batch {bs} (ms{f', {threads} threads' if threads else ''})"
        rows.append((label, _latency(d, bs), _latency(c, bs), fmt_ratio(r["latency"].get(bs))))
    estimate = " (estimate)" if d.energy_estimated or c.energy_estimated else ""
    if d.energy_mj_by_batch or c.energy_mj_by_batch:
        for bs in sorted(set(d.energy_mj_by_batch) | set(c.energy_mj_by_batch)):
            dv, cv = d.energy_mj_by_batch.get(bs), c.energy_mj_by_batch.get(bs)
            rows.append((f"energy per sample, batch {bs} (mJ){estimate}", fmt_float(dv), fmt_float(cv),
                         fmt_ratio(None if dv is None or not cv else dv / cv)))
    elif d.energy_mj is not None or c.energy_mj is not None:
        rows.append((f"energy per sample (mJ){estimate}", fmt_float(d.energy_mj), fmt_float(c.energy_mj),
                     fmt_ratio(r["energy"])))
    t = report.target
    if t.get("asked") is not None:
        name = {"macs": "MACs", "params": "parameters"}.get(t.get("metric"), t.get("metric", "target"))
        rows.append((f"{name} removed: asked / reached", fmt_pct(t["asked"]),
                     fmt_pct(t.get("reached")), fmt_delta_pts(None if t.get("reached") is None
                                                             else t["reached"] - t["asked"])))
    return rows


def _latency(m: Any, batch: int) -> str:
    """``p50`` or ``p50 [p25–p75]`` when the spread was recorded."""
    p50 = m.latency_ms.get(batch)
    if p50 is None or batch not in m.latency_spread_ms:
        return fmt_float(p50)
    low, high = m.latency_spread_ms[batch]
    return f"{fmt_float(p50)} [{fmt_float(low, 3)}–{fmt_float(high, 3)}]"
