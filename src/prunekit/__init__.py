"""prunekit: compress PyTorch models (structural pruning, int8, distillation) with measured proof.

The public API, loaded lazily so ``import prunekit`` (and the CLI's ``--help``) stays fast::

    from prunekit import StructuredPruner, build_graph, apply_plan, finetune, quantize_for_deployment
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "build_graph": "prunekit.dependency",
    "DependencyGraph": "prunekit.dependency",
    "ChannelGroup": "prunekit.dependency",
    "PruningPlan": "prunekit.dependency",
    "register_elementwise": "prunekit.dependency",
    "apply_plan": "prunekit.pruning.surgery",
    "zero_plan": "prunekit.pruning.surgery",
    "save_pruned": "prunekit.pruning.surgery",
    "load_pruned": "prunekit.pruning.surgery",
    "save_pruned_pretrained": "prunekit.models.hf_pruned",
    "load_pruned_pretrained": "prunekit.models.hf_pruned",
    "export_token_model": "prunekit.export.hf",
    "token_latency": "prunekit.evaluation.token_latency",
    "StructuredPruner": "prunekit.pruning.pruner",
    "sensitivity_scan": "prunekit.pruning.sensitivity",
    "unstructured_masks": "prunekit.pruning.masking",
    "nm_masks": "prunekit.pruning.masking",
    "apply_masks": "prunekit.pruning.masking",
    "make_permanent": "prunekit.pruning.masking",
    "CRITERIA": "prunekit.importance",
    "finetune": "prunekit.training",
    "FinetuneConfig": "prunekit.training",
    "recalibrate_batchnorm": "prunekit.training",
    "quantize_for_deployment": "prunekit.quantization",
    "QuantSpec": "prunekit.quantization",
    "export_onnx": "prunekit.export.onnx",
    "count_macs": "prunekit.evaluation.complexity",
    "count_params": "prunekit.evaluation.complexity",
    "onnx_latency": "prunekit.evaluation.latency",
    "evaluate": "prunekit.evaluation.metrics",
    "load_recipe": "prunekit.recipes.loader",
    "run_recipe": "prunekit.recipes.runner",
    "Report": "prunekit.reporting.report",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
