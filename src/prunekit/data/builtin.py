"""Data sets that ship inside installed packages, so the demo and tests need no download."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from prunekit.data.bundle import DataBundle, split_tensors
from prunekit.errors import SourceError


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


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed), the format MNIST-style sets ship in."""
    import gzip

    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(*, batch_size: int = 128, seed: int = 0, calib_samples: int = 512, train_limit: int | None = None,
                  root: str | None = None) -> DataBundle:
    """Fashion-MNIST (60k/10k 28x28, MIT) from Debian's ``dataset-fashion-mnist`` package.

    The official 10k test split is kept as the test set; validation is cut from the training set.
    ``train_limit`` keeps only the first N (shuffled) training images, for quick runs.
    """
    folder = Path(root or os.environ.get("PRUNEKIT_FASHION_MNIST", FASHION_MNIST_DIR))
    files = {k: folder / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz"
             for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise SourceError(f"Fashion-MNIST files not found ({missing[0]}): install them with "
                          "'apt-get install dataset-fashion-mnist' or set PRUNEKIT_FASHION_MNIST to their folder")
    x = torch.from_numpy(_read_idx(files["train-images"]).astype(np.float32) / 255.0).unsqueeze(1)  # (60000, 1, 28, 28)
    y = torch.from_numpy(_read_idx(files["train-labels"]).astype(np.int64))
    if train_limit is not None:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:train_limit]
        x, y = x[keep], y[keep]
    xt = torch.from_numpy(_read_idx(files["t10k-images"]).astype(np.float32) / 255.0).unsqueeze(1)
    yt = torch.from_numpy(_read_idx(files["t10k-labels"]).astype(np.int64))
    return split_tensors(x, y, name="fashion_mnist", batch_size=batch_size, seed=seed, calib_samples=calib_samples,
                         val_fraction=0.1, test=(xt, yt))


BUILTIN_DATASETS = {"digits": digits, "synthetic_regression": synthetic_regression, "fashion_mnist": fashion_mnist}
