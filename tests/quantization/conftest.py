from __future__ import annotations

import pytest
import torch

from prunekit.data import digits
from prunekit.models import DigitsCNN


@pytest.fixture(scope="session")
def digits_data():
    return digits(batch_size=64, calib_samples=128)


@pytest.fixture(scope="session")
def trained_cnn(digits_data):
    """DigitsCNN(width=8) trained 2 epochs: ~90% accuracy, small enough for second-long tests."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = DigitsCNN(width=8)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(2):
        for x, y in digits_data.train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def calib_feeds(digits_data):
    return [{"input": x.numpy()} for x, _ in digits_data.calib]

