"""Latency of token models (ONNX Runtime and PyTorch) at (batch x sequence) shapes, fed int64 token ids.

The float-input helpers in :mod:`prunekit.evaluation.latency` draw one random float batch; a text
model needs ``input_ids`` below its vocabulary, an all-ones ``attention_mask`` and (BERT)
``token_type_ids``, and its cost depends on the sequence length as much as on the batch. Models
are timed the same way: in one process, alternating, order flipped each round, medians.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import InvalidParameterError, SourceError
from prunekit.evaluation.latency import alternating_timings, physical_cores, summarize, torch_runner, try_once

Shape = tuple[int, int]
TokenTimings = dict[str, dict[str, dict[str, float]]]  # model -> "BxS" -> summarize() stats

DEFAULT_SHAPES: tuple[Shape, ...] = ((1, 32), (32, 32))


def shape_label(shape: Shape) -> str:
    """``(32, 128)`` -> ``"32x128"``: the key of a shape in a :data:`TokenTimings` result."""
    return f"{shape[0]}x{shape[1]}"


def token_feed(input_names: Sequence[str], batch: int, seq: int, *, vocab_size: int,
               seed: int = 0) -> dict[str, np.ndarray]:
    """Int64 numpy feed: random ids in ``[min(1000, vocab//2), vocab)``, all-ones mask, zero types.

    Unknown names are rejected, so a model with other inputs fails here, not mid-table.
    """
    from prunekit.export.hf import TOKEN_INPUTS, random_token_inputs

    unknown = [n for n in input_names if n not in TOKEN_INPUTS]
    if unknown:
        raise InvalidParameterError(f"token latency can feed {list(TOKEN_INPUTS)}; the model also wants {unknown}: "
                                    "time it with prunekit.quantization.speed.measure_latency and your own feeds")
    tensors = random_token_inputs(input_names, batch, seq, vocab_size=vocab_size, seed=seed)
    return {k: v.numpy() for k, v in tensors.items()}


def _check_shapes(shapes: Sequence[Shape]) -> list[Shape]:
    out = [tuple(s) for s in shapes]
    if not out or any(len(s) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in s)
                      for s in out):
        raise InvalidParameterError(
            f"The 'shapes' parameter of token latency must be a non-empty list of (batch, seq) int pairs >= 1. "
            f"Got {shapes!r} instead.")
    return out  # type: ignore[return-value]


def token_latency(*, onnx: Mapping[str, str | Path] | None = None, torch_models: Mapping[str, nn.Module] | None = None,
                  vocab_size: int, shapes: Sequence[Shape] = DEFAULT_SHAPES, warmup: int = 10, runs: int = 50,
                  threads: int | None = None, seed: int = 0, torch_inputs: Sequence[str] = ("input_ids", "attention_mask"),
                  make_session: Callable[[str, Any], Any] | None = None) -> TokenTimings:
    """CPU latency of token models at each (batch, seq): ONNX Runtime files and PyTorch modules in ONE loop.

    Every model is fed the same ids at a shape (ONNX graphs get the inputs they declare, torch
    modules ``torch_inputs`` as keywords) and timed alternating with all the others, so ORT
    fp32, ORT int8 and ``torch.ao`` int8 can be compared side by side. ORT sessions and torch
    use ``threads`` intra-op threads (default :func:`physical_cores`); torch's thread count and
    the modules' training flags are restored afterwards.

    Returns ``result[name]["BxS"]`` -> :func:`prunekit.evaluation.latency.summarize` stats
    (``throughput_per_s`` counts sequences).
    """
    onnx, torch_models = dict(onnx or {}), dict(torch_models or {})
    if not onnx and not torch_models:
        raise InvalidParameterError("token latency needs at least one model in 'onnx' or 'torch_models'. Got none.")
    clash = sorted(set(onnx) & set(torch_models))
    if clash:
        raise InvalidParameterError(f"token latency got the names {clash} twice: name ONNX and torch models apart")
    checked = _check_shapes(shapes)
    n_threads = int(threads) if threads is not None else physical_cores()
    sessions = _sessions(onnx, n_threads, make_session)
    previous = torch.get_num_threads()
    flags = {name: m.training for name, m in torch_models.items()}
    torch.set_num_threads(n_threads)
    try:
        result: TokenTimings = {name: {} for name in (*onnx, *torch_models)}
        for batch, seq in checked:
            runners: dict[str, Callable[[], Any]] = {}
            for name, session in sessions.items():
                feed = token_feed([i.name for i in session.get_inputs()], batch, seq, vocab_size=vocab_size, seed=seed)
                runners[name] = lambda s=session, f=feed: s.run(None, f)
            torch_feed = {k: torch.from_numpy(v) for k, v in
                          token_feed(torch_inputs, batch, seq, vocab_size=vocab_size, seed=seed).items()} if torch_models else {}
            for name, model in torch_models.items():
                model.eval()
                runners[name] = torch_runner(model, **torch_feed)
            for name, run in runners.items():
                try_once(run, name=name, where=f"(batch, seq)={(batch, seq)}",
                         fix="export it with dynamic batch and sequence axes (prunekit.export.hf.export_token_model)")
            for name, seconds in alternating_timings(runners, warmup=warmup, runs=runs).items():
                result[name][shape_label((batch, seq))] = summarize(seconds, batch_size=batch)
        return result
    finally:
        torch.set_num_threads(previous)
        for name, model in torch_models.items():
            model.train(flags[name])


def _sessions(paths: Mapping[str, str | Path], threads: int,
              make_session: Callable[[str, Any], Any] | None) -> dict[str, Any]:
    if not paths:
        return {}
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if make_session is None:
        def make_session(path: str, opts: Any) -> Any:
            if not Path(path).is_file():
                raise SourceError(f"ONNX model at '{path}' does not exist: export it first or fix the path")
            return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    return {name: make_session(str(p), options) for name, p in paths.items()}


def onnx_token_latency(models: Mapping[str, str | Path], **kwargs: Any) -> TokenTimings:
    """:func:`token_latency` of ONNX files only (same keyword arguments)."""
    if not models:
        raise InvalidParameterError("token latency needs at least one model in 'models'. Got an empty mapping.")
    return token_latency(onnx=models, **kwargs)


def torch_token_latency(models: Mapping[str, nn.Module], *, input_names: Sequence[str] = ("input_ids", "attention_mask"),
                        **kwargs: Any) -> TokenTimings:
    """:func:`token_latency` of PyTorch modules only, fed ``input_names`` as keywords."""
    if not models:
        raise InvalidParameterError("token latency needs at least one model in 'models'. Got an empty mapping.")
    return token_latency(torch_models=models, torch_inputs=input_names, **kwargs)


def token_speedups(timings: TokenTimings, *, baseline: str, stat: str = "p50_ms") -> dict[str, dict[str, float]]:
    """``baseline`` latency / model latency at every shape (> 1 means faster than the baseline)."""
    if baseline not in timings:
        raise InvalidParameterError(f"The 'baseline' parameter of token_speedups must be one of {sorted(timings)}. "
                                    f"Got {baseline!r} instead.")
    return {name: {shape: timings[baseline][shape][stat] / stats[stat] for shape, stats in per_shape.items()}
            for name, per_shape in timings.items()}
