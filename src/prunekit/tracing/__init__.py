"""Tracing: run a model once and show each tensor operation to a visitor."""

from prunekit.tracing.modes import training_mode
from prunekit.tracing.trace import call_model, iter_tensors, trace_ops

__all__ = ["call_model", "iter_tensors", "trace_ops", "training_mode"]
