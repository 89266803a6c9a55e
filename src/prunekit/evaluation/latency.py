"""Inference latency as prunekit reports it: ONNX Runtime (the deploy runtime) and PyTorch eager.

Machines drift: turbo clocks, other tenants, thermal throttling. Timing model A for a minute
and then model B for a minute measures the drift as much as the models. So every model is
measured in ONE process, ALTERNATING: each round runs one timed inference of every model, and
the order flips each round so no model always goes first (or always runs on a warm cache
right after the other). Medians over many runs resist the remaining outliers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from prunekit.errors import InvalidParameterError, SourceError

Timings = dict[str, dict[int, dict[str, float]]]


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads excluded), for intra-op threads.

    Read from ``/proc/cpuinfo`` (distinct ``physical id``/``core id`` pairs) and capped by the
    process's CPU affinity; falls back to ``os.cpu_count()`` where that file is missing.
    """
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return max(1, allowed)
    cores, physical = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            physical = value.strip()
        elif key.strip() == "core id":
            cores.add((physical, value.strip()))
    return max(1, min(len(cores) or allowed, allowed))


def alternating_timings(runners: Mapping[str, Callable[[], Any]], *, warmup: int, runs: int,
                        clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Time each runner ``runs`` times, interleaved, flipping the order every round.

    Round ``r`` calls the runners in their given order when ``r`` is even and in reverse when
    odd; the first ``warmup`` rounds are untimed. ``clock`` is injectable for tests.

    Returns
    -------
    dict[str, list[float]]
        Per runner, ``runs`` durations in seconds.
    """
    _check_counts(warmup=warmup, runs=runs)
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + runs):  # one counter, so the flip never skips at the warm-up boundary
        for name in names if round_ % 2 == 0 else names[::-1]:
            if round_ < warmup:
                runners[name]()
                continue
            start = clock()
            runners[name]()
            times[name].append(clock() - start)
    return times


def summarize(seconds: Sequence[float], *, batch_size: int) -> dict[str, float]:
    """``p25_ms``, ``p50_ms``, ``p75_ms``, ``p95_ms``, ``mean_ms``, ``throughput_per_s`` (samples/s at
    the median), ``runs``."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50 = float(np.percentile(ms, 50))
    return {
        "p25_ms": float(np.percentile(ms, 25)),
        "p50_ms": p50,
        "p75_ms": float(np.percentile(ms, 75)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "throughput_per_s": batch_size * 1e3 / p50 if p50 > 0 else float("inf"),
        "runs": len(ms),
    }


def onnx_latency(models: Mapping[str, str | Path], *, input_shape: Sequence[int],
                 batch_sizes: Sequence[int] = (1, 32), warmup: int = 10, runs: int = 50,
                 threads: int | None = None, seed: int = 0,
                 make_session: Callable[[str, Any], Any] | None = None, vocab_size: int | None = None) -> Timings:
    """ONNX Runtime CPU latency of several models, measured together and alternating.

    Parameters
    ----------
    models : dict[str, path]
        Name -> ONNX file. Each graph's first input gets the batch; it needs a dynamic batch
        axis for batch sizes other than its exported one.
    input_shape : sequence of int
        Shape of ONE sample, without the batch dimension (e.g. ``(1, 8, 8)``).
    batch_sizes, warmup, runs
        Every batch size is measured with ``warmup`` untimed and ``runs`` timed rounds.
    threads : int, optional
        ``intra_op_num_threads``; default :func:`physical_cores`. The session options come from
        :func:`prunekit.evaluation.measure.session_options`, the same as every speed decision.
    seed : int
        Seed of the random input batch (the same batch for every model).
    make_session : callable, optional
        ``(path, session_options) -> session`` with ORT's ``get_inputs``/``run``; default
        ``onnxruntime.InferenceSession`` on ``CPUExecutionProvider``. A seam for tests.
    vocab_size : int, optional
        For token models: a graph whose inputs are all int64 token inputs (``input_ids``,
        ``attention_mask``, ``token_type_ids``) is fed every one of them, ids below ``vocab_size``,
        with ``input_shape = (seq,)`` (see :mod:`prunekit.evaluation.token_latency`).

    Returns
    -------
    dict
        ``result[name][batch_size]`` -> :func:`summarize` of that model's runs.
    """
    import onnxruntime as ort

    from prunekit.evaluation.measure import MeasureSettings, session_options

    _check_models(models)
    _check_counts(warmup=warmup, runs=runs)
    options = session_options(MeasureSettings(threads=int(threads) if threads is not None else None))
    check_files = make_session is None
    if make_session is None:
        def make_session(path: str, opts: Any) -> Any:
            return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    sessions = {}
    for name, path in models.items():
        if check_files and not Path(path).is_file():
            raise SourceError(f"ONNX model '{name}' at '{path}' does not exist: export it first or fix the path")
        sessions[name] = make_session(str(path), options)
    result: Timings = {name: {} for name in models}
    for batch in _check_batches(batch_sizes):
        batch_np = np.random.default_rng(seed).standard_normal((batch, *input_shape))  # (B, *input_shape)
        runners = {}
        for name, session in sessions.items():
            first = session.get_inputs()[0]
            feed = _token_feed(name, session, batch, input_shape, vocab_size, seed)
            if feed is None:
                feed = {first.name: batch_np.astype(_ORT_DTYPES.get(first.type, np.float32))}
            try_once(lambda s=session, f=feed: s.run(None, f), name=name, where=f"batch size {batch}", fix=_BATCH_FIX)
            runners[name] = lambda s=session, f=feed: s.run(None, f)
        for name, seconds in alternating_timings(runners, warmup=warmup, runs=runs).items():
            result[name][batch] = summarize(seconds, batch_size=batch)
    return result


def torch_latency(models: Mapping[str, nn.Module], *, input_shape: Sequence[int],
                  batch_sizes: Sequence[int] = (1, 32), warmup: int = 10, runs: int = 50,
                  threads: int | None = None, seed: int = 0) -> Timings:
    """PyTorch eager CPU latency, measured like :func:`onnx_latency` (same result layout).

    Models run in eval mode under ``torch.inference_mode``; their training flags and the
    process's torch thread count are restored afterwards.
    """
    _check_models(models)
    _check_counts(warmup=warmup, runs=runs)
    previous_threads = torch.get_num_threads()
    flags = {name: model.training for name, model in models.items()}
    torch.set_num_threads(int(threads) if threads is not None else physical_cores())
    try:
        for model in models.values():
            model.eval()
        result: Timings = {name: {} for name in models}
        for batch in _check_batches(batch_sizes):
            generator = torch.Generator().manual_seed(seed)
            x = torch.randn((batch, *input_shape), generator=generator)  # (B, *input_shape)
            runners = {}
            for name, model in models.items():
                runners[name] = torch_runner(model, x)
                try_once(runners[name], name=name, where=f"batch size {batch}", fix=_BATCH_FIX)
            for name, seconds in alternating_timings(runners, warmup=warmup, runs=runs).items():
                result[name][batch] = summarize(seconds, batch_size=batch)
        return result
    finally:
        torch.set_num_threads(previous_threads)
        for name, model in models.items():
            model.train(flags[name])


def speedup(baseline: Mapping[str, float] | float, candidate: Mapping[str, float] | float, *,
            stat: str = "p50_ms") -> float:
    """How many times faster ``candidate`` is than ``baseline`` (> 1 means faster).

    Each argument is a latency in ms or a :func:`summarize` dict (its ``stat`` is used).
    """
    base = float(baseline[stat]) if isinstance(baseline, Mapping) else float(baseline)
    cand = float(candidate[stat]) if isinstance(candidate, Mapping) else float(candidate)
    if cand <= 0:
        raise InvalidParameterError(f"speedup needs a positive candidate latency. Got {cand!r} ms instead.")
    return base / cand


def speedups(timings: Timings, *, baseline: str, stat: str = "p50_ms") -> dict[str, dict[int, float]]:
    """``speedup`` of every model against ``baseline`` at each batch size of a latency result."""
    if baseline not in timings:
        raise InvalidParameterError(
            f"The 'baseline' parameter of speedups must be one of {sorted(timings)}. Got {baseline!r} instead."
        )
    return {name: {batch: speedup(timings[baseline][batch], stats, stat=stat) for batch, stats in per_batch.items()}
            for name, per_batch in timings.items()}


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def _token_feed(name: str, session: Any, batch: int, input_shape: Sequence[int], vocab_size: int | None,
                seed: int) -> dict[str, np.ndarray] | None:
    """Token ids for a graph whose inputs are all int64 token inputs, else None (float feed)."""
    from prunekit.export.hf import TOKEN_INPUTS

    inputs = session.get_inputs()
    if not all(i.type == "tensor(int64)" and i.name in TOKEN_INPUTS for i in inputs):
        return None
    if vocab_size is None or len(input_shape) != 1:
        raise InvalidParameterError(
            f"model '{name}' takes token ids {[i.name for i in inputs]}: pass vocab_size=<tokenizer vocabulary> "
            f"and input_shape=(sequence_length,). Got vocab_size={vocab_size!r}, input_shape={tuple(input_shape)!r}.")
    from prunekit.evaluation.token_latency import token_feed

    return token_feed([i.name for i in inputs], batch, int(input_shape[0]), vocab_size=vocab_size, seed=seed)


def torch_runner(model: nn.Module, *args: Any, **kwargs: Any) -> Callable[[], Any]:
    """A no-argument call of ``model(*args, **kwargs)`` without autograd, for timing."""
    def run() -> Any:
        with torch.inference_mode():
            return model(*args, **kwargs)

    return run


def try_once(run: Callable[[], Any], *, name: str, where: str, fix: str) -> None:
    """Fail with the model's name and input before timing starts, not midway through the table."""
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - runtime errors of any kind become one message
        raise InvalidParameterError(f"model '{name}' failed at {where}: {type(exc).__name__}: {exc}; {fix}") from exc


_BATCH_FIX = "export it with a dynamic batch axis or choose other batch_sizes"


def _check_models(models: Mapping[str, Any]) -> None:
    if not models:
        raise InvalidParameterError("latency needs at least one model in 'models'. Got an empty mapping.")


def _check_batches(batch_sizes: Sequence[int]) -> list[int]:
    batches = list(batch_sizes)
    if not batches or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in batches):
        raise InvalidParameterError(
            f"The 'batch_sizes' parameter of latency must be a non-empty sequence of ints >= 1. Got {batch_sizes!r} instead."
        )
    return batches


def _check_counts(*, warmup: int, runs: int) -> None:
    if not isinstance(warmup, int) or warmup < 0:
        raise InvalidParameterError(f"The 'warmup' parameter of latency must be an int >= 0. Got {warmup!r} instead.")
    if not isinstance(runs, int) or runs < 1:
        raise InvalidParameterError(f"The 'runs' parameter of latency must be an int >= 1. Got {runs!r} instead.")
