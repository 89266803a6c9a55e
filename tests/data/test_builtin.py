"""Built-in data: digits splits and the Fashion-MNIST reader (IDX files written here by hand)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from prunekit.data import digits
from prunekit.data.builtin import fashion_mnist
from prunekit.errors import SourceError


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_digits_splits_are_disjoint_and_cover_the_set():
    bundle = digits(seed=0)
    sizes = [len(bundle.train.dataset), len(bundle.val.dataset), len(bundle.test.dataset)]
    assert sum(sizes) == 1797 and sizes[2] == round(1797 * 0.2)
    assert tuple(bundle.example_input.shape) == (1, 1, 8, 8) and bundle.num_classes == 10


def test_fashion_mnist_reads_idx_files_and_keeps_the_official_test_split(tmp_path):
    rng = np.random.default_rng(0)
    train_x, test_x = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 256, (6, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_x)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_x)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(6) % 10)
    bundle = fashion_mnist(root=str(tmp_path), batch_size=4)
    assert len(bundle.test.dataset) == 6
    assert len(bundle.train.dataset) + len(bundle.val.dataset) == 20
    first = bundle.test.dataset[0][0]
    np.testing.assert_allclose(first.numpy()[0], test_x[0] / 255.0, atol=1e-6)


def test_fashion_mnist_missing_files_name_the_package(tmp_path):
    with pytest.raises(SourceError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(root=str(tmp_path))
