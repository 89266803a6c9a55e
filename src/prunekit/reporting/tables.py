"""rich tables for the command line: the summary, a per-layer table and the channel groups."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from rich.markup import escape
from rich.table import Table

from prunekit.reporting.format import fmt_cell, summary_rows
from prunekit.reporting.report import Report


def summary_table(report: Report) -> Table:
    """Metric, dense, compressed and ratio (dense / compressed) or change, one row per measurement."""
    table = Table(title=f"{report.recipe_name}: dense vs compressed")
    table.add_column("metric")
    for name in ("dense", "compressed", "ratio"):
        table.add_column(name, justify="right")
    for row in summary_rows(report):
        table.add_row(*(escape(cell) for cell in row))  # "[p25–p75]" is text, not rich markup
    return table


def layer_table(rows: Sequence[Mapping[str, Any]], *, title: str = "layers") -> Table:
    """A table whose columns are the keys of ``rows`` (first-seen order); numbers right-aligned."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    table = Table(title=title)
    for col in columns:
        numeric = any(isinstance(row.get(col), (int, float)) and not isinstance(row.get(col), bool) for row in rows)
        table.add_column(str(col), justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(fmt_cell(row.get(col)) for col in columns))
    return table


def groups_table(groups: Sequence[Any], *, title: str = "channel groups") -> Table:
    """Channel groups (``ChannelGroup`` objects or dict rows): id, size, unit, state, member modules."""
    table = Table(title=title)
    for name, justify in (("group", "left"), ("units", "right"), ("unit", "left"), ("prunable", "left"),
                          ("members", "left")):
        table.add_column(name, justify=justify)
    for group in groups:
        if isinstance(group, Mapping):
            table.add_row(*(fmt_cell(group.get(k)) for k in ("group", "units", "unit", "prunable", "members")))
            continue
        state = "yes" if group.prunable else f"no: {group.reason}"
        modules = list(dict.fromkeys(s.module or "<root>" for s in group.slots))
        members = ", ".join(modules[:4]) + (f" (+{len(modules) - 4})" if len(modules) > 4 else "")
        table.add_row(group.id, f"{group.size:,}", group.unit, state, members)
    return table
