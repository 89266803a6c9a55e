"""``prunekit analyze MODEL``: per-layer parameters and MACs, and the prunable channel groups."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from prunekit.errors import InvalidParameterError

# Example input shapes for the built-in models, so `prunekit analyze digits_cnn` needs no flag.
_BUILTIN_SHAPES = {"digits_cnn": (1, 1, 8, 8), "mlp": (1, 64)}


def analyze(
    model: str = typer.Argument(..., help="Built-in model name or 'package.module:function'."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="Example input shape, e.g. 1,1,8,8."),
    weights: Optional[Path] = typer.Option(None, "--weights", help=".safetensors or .pt/.pth state dict."),
    groups: bool = typer.Option(True, "--groups/--no-groups", help="Also trace the model and list channel groups."),
) -> None:
    """Print each layer's parameters and MACs, then the channel groups pruning would cut together."""
    import torch
    from rich.console import Console

    from prunekit.evaluation.complexity import layer_table as complexity_rows
    from prunekit.recipes.loader import validate_section
    from prunekit.recipes.schema import ModelSpec
    from prunekit.recipes.sources import load_model
    from prunekit.reporting.tables import groups_table, layer_table

    fields = {"factory" if ":" in model else "builtin": model, "weights": str(weights) if weights else None}
    spec = validate_section(ModelSpec, fields, source="analyze", key="model")
    net = load_model(spec).eval()
    shape = parse_shape(input_shape) if input_shape else _BUILTIN_SHAPES.get(model)
    if shape is None:
        raise InvalidParameterError(f"model {model!r} has no known input shape; pass --input-shape, e.g. 1,3,224,224")
    x = torch.randn(*shape)  # (*shape)
    rows = complexity_rows(net, x)
    total = {"name": "total", "type": "", "params": sum(r["params"] for r in rows), "macs": sum(r["macs"] for r in rows)}
    console = Console()
    console.print(layer_table([*rows, total], title=f"{model}: layers (input {tuple(shape)})"))
    if groups:
        from prunekit.dependency import build_graph

        graph = build_graph(net, x)
        console.print(groups_table(graph.groups))


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,1,8,8' or '1x1x8x8' -> (1, 1, 8, 8); every dimension a positive integer."""
    compact = text.replace(" ", "")
    shape = tuple(int(p) for p in re.split(r"[,x]", compact)) if re.fullmatch(r"\d+([,x]\d+)*", compact) else ()
    if not shape or any(d < 1 for d in shape):
        raise InvalidParameterError(f"--input-shape must be positive integers like 1,1,8,8, got {text!r}")
    return shape
