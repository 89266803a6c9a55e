"""recovery.dropout: every nn.Dropout at one rate inside the block, the old rates back after it."""

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.training.dropout import dropout_at, set_dropout


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 4), nn.Dropout(0.2)).train()


def test_rate_zero_makes_train_mode_deterministic_and_equal_to_eval():
    net, x = _net(), torch.randn(16, 8)
    with torch.no_grad():
        reference = net.eval()(x)
        net.train()
        assert not torch.equal(net(x), reference)  # dropout active
        with dropout_at(net, 0.0):
            torch.testing.assert_close(net(x), reference, rtol=0, atol=0)
        assert [m.p for m in net if isinstance(m, nn.Dropout)] == [0.5, 0.2]
        assert not torch.equal(net(x), reference)


def test_none_changes_nothing_and_rates_come_back_after_an_error():
    net = _net()
    with dropout_at(net, None):
        assert [m.p for m in net if isinstance(m, nn.Dropout)] == [0.5, 0.2]
    with pytest.raises(RuntimeError, match="boom"):
        with dropout_at(net, 0.1):
            assert [m.p for m in net if isinstance(m, nn.Dropout)] == [0.1, 0.1]
            raise RuntimeError("boom")
    assert [m.p for m in net if isinstance(m, nn.Dropout)] == [0.5, 0.2]


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_rate_out_of_range_is_named(rate):
    with pytest.raises(InvalidParameterError, match=rf"dropout rate must be in \[0, 1\), got {rate}"):
        set_dropout(_net(), rate)
