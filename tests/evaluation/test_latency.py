from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError, SourceError
from prunekit.evaluation.latency import (
    alternating_timings,
    onnx_latency,
    physical_cores,
    speedup,
    speedups,
    summarize,
    torch_latency,
)

from .conftest import export_mlp


def test_alternating_order_flips_each_round_and_warmup_is_untimed() -> None:
    calls, now = [], [0.0]
    cost = {"a": 0.001, "b": 0.003, "c": 0.010}

    def runner(name):
        def run():
            calls.append(name)
            now[0] += cost[name]
        return run

    times = alternating_timings({n: runner(n) for n in cost}, warmup=2, runs=3, clock=lambda: now[0])
    assert calls == list("abc" "cba" "abc" "cba" "abc")  # 2 warm-up rounds, then 3 timed ones
    assert {n: len(t) for n, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    for name, seconds in times.items():
        assert seconds == pytest.approx([cost[name]] * 3)


def test_summarize_statistics() -> None:
    stats = summarize([0.001, 0.002, 0.003, 0.004, 0.010], batch_size=8)
    assert stats["p50_ms"] == pytest.approx(3.0)
    assert stats["mean_ms"] == pytest.approx(4.0)
    assert stats["p95_ms"] == pytest.approx(np.percentile([1, 2, 3, 4, 10], 95))
    assert stats["throughput_per_s"] == pytest.approx(8 / 0.003)
    assert stats["runs"] == 5


class _FakeSession:
    def __init__(self, name: str, log: list, dtype: str = "tensor(float)") -> None:
        self.name, self.log, self.dtype = name, log, dtype

    def get_inputs(self):
        return [SimpleNamespace(name=f"in_{self.name}", type=self.dtype)]

    def run(self, outputs, feed):
        (array,) = feed.values()
        self.log.append((self.name, array.shape, array.dtype))
        return [array]


def test_onnx_latency_creates_sessions_once_with_identical_options_and_alternates() -> None:
    log, made = [], []

    def make_session(path, options):
        made.append((path, options))
        return _FakeSession(path, log)

    result = onnx_latency({"base": "base.onnx", "small": "small.onnx"}, input_shape=(3, 4), batch_sizes=(1, 5),
                          warmup=1, runs=4, threads=2, make_session=make_session)
    assert [p for p, _ in made] == ["base.onnx", "small.onnx"]
    assert made[0][1] is made[1][1] and made[0][1].intra_op_num_threads == 2
    assert made[0][1].inter_op_num_threads == 1
    per_batch = 2 + 2 * (1 + 4)  # one check call each, then warm-up and timed rounds
    assert len(log) == 2 * per_batch
    order = [name for name, _, _ in log[2:per_batch]]
    assert order == ["base.onnx", "small.onnx", "small.onnx", "base.onnx"] * 2 + ["base.onnx", "small.onnx"]
    assert {shape for _, shape, _ in log[:per_batch]} == {(1, 3, 4)} and log[-1][1] == (5, 3, 4)
    assert all(dtype == np.float32 for _, _, dtype in log)
    assert set(result) == {"base", "small"} and set(result["base"]) == {1, 5}
    assert set(result["small"][5]) == {"p50_ms", "p95_ms", "mean_ms", "throughput_per_s", "runs"}
    assert result["small"][5]["runs"] == 4


def test_onnx_latency_on_real_models(tmp_path) -> None:
    export_mlp(tmp_path / "wide.onnx", in_features=32, hidden=512, out_features=4)
    export_mlp(tmp_path / "narrow.onnx", in_features=32, hidden=8, out_features=4)
    result = onnx_latency({"wide": tmp_path / "wide.onnx", "narrow": tmp_path / "narrow.onnx"}, input_shape=(32,),
                          batch_sizes=(1, 4), warmup=1, runs=5, threads=1)
    for name in ("wide", "narrow"):
        for batch in (1, 4):
            stats = result[name][batch]
            assert 0 < stats["p50_ms"] <= stats["p95_ms"]
            assert stats["throughput_per_s"] == pytest.approx(batch * 1e3 / stats["p50_ms"])
    ratio = speedups(result, baseline="wide")
    assert ratio["wide"] == {1: 1.0, 4: 1.0}
    assert ratio["narrow"][4] == pytest.approx(result["wide"][4]["p50_ms"] / result["narrow"][4]["p50_ms"])


def test_onnx_latency_names_the_model_that_rejects_a_batch_size(tmp_path) -> None:
    export_mlp(tmp_path / "fixed.onnx", in_features=4, hidden=4, out_features=2, dynamic_batch=False)
    with pytest.raises(InvalidParameterError, match="model 'fixed' failed at batch size 3"):
        onnx_latency({"fixed": tmp_path / "fixed.onnx"}, input_shape=(4,), batch_sizes=(3,), warmup=0, runs=1)
    with pytest.raises(SourceError, match="'gone'.*does not exist"):
        onnx_latency({"gone": tmp_path / "gone.onnx"}, input_shape=(4,))


def test_torch_latency_restores_flags_and_threads() -> None:
    torch.manual_seed(0)
    models = {"a": nn.Sequential(nn.Linear(8, 8), nn.Dropout()).train(), "b": nn.Linear(8, 2).eval()}
    threads = torch.get_num_threads()
    result = torch_latency(models, input_shape=(8,), batch_sizes=(2,), warmup=0, runs=3, threads=1)
    assert models["a"].training and not models["b"].training
    assert torch.get_num_threads() == threads
    assert result["a"][2]["runs"] == 3 and result["b"][2]["p50_ms"] > 0


def test_speedup_and_validation() -> None:
    assert speedup({"p50_ms": 10.0}, {"p50_ms": 4.0}) == pytest.approx(2.5)
    assert speedup(9.0, {"p95_ms": 3.0, "p50_ms": 1.0}, stat="p95_ms") == pytest.approx(3.0)
    with pytest.raises(InvalidParameterError, match="positive candidate"):
        speedup(1.0, 0.0)
    with pytest.raises(InvalidParameterError, match="'baseline' parameter"):
        speedups({"a": {1: {"p50_ms": 1.0}}}, baseline="b")
    with pytest.raises(InvalidParameterError, match="'runs' parameter"):
        alternating_timings({"a": lambda: None}, warmup=0, runs=0)
    with pytest.raises(InvalidParameterError, match="'batch_sizes' parameter"):
        torch_latency({"a": nn.Identity()}, input_shape=(1,), batch_sizes=(0,))


def test_physical_cores_is_at_least_one() -> None:
    assert 1 <= physical_cores() <= (torch.multiprocessing.cpu_count() or 1)


class _TokenSession:
    def __init__(self, log: list) -> None:
        self.log = log

    def get_inputs(self):
        return [SimpleNamespace(name=n, type="tensor(int64)") for n in ("input_ids", "attention_mask")]

    def run(self, outputs, feed):
        self.log.append({k: (v.shape, v.dtype, int(v.min()), int(v.max())) for k, v in feed.items()})
        return [feed["input_ids"]]


def test_onnx_latency_feeds_token_graphs_every_token_input() -> None:
    log: list = []
    result = onnx_latency({"bert": "b.onnx"}, input_shape=(16,), batch_sizes=(1, 8), warmup=0, runs=2,
                          vocab_size=3000, make_session=lambda p, o: _TokenSession(log))
    assert set(result["bert"]) == {1, 8}
    ids_shape, ids_dtype, low, high = log[-1]["input_ids"]
    assert ids_shape == (8, 16) and ids_dtype == np.int64 and 1000 <= low and high < 3000
    assert log[-1]["attention_mask"] == ((8, 16), np.int64, 1, 1)
    with pytest.raises(InvalidParameterError, match=r"takes token ids \['input_ids', 'attention_mask'\]: pass vocab_size"):
        onnx_latency({"bert": "b.onnx"}, input_shape=(16,), batch_sizes=(1,), make_session=lambda p, o: _TokenSession([]))
