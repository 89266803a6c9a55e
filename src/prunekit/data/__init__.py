"""Data sources: the DataBundle every stage consumes, and the built-in sets."""

from prunekit.data.builtin import BUILTIN_DATASETS, digits
from prunekit.data.bundle import DataBundle, split_tensors

__all__ = ["BUILTIN_DATASETS", "DataBundle", "digits", "split_tensors"]
