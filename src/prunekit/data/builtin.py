"""Data sets that ship inside installed packages, so the demo and tests need no download."""

from __future__ import annotations

import numpy as np
import torch

from prunekit.data.bundle import DataBundle, split_tensors


def digits(*, batch_size: int = 64, seed: int = 0, calib_samples: int = 256) -> DataBundle:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes) as 1x8x8 images in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(data.target, dtype=torch.long)
    return split_tensors(x, y, name="digits", batch_size=batch_size, seed=seed, calib_samples=calib_samples)


def synthetic_regression(*, n: int = 512, features: int = 16, batch_size: int = 64, seed: int = 0) -> DataBundle:
    """A seeded linear-plus-noise regression set, for exercising the regression metrics."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    w = rng.normal(size=(features, 1)).astype(np.float32)
    y = x @ w + 0.1 * rng.normal(size=(n, 1)).astype(np.float32)
    return split_tensors(torch.from_numpy(x), torch.from_numpy(y), name="synthetic_regression",
                         task="regression", batch_size=batch_size, seed=seed)


BUILTIN_DATASETS = {"digits": digits, "synthetic_regression": synthetic_regression}
