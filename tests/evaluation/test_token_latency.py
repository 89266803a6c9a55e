"""Token-id latency: int64 feeds at (batch, seq) shapes, alternating models, medians and ratios."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunekit.errors import InvalidParameterError
from prunekit.evaluation.token_latency import (onnx_token_latency, shape_label, token_feed, token_latency, token_speedups,
                                               torch_token_latency)


def test_token_feed_is_int64_ids_below_vocab_with_full_mask() -> None:
    feed = token_feed(("input_ids", "attention_mask", "token_type_ids"), 4, 9, vocab_size=3000, seed=1)
    assert {k: (v.shape, v.dtype) for k, v in feed.items()} == {
        "input_ids": ((4, 9), np.int64), "attention_mask": ((4, 9), np.int64), "token_type_ids": ((4, 9), np.int64)}
    assert feed["input_ids"].min() >= 1000 and feed["input_ids"].max() < 3000  # above BERT's special ids
    assert (feed["attention_mask"] == 1).all() and (feed["token_type_ids"] == 0).all()
    small = token_feed(("input_ids",), 2, 50, vocab_size=10)["input_ids"]
    assert small.min() >= 5 and small.max() < 10  # tiny vocabularies: the upper half
    with pytest.raises(InvalidParameterError, match=r"also wants \['pixel_values'\]"):
        token_feed(("input_ids", "pixel_values"), 1, 4, vocab_size=10)


class _Input:
    def __init__(self, name: str) -> None:
        self.name = name


class _FakeSession:
    """Records the feed shapes it is run with; has the graph inputs a BERT export has."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.seen: list[dict[str, tuple]] = []

    def get_inputs(self) -> list[_Input]:
        return [_Input(n) for n in self.names]

    def run(self, _outputs, feed):  # noqa: ANN001 - ORT's signature
        self.seen.append({k: (v.shape, v.dtype) for k, v in feed.items()})
        return [np.zeros(1)]


def test_onnx_token_latency_feeds_each_model_its_inputs_at_each_shape() -> None:
    sessions = {"bert": _FakeSession(("input_ids", "attention_mask", "token_type_ids")),
                "roberta": _FakeSession(("input_ids", "attention_mask"))}
    result = onnx_token_latency({"bert": "b", "roberta": "r"}, vocab_size=500, shapes=((1, 32), (32, 8)),
                                warmup=1, runs=3, make_session=lambda path, _o: sessions["bert" if path == "b" else "roberta"])
    assert set(result["bert"]) == {"1x32", "32x8"} and result["bert"]["1x32"]["runs"] == 3
    assert len(sessions["bert"].seen) == 2 * (1 + 1 + 3)  # per shape: the check run, warm-up, timed runs
    assert sessions["bert"].seen[0]["token_type_ids"] == ((1, 32), np.int64)
    assert set(sessions["roberta"].seen[-1]) == {"input_ids", "attention_mask"}
    assert sessions["roberta"].seen[-1]["input_ids"] == ((32, 8), np.int64)
    assert result["bert"]["32x8"]["throughput_per_s"] == pytest.approx(32e3 / result["bert"]["32x8"]["p50_ms"])


def test_token_speedups_are_latency_ratios() -> None:
    timings = {"dense": {"1x32": {"p50_ms": 6.0}}, "pruned": {"1x32": {"p50_ms": 2.0}}}
    assert token_speedups(timings, baseline="dense") == {"dense": {"1x32": 1.0}, "pruned": {"1x32": 3.0}}
    with pytest.raises(InvalidParameterError, match="'baseline' parameter of token_speedups"):
        token_speedups(timings, baseline="int8")


@pytest.mark.parametrize("shapes", [(), ((1,),), ((0, 4),), ((1, 2.0),)])
def test_bad_shapes_are_rejected(shapes) -> None:  # noqa: ANN001
    with pytest.raises(InvalidParameterError, match="'shapes' parameter of token latency"):
        onnx_token_latency({"m": "x"}, vocab_size=10, shapes=shapes)


def test_torch_token_latency_runs_keyword_models_and_restores_state() -> None:
    class Bag(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.EmbeddingBag(50, 4)
            self.calls: list[tuple] = []

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            self.calls.append((tuple(input_ids.shape), self.training))
            return self.emb(input_ids, per_sample_weights=None) * attention_mask[:, :1]

    model = Bag().train()
    threads = torch.get_num_threads()
    result = torch_token_latency({"bag": model}, vocab_size=50, shapes=((2, 5),), warmup=0, runs=2, threads=1)
    assert result["bag"][shape_label((2, 5))]["runs"] == 2
    assert model.calls == [((2, 5), False)] * 3 and model.training
    assert torch.get_num_threads() == threads


def test_onnx_and_torch_models_are_timed_in_one_alternating_loop() -> None:
    order: list[str] = []

    class Session(_FakeSession):
        def run(self, _outputs, feed):  # noqa: ANN001
            order.append("onnx")
            return super().run(_outputs, feed)

    class Echo(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            order.append("torch")
            return input_ids * attention_mask

    result = token_latency(onnx={"ort": "x"}, torch_models={"eager": Echo()}, vocab_size=50, shapes=((1, 4),),
                           warmup=0, runs=2, threads=1, make_session=lambda _p, _o: Session(("input_ids",)))
    assert set(result) == {"ort", "eager"}
    assert order == ["onnx", "torch", "onnx", "torch", "torch", "onnx"]  # checks, then rounds flip the order
    with pytest.raises(InvalidParameterError, match=r"names \['m'\] twice"):
        token_latency(onnx={"m": "x"}, torch_models={"m": Echo()}, vocab_size=5)


def test_a_model_that_fails_at_a_shape_is_named_before_timing() -> None:
    class FixedLength(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return input_ids.float().view(input_ids.shape[0], 8)  # only sequence length 8 fits

    with pytest.raises(InvalidParameterError, match=r"model 'fixed' failed at \(batch, seq\)=\(2, 5\): RuntimeError: .*"
                                                    r"export it with dynamic batch and sequence axes"):
        torch_token_latency({"fixed": FixedLength()}, vocab_size=50, shapes=((2, 8), (2, 5)), warmup=0, runs=1, threads=1)
