"""Perplexity in fixed windows: exact values for models whose predictions are known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.evaluation.perplexity import perplexity, windows


class Uniform(nn.Module):
    """Equal logits for every token: perplexity is the vocabulary size."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, self.vocab)


class NextIsPlusOne(nn.Module):
    """Puts probability p on token+1 (mod V) and spreads the rest: NLL is -log p where right."""

    def __init__(self, vocab: int, p: float) -> None:
        super().__init__()
        self.vocab, self.p = vocab, p
        self.dummy = nn.Linear(1, 1)

    def forward(self, ids: torch.Tensor):
        probs = torch.full((*ids.shape, self.vocab), (1 - self.p) / (self.vocab - 1))
        probs.scatter_(-1, ((ids + 1) % self.vocab).unsqueeze(-1), self.p)
        return type("Out", (), {"logits": probs.log()})()


def test_uniform_model_has_perplexity_equal_to_the_vocabulary() -> None:
    tokens = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(0))
    assert perplexity(Uniform(50), tokens, seq_len=64, batch_size=3) == pytest.approx(50.0, rel=1e-6)


def test_perplexity_is_exp_of_mean_nll_over_predicted_tokens() -> None:
    tokens = torch.arange(40) % 10  # always next = +1: every prediction right
    model = NextIsPlusOne(10, 0.8).train()
    assert perplexity(model, tokens, seq_len=8) == pytest.approx(1 / 0.8, rel=1e-6)
    assert model.training  # left as found
    tokens = torch.tensor([0, 1, 5, 6, 7, 3])  # windows [0 1 5] [6 7 3]: 1 right and 1 wrong in each
    nll = -(math.log(0.8) + math.log(0.2 / 9)) / 2
    assert perplexity(model, tokens, seq_len=3) == pytest.approx(math.exp(nll), rel=1e-6)


def test_windows_drop_the_tail_and_short_input_is_an_error() -> None:
    assert windows(torch.arange(10), 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(InvalidParameterError, match="at least seq_len=16 tokens. Got 10"):
        perplexity(Uniform(5), torch.arange(10), seq_len=16)
    with pytest.raises(InvalidParameterError, match="'seq_len' parameter of perplexity must be at least 2"):
        perplexity(Uniform(5), torch.arange(10), seq_len=1)
