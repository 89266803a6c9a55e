"""Built-in models."""

from prunekit.models.builtin import BUILTIN_MODELS, MLP, DigitsCNN

__all__ = ["BUILTIN_MODELS", "MLP", "DigitsCNN"]
