from __future__ import annotations

import pytest
import torch

from prunekit.errors import InvalidParameterError, QuantizationError
from prunekit.quantization import (
    EntropyObserver,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    make_observer,
)


def test_minmax_over_batches_and_per_channel():
    obs = MinMaxObserver()
    obs.update(torch.tensor([1.0, -2.0]))
    obs.update(torch.tensor([5.0, 0.0]))
    lo, hi = obs.range()
    assert (lo.item(), hi.item()) == (-2.0, 5.0)
    per = MinMaxObserver(axis=1)
    per.update(torch.tensor([[1.0, -3.0], [2.0, 4.0]]))  # (N=2, C=2)
    lo, hi = per.range()
    assert lo.tolist() == [1.0, -3.0] and hi.tolist() == [2.0, 4.0]


def test_percentile_on_uniform_sample():
    torch.manual_seed(0)
    obs = PercentileObserver(percentile=99.0)
    obs.update(torch.rand(200_000) * 10)  # U(0, 10): 1st/99th percentiles are 0.1 and 9.9
    lo, hi = obs.range()
    assert lo.item() == pytest.approx(0.1, abs=0.02)
    assert hi.item() == pytest.approx(9.9, abs=0.02)


def test_percentile_on_gaussian_sample():
    torch.manual_seed(0)
    obs = PercentileObserver(percentile=99.9)
    obs.update(torch.randn(400_000))
    lo, hi = obs.range()
    assert hi.item() == pytest.approx(3.0902, abs=0.05)  # Phi^-1(0.999)
    assert lo.item() == pytest.approx(-3.0902, abs=0.05)


def test_mse_matches_analytic_gaussian_clipping():
    # optimal uniform-quantizer clipping of N(0, 1): ~2.55 sigma at 4 bits, ~3.9 sigma at 8 (Banner et al., ACIQ)
    torch.manual_seed(0)
    x = torch.randn(200_000)
    for bits, expected, tol in ((4, 2.55, 0.15), (8, 3.92, 0.3)):
        obs = MSEObserver(bits=bits)
        obs.update(x)
        lo, hi = obs.range()
        assert hi.item() == pytest.approx(expected, abs=tol)
        assert lo.item() == pytest.approx(-hi.item())


def test_mse_keeps_one_sided_tensors_one_sided():
    torch.manual_seed(0)
    obs = MSEObserver(bits=8)
    obs.update(torch.relu(torch.randn(50_000)))
    lo, hi = obs.range()
    assert lo.item() == 0.0 and 2.5 < hi.item() <= 4.5


def test_entropy_keeps_uniform_and_clips_heavy_tails():
    torch.manual_seed(0)
    uni = EntropyObserver()
    uni.update(torch.rand(100_000) * 4)
    assert uni.range()[1].item() == pytest.approx(4.0, rel=0.01)  # nothing to clip in a uniform
    lap = EntropyObserver()
    sample = torch.distributions.Laplace(0.0, 1.0).sample((200_000,))
    lap.update(sample)
    lo, hi = lap.range()
    assert 6.0 < hi.item() < 0.85 * sample.abs().max().item()  # clips the tail, keeps the body
    assert lo.item() == pytest.approx(-hi.item())


def test_observer_errors():
    with pytest.raises(QuantizationError, match="no data"):
        MinMaxObserver().range()
    with pytest.raises(InvalidParameterError, match="percentile"):
        PercentileObserver(percentile=30.0)
    with pytest.raises(InvalidParameterError, match=r"unknown observer 'minmx' \(did you mean 'minmax'\?\)"):
        make_observer("minmx")
