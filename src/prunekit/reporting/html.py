"""A standalone report.html: tables plus matplotlib plots embedded as base64 PNG, no external assets.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly, never through
pyplot, so rendering a report neither needs a display nor touches a user's global plot state.
Every piece of text from the report is passed through ``html.escape``.
"""

from __future__ import annotations

import base64
import io
import json
from html import escape
from typing import Any, Sequence

from prunekit.reporting.format import fmt_cell, fmt_delta_pts, fmt_float, fmt_pct, summary_rows
from prunekit.reporting.report import Report

_DENSE, _COMPRESSED = "#8c8c8c", "#1f77b4"
_MAX_TABLE_ROWS = 200

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem;overflow-wrap:anywhere}
table{display:block;max-width:100%;overflow-x:auto}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1rem 0} th,td{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left} thead th{background:#f4f4f4}
.ok{color:#137333;font-weight:600} .bad{color:#b3261e;font-weight:600}
img{max-width:100%;display:block;margin:1rem 0} pre{background:#f7f7f7;padding:1rem;overflow:auto}
.warn{color:#8a5300}
"""


def render_html(report: Report) -> str:
    """Return the full HTML document for ``report``."""
    parts = [f"<h1>prunekit report: {escape(report.recipe_name)}</h1>", _verdict(report)]
    parts.append("<h2>Dense vs compressed</h2>")
    parts.append(_table(["metric", "dense", "compressed", "ratio / change"], summary_rows(report)))
    parts.append(_img(_comparison_png(report), "dense vs compressed: latency, MACs, parameters, size"))
    if report.deployment:
        parts.append("<h2>Deployment cost</h2>")
        parts.append(_dict_table(report.deployment))
    parts.append(_recovery(report))
    parts.append(_quantization(report))
    parts.append(_measurement(report))
    if report.trajectory:
        parts.append("<h2>Pruning trajectory</h2>")
        if len(report.trajectory) > 1:  # one step is a point, not a curve: the table says it all
            parts.append(_img(_trajectory_png(report.trajectory), "pruning trajectory"))
        parts.append(_dict_table(report.trajectory))
    if report.sensitivity:
        parts.append("<h2>Sensitivity</h2>")
        parts.append(_img(_sensitivity_png(report.sensitivity, report.sensitivity_metric), "sensitivity curves"))
    if report.layers:
        parts.append("<h2>Layers</h2>")
        if _has_channels(report.layers):
            parts.append(_img(_layers_png(report.layers), "channels per layer before and after"))
        parts.append(_dict_table(report.layers))
    if report.groups:
        parts.append("<h2>Channel groups</h2>")
        parts.append(_dict_table(report.groups))
    for title, items, cls in (("Notes", report.notes, ""), ("Warnings", report.warnings, "warn")):
        if items:
            lis = "".join(f"<li>{escape(str(i))}</li>" for i in items)
            parts.append(f"<h2>{title}</h2><ul class='{cls}'>{lis}</ul>")
    if report.artifacts:
        parts.append("<h2>Artifacts</h2>")
        parts.append(_table(["artifact", "path"], sorted(report.artifacts.items())))
    if report.recipe:
        parts.append("<h2>Recipe</h2><pre>" + escape(json.dumps(report.recipe, indent=2, default=str)) + "</pre>")
    body = "\n".join(p for p in parts if p)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>prunekit report: {escape(report.recipe_name)}</title><style>{_CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


def render_sensitivity_html(title: str, curves: dict[str, list[tuple[float, float]]], metric: str) -> str:
    """A standalone page for ``prunekit sensitivity``: the curves as a plot and as a table."""
    rows = [{"group": g, **{f"{r:g}": v for r, v in pts}} for g, pts in curves.items()]
    body = (f"<h1>{escape(title)}</h1><p class='sub'>{escape(metric)} with one group pruned at each ratio</p>"
            + _img(_sensitivity_png(curves, metric), "sensitivity curves") + _dict_table(rows))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def _verdict(report: Report) -> str:
    ok = report.accuracy_ok
    text = f"task: {escape(report.task)}"
    if ok is not None:
        delta = fmt_delta_pts(report.ratios()["accuracy_delta"])
        cls, word = ("ok", "kept") if ok else ("bad", "broke")
        text += (f" · <span class='{cls}'>accuracy change {escape(delta)}: {word} the recipe's limit of "
                 f"{escape(fmt_pct(report.max_accuracy_drop))}</span>")
    return f"<p class='sub'>{text}</p>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(fmt_cell(v))}</td>" for v in row) + "</tr>"
                   for row in rows[:_MAX_TABLE_ROWS])
    more = f"<p>… {len(rows) - _MAX_TABLE_ROWS} more rows in report.json</p>" if len(rows) > _MAX_TABLE_ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _dict_table(rows: Sequence[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return _table(columns, [[row.get(c) for c in columns] for row in rows])


def _recovery(report: Report) -> str:
    r = report.recovery
    stages = [("after pruning", r.after_pruning), ("after BN recalibration", r.after_bn_recalibration),
              ("after fine-tuning", r.after_finetune)]
    rows = [(name, fmt_pct(v)) for name, v in stages if v is not None]
    what = "linear-probe accuracy" if report.task == "embedding" else "accuracy"  # see the report's notes
    return "<h2>Recovery</h2>" + _table(["stage", what], rows) if rows else ""


def _quality(task: str):
    """What the int8 check scored for this task, and how to print it (see quality_score)."""
    if task == "embedding":
        return "mean cosine to the dense model", fmt_float
    if task == "causal_lm":  # scored as minus the loss, shown as the loss
        return "next-token loss", lambda v: fmt_float(None if v is None else -v)
    if task == "regression":
        return "R²", fmt_float
    return "accuracy", fmt_pct


def _quantization(report: Report) -> str:
    q = report.quantization
    if q is None:
        return ""
    name, show = _quality(report.task)
    rows = [("mode", q.mode), ("method", q.method), (f"float {name} (validation split)", show(q.float_accuracy)),
            (f"int8 {name} (validation split)", show(q.int8_accuracy)), ("chosen artifact", q.chosen_artifact), ("why", q.reason)]
    out = "<h2>Quantization</h2>" + _table(["item", "value"], rows)
    if q.float_layers:
        out += "<h3>Layers kept in float</h3>" + _table(["layer", "why"], sorted(q.float_layers.items()))
    return out


def _measurement(report: Report) -> str:
    """How timings were taken (shared by decisions and tables) and which data split each figure uses."""
    out = ""
    if report.measurement:
        out += "<h2>How it was measured</h2>" + _table(["setting", "value"], list(report.measurement.items()))
    if report.splits:
        out += "<h3>Data splits</h3>" + _table(["figure or split", "split / size"], list(report.splits.items()))
    return out


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{escape(alt)}' src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\">"


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _comparison_png(report: Report) -> bytes:
    """One small panel per quantity: dense and compressed bars in the quantity's own unit."""
    d, c = report.dense, report.compressed
    panels: list[tuple[str, float | None, float | None]] = [
        ("parameters", d.params, c.params), ("MACs", d.macs, c.macs),
        ("file size (KiB)", _kib(d.file_size_bytes), _kib(c.file_size_bytes)),
    ]
    panels += [(f"latency p50 bs={bs} (ms)", d.latency_ms.get(bs), c.latency_ms.get(bs))
               for bs in sorted(set(d.latency_ms) | set(c.latency_ms))]
    panels = [p for p in panels if p[1] is not None or p[2] is not None]
    fig = _figure(2.4 * len(panels), 2.8)
    for i, (title, dv, cv) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.bar(["dense", "compressed"], [dv or 0, cv or 0], color=[_DENSE, _COMPRESSED])
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        if dv and cv:
            ax.annotate(f"{dv / cv:.2f}×", xy=(1, cv), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _kib(value: int | None) -> float | None:
    return None if value is None else value / 1024


def _trajectory_png(trajectory: Sequence[dict[str, Any]]) -> bytes:
    """Accuracy (left axis) and the pruned quantity (right axis) against the step."""
    from matplotlib.ticker import MaxNLocator

    steps = [row.get("step", i) for i, row in enumerate(trajectory)]
    fig = _figure(6, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlabel("step")
    left = [k for k in ("accuracy", "loss") if any(k in row for row in trajectory)]
    for key, style in zip(left, ("o-", "s--")):
        ax.plot(steps, [row.get(key) for row in trajectory], style, label=key, color=_COMPRESSED if key == "accuracy" else "#d62728")
    ax.set_ylabel(" / ".join(left))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = ax.get_lines()
    right = next((k for k in ("macs", "params", "sparsity", "ratio") if any(k in row for row in trajectory)), None)
    if right is not None:
        twin = ax.twinx()
        handles += twin.plot(steps, [row.get(right) for row in trajectory], "^:", color=_DENSE, label=right)
        twin.set_ylabel(right)
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _sensitivity_png(curves: dict[str, list[tuple[float, float]]], metric: str) -> bytes:
    fig = _figure(6, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for name, points in curves.items():
        xs, ys = zip(*points) if points else ((), ())
        ax.plot(xs, ys, marker=".", label=name)
    ax.set_xlabel("fraction removed")
    ax.set_ylabel(metric)
    if len(curves) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _has_channels(layers: Sequence[dict[str, Any]]) -> bool:
    return all("before" in row and "after" in row for row in layers)


def _layers_png(layers: Sequence[dict[str, Any]]) -> bytes:
    names = [str(row.get("name", i)) for i, row in enumerate(layers)]
    fig = _figure(6, 0.6 + 0.28 * len(names))
    ax = fig.add_subplot(1, 1, 1)
    pos = range(len(names))
    ax.barh([p + 0.2 for p in pos], [row["before"] for row in layers], height=0.4, color=_DENSE, label="before")
    ax.barh([p - 0.2 for p in pos], [row["after"] for row in layers], height=0.4, color=_COMPRESSED, label="after")
    ax.set_yticks(list(pos), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("channels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
