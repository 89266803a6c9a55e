"""Peak memory of inference, measured in a fresh process so nothing else is counted.

In-process numbers (``tracemalloc``, RSS deltas) miss native allocations or include whatever
the caller already holds. Here the model runs in a new Python process; the kernel records
that process's peak resident set (``ru_maxrss``). A second fresh process does only the imports
and allocates the input batch (the baseline); the difference is what the model itself costs:
its weights, the runtime's session and the activation buffers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from prunekit.errors import InvalidParameterError, SourceError
from prunekit.evaluation.latency import physical_cores

_WORKER = r"""
import json, sys
import numpy as np
import onnxruntime as ort
spec = json.loads(sys.argv[1])
x = np.random.default_rng(0).standard_normal(spec["shape"]).astype(np.float32)
if not spec["baseline"]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = spec["threads"]
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(spec["path"], sess_options=opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(spec["runs"]):
        session.run(None, {name: x})
"""

_LAUNCHER = r"""
import resource, subprocess, sys
try:
    done = subprocess.run([sys.executable, "-c", sys.argv[1], sys.argv[2]], timeout=float(sys.argv[3]))
except subprocess.TimeoutExpired:
    sys.exit(f"worker timed out after {sys.argv[3]} s")
if done.returncode:
    sys.exit(done.returncode)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@dataclass(frozen=True)
class MemoryReading:
    """Peak resident memory in MiB (2**20 bytes).

    Attributes
    ----------
    peak_mb : float
        Peak RSS of the process that loaded the model and ran inference.
    baseline_mb : float
        Peak RSS of the same process doing only the imports and the input allocation.
    model_mb : float
        ``peak_mb - baseline_mb``: memory attributable to the model (never below 0).
    """

    peak_mb: float
    baseline_mb: float
    model_mb: float


def onnx_peak_memory(path: str | Path, *, input_shape: Sequence[int], batch_size: int = 1, runs: int = 3,
                     threads: int | None = None, repeat: int = 1, timeout_s: float = 120.0) -> MemoryReading:
    """Peak memory of ONNX Runtime inference on one model, net of the runtime's import cost.

    Parameters
    ----------
    path : path
        The ONNX file; its first input receives a float32 batch.
    input_shape : sequence of int
        Shape of ONE sample, without the batch dimension.
    batch_size, runs : int
        Batch fed ``runs`` times (peak activations appear on the first run; more runs catch
        arena growth).
    threads : int, optional
        Intra-op threads, default :func:`~prunekit.evaluation.latency.physical_cores`.
    repeat : int
        Each process is started ``repeat`` times and the smallest peak kept, which drops
        one-off noise from the allocator without hiding real usage.
    timeout_s : float
        A worker running longer is killed and reported as a SourceError.

    Raises
    ------
    SourceError
        The file is missing or the child process failed (its stderr tail is in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"ONNX model '{path}' does not exist: export it first or fix the path")
    if not isinstance(repeat, int) or repeat < 1:
        raise InvalidParameterError(f"The 'repeat' parameter of onnx_peak_memory must be an int >= 1. Got {repeat!r} instead.")
    spec = {"path": str(path), "shape": [int(batch_size), *map(int, input_shape)], "runs": int(runs),
            "threads": int(threads) if threads is not None else physical_cores()}
    peak = min(_child_peak_bytes({**spec, "baseline": False}, timeout_s) for _ in range(repeat))
    base = min(_child_peak_bytes({**spec, "baseline": True}, timeout_s) for _ in range(repeat))
    mib = 2.0**20
    return MemoryReading(peak_mb=peak / mib, baseline_mb=base / mib, model_mb=max(0.0, (peak - base) / mib))


def _child_peak_bytes(spec: dict, timeout_s: float) -> int:
    """Run the worker under a small launcher and return the worker's peak RSS in bytes.

    On Linux a child's ``ru_maxrss`` starts at its parent's RSS at fork time, so a worker forked
    straight from this (large, torch-importing) process would report at least our size. The
    launcher is a bare interpreter; it forks the worker and prints
    ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, which then covers the worker alone.
    """
    command = [sys.executable, "-c", _LAUNCHER, _WORKER, json.dumps(spec), str(float(timeout_s))]
    try:  # the launcher kills its worker at timeout_s; this outer limit only guards the launcher
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s + 30)
    except subprocess.TimeoutExpired:
        raise SourceError(
            f"peak memory child for '{spec['path']}' ran past timeout_s={timeout_s}: raise it or use a smaller batch"
        ) from None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no stderr"]
        raise SourceError(f"peak memory child for '{spec['path']}' failed with status {done.returncode}: {tail[0]}")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return int(done.stdout.strip().splitlines()[-1]) * scale
