"""prunekit: compress PyTorch models (structural pruning, int8, distillation) with measured proof."""

__version__ = "0.1.0"
