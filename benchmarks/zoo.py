"""Prune every model family we can build offline by 30% and record what happened, per model.

For each model: build with random weights made to give outputs of order one (``order_one``:
BatchNorm statistics from random inputs, zero-initialised heads re-drawn), trace in eval and
train mode, prune 30% of every prunable group, check the pruned model runs with unchanged output
shapes in eval mode and runs a forward and a backward in train mode (auxiliary heads included),
check exact groups alone give zeroed == pruned (max abs diff divided by the output's own scale),
export the pruned model to ONNX (opset 17) and compare ONNX Runtime with PyTorch (same measure).

    .venv/bin/python benchmarks/zoo.py --source hf --markdown docs/zoo.md
    .venv-tv/bin/python benchmarks/zoo.py --source torchvision --markdown docs/zoo.md

(.venv-tv: ``bash scripts/setup_torchvision.sh``.)

The markdown file keeps one section per source between ``<!-- zoo:SOURCE -->`` markers, so the
two runs (two virtualenvs: torchvision needs another torch) fill one table each.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from models import HF_SPECS, build_hf, check_prune, order_one, output_scale, ratio_plan  # noqa: E402

from prunekit.dependency import build_graph  # noqa: E402
from prunekit.models.attention import split_attention  # noqa: E402
from prunekit.pruning.surgery import PruningVerificationError, apply_plan, drop_unverifiable  # noqa: E402
from prunekit.tracing import call_model, iter_tensors, training_mode  # noqa: E402


@dataclass
class Row:
    name: str
    status: str = "fail"  # "pass" | "fail" | "skip"
    reason: str = ""
    params_before: int = 0
    params_after: int = 0
    prunable: int = 0
    groups: int = 0
    exact_diff: float = math.nan  # max |zeroed - pruned| / max |output|
    onnx_diff: float = math.nan  # max |onnx - torch| / max |output|
    scale: float = math.nan  # max |output| of the dense model
    train: str = ""  # "fwd+bwd", "fwd" or "no": what verification ran in train mode
    seconds: float = 0.0


class FirstOutput(nn.Module):
    """Return the first floating tensor of a model's output (HF ModelOutput -> logits) for ONNX."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **kwargs: torch.Tensor) -> torch.Tensor:
        return next(t for t in iter_tensors(self.model(**kwargs)) if t.is_floating_point())


def run_one(name: str, build: Callable[[], tuple[nn.Module, Any]], *, ratio: float, onnx: bool) -> Row:
    row = Row(name)
    start = time.perf_counter()
    try:
        model, inputs = build()
        model, _ = split_attention(model)  # nn.MultiheadAttention -> separate projections (same function)
        row.params_before = sum(p.numel() for p in model.parameters())
        row.scale = output_scale(model, inputs)
        graph = build_graph(model, inputs)
        row.train = "no" if graph.train_output_shapes is None else "fwd+bwd" if graph.train_backward else "fwd"
        row.groups, row.prunable = len(graph.groups), len(graph.prunable_groups())
        plan = ratio_plan(graph, ratio)
        try:
            pruned, _ = apply_plan(model, graph, plan)  # verifies: runs, same output shapes
        except PruningVerificationError:  # as StructuredPruner does: leave whole what breaks the model
            plan, dropped = drop_unverifiable(model, graph, plan)
            pruned, _ = apply_plan(model, graph, plan)
            row.prunable -= len(dropped)
            row.reason = f"{len(dropped)} group(s) left whole, their cut breaks the model: {next(iter(dropped.values()))[:90]}"
        exact = [gid for gid in plan.removed if graph.group(gid).exact]
        if exact:  # relative to the output's own scale (no floor at 1: tiny outputs would make it vacuous)
            row.exact_diff = check_prune(model, inputs, ratio, exact_only=True, graph=graph,
                                         only=set(exact)).relative_diff
        row.params_after = sum(p.numel() for p in pruned.parameters())
        if onnx:
            row.onnx_diff = _onnx_check(pruned, inputs)
        problems = []
        if not 1e-2 < row.scale < 1e4:
            problems.append(f"output scale {row.scale:.1e}: the relative checks would be vacuous or meaningless")
        if row.train != "fwd+bwd":
            problems.append(f"train mode not fully verified ({graph.train_note[:80]})")
        if row.exact_diff > 1e-4:
            problems.append(f"zeroed vs pruned differ by {row.exact_diff:.2e} of the output scale")
        if row.params_after >= row.params_before:
            problems.append("no parameter removed" + (f": {_first_reason(graph)}" if graph.groups else ""))
        row.status = "fail" if problems else "pass"
        row.reason = "; ".join(problems + ([row.reason] if row.reason else []))
    except Exception as exc:  # noqa: BLE001 - a zoo row records any failure as data
        row.reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        if "--debug" in sys.argv:
            traceback.print_exc()
    row.seconds = time.perf_counter() - start
    return row


def _first_reason(graph) -> str:
    frozen = [g for g in graph.groups if not g.prunable and "model output" not in g.reason]
    return frozen[0].reason[:120] if frozen else "every group is frozen"


def _onnx_check(model: nn.Module, inputs: Any) -> float:
    from prunekit.export.onnx import export_onnx, verify_onnx

    wrapped = FirstOutput(model).eval() if isinstance(inputs, dict) else model.eval()
    with torch.no_grad():
        scale = max(float(t.abs().max()) for t in iter_tensors(call_model(wrapped, inputs)))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(wrapped, inputs, Path(tmp) / "m.onnx", dynamic_batch=False)
        # relative to the output's own scale: float32 rounding, not pruning
        return verify_onnx(wrapped, path, inputs, atol=1e-3 * scale) / scale


# ---------------------------------------------------------------------------------------- sources
def hf_models(names: list[str] | None) -> Iterator[tuple[str, Callable]]:
    for name in names or list(HF_SPECS):
        yield name, (lambda n=name: _build_hf(n))


def _build_hf(name: str) -> tuple[nn.Module, Any]:
    model, inputs = build_hf(name)
    return order_one(model, inputs), inputs


def torchvision_models(names: list[str] | None, *, size: int, max_params: int) -> Iterator[tuple[str, Callable]]:
    import torchvision

    for name in names or sorted(torchvision.models.list_models(module=torchvision.models)):
        yield name, (lambda n=name: _build_tv(n, size, max_params))


def _build_tv(name: str, size: int, max_params: int) -> tuple[nn.Module, torch.Tensor]:
    import torchvision

    kwargs: dict[str, Any] = {}
    if name.startswith("vit_"):  # torchvision ViT takes any multiple of its patch size
        patch = int(name.rsplit("_", 1)[1])
        kwargs["image_size"] = patch * max(2, -(-size // patch))
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    n = sum(p.numel() for p in model.parameters())
    if n > max_params:
        raise _Skip(f"{n / 1e6:.0f}M parameters > --max-params {max_params / 1e6:.0f}M")
    for side in (size, 96, 224, 299):  # smallest input the model accepts, in eval and in train mode
        x = torch.randn(2, 3, side, side)  # two: BatchNorm calibration and train mode need a batch
        try:
            with torch.no_grad():
                call_model(model, x)
                with training_mode(model):  # Inception's auxiliary head needs 299 pixels
                    call_model(model, x)
            return order_one(model, x), x
        except Exception:  # noqa: BLE001 - too small for this architecture: try a larger side
            continue
    raise RuntimeError("model does not run on 3x299x299 in both modes")


class _Skip(Exception):
    pass


# ---------------------------------------------------------------------------------------- report
def render(rows: list[Row], source: str) -> str:
    passed = sum(r.status == "pass" for r in rows)
    skipped = sum(r.status == "skip" for r in rows)
    lines = [f"<!-- zoo:{source} -->", f"### {source}: {passed} / {len(rows) - skipped} pass"
             + (f" ({skipped} skipped)" if skipped else ""), "",
             "| model | result | params before | params after | kept | groups prunable/total | output scale | train mode | exact diff | ONNX diff | s | reason |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        kept = f"{r.params_after / r.params_before:.0%}" if r.params_before and r.params_after else ""
        fmt = lambda v: "" if math.isnan(v) else f"{v:.1e}"  # noqa: E731
        lines.append(f"| {r.name} | {r.status} | {r.params_before:,} | {r.params_after:,} | {kept} | "
                     f"{r.prunable}/{r.groups} | {fmt(r.scale)} | {r.train} | {fmt(r.exact_diff)} | {fmt(r.onnx_diff)} | "
                     f"{r.seconds:.1f} | "
                     f"{r.reason.replace('|', '/')} |")
    lines.append(f"<!-- /zoo:{source} -->")
    return "\n".join(lines)


def write_section(path: Path, source: str, section: str) -> None:
    text = path.read_text() if path.exists() else "# Model zoo coverage\n"
    pattern = re.compile(rf"<!-- zoo:{source} -->.*?<!-- /zoo:{source} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["hf", "torchvision"], default="hf")
    parser.add_argument("--models", nargs="*", help="only these names")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--size", type=int, default=64, help="torchvision input side (the minimum is tried first)")
    parser.add_argument("--max-params", type=float, default=150e6, help="skip larger torchvision models")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--markdown", type=Path, help="write/replace this source's section in a markdown file")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = (hf_models(args.models) if args.source == "hf"
              else torchvision_models(args.models, size=args.size, max_params=int(args.max_params)))
    rows: list[Row] = []
    for name, build in models:
        row = run_one(name, build, ratio=args.ratio, onnx=not args.no_onnx)
        if row.reason.startswith("_Skip"):
            row.status, row.reason = "skip", row.reason.split(": ", 1)[1]
        rows.append(row)
        print(f"{name:28s} {row.status:4s} {row.params_before:>12,} -> {row.params_after:>12,} "
              f"groups {row.prunable}/{row.groups} scale {row.scale:.1e} train {row.train} "
              f"exact {row.exact_diff:.1e} onnx {row.onnx_diff:.1e} "
              f"{row.seconds:.1f}s {row.reason}", flush=True)
        if args.markdown:  # rewrite after every model so a long run leaves a partial table
            write_section(args.markdown, args.source, render(rows, args.source))
    print(render(rows, args.source).splitlines()[1])
    return 0 if all(r.status != "fail" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
