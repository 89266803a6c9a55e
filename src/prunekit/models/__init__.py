"""Built-in models."""

from prunekit.models.builtin import BUILTIN_MODELS, MLP, DigitsCNN, ResNet8

__all__ = ["BUILTIN_MODELS", "MLP", "DigitsCNN", "ResNet8"]
