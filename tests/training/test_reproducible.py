"""Fixed threads + deterministic algorithms: the same weights whatever the ambient thread count."""

from __future__ import annotations

import pytest
import torch

from prunekit.data import digits
from prunekit.errors import InvalidParameterError
from prunekit.models import DigitsCNN
from prunekit.training import FinetuneConfig, finetune
from prunekit.training.reproducible import reproducible


def _train(ambient_threads: int) -> dict[str, torch.Tensor]:
    previous = torch.get_num_threads()
    torch.set_num_threads(ambient_threads)
    try:
        torch.manual_seed(0)
        model, data = DigitsCNN(width=8), digits(batch_size=64, seed=0)
        with reproducible(1):
            assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
            finetune(model, data.train, None, config=FinetuneConfig(epochs=1, seed=0))
        assert torch.get_num_threads() == ambient_threads  # restored
        return {k: v.clone() for k, v in model.state_dict().items()}
    finally:
        torch.set_num_threads(previous)


def test_training_under_reproducible_ignores_the_ambient_thread_count():
    one, two = _train(1), _train(2)
    assert one.keys() == two.keys()
    for key in one:
        assert torch.equal(one[key], two[key]), key
    assert not torch.are_deterministic_algorithms_enabled()


def test_reproducible_checks_threads():
    with pytest.raises(InvalidParameterError, match="'threads' parameter of reproducible"):
        with reproducible(0):
            pass
