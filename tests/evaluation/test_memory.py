from __future__ import annotations

import pytest

from prunekit.errors import InvalidParameterError, SourceError
from prunekit.evaluation.memory import onnx_peak_memory

from .conftest import export_mlp


def test_peak_memory_of_a_tiny_model_is_positive(tiny_onnx) -> None:
    path, _ = tiny_onnx
    reading = onnx_peak_memory(path, input_shape=(6,), threads=1)
    assert reading.model_mb > 0 and reading.peak_mb > reading.baseline_mb > 10  # numpy + ORT import > 10 MiB
    assert reading.model_mb == pytest.approx(reading.peak_mb - reading.baseline_mb)


@pytest.mark.slow
def test_peak_memory_grows_with_the_weights(tmp_path, tiny_onnx) -> None:
    export_mlp(tmp_path / "big.onnx", in_features=1024, hidden=4096, out_features=2)  # 4.2M params = 16 MiB
    tiny = onnx_peak_memory(tiny_onnx[0], input_shape=(6,), threads=1)
    big = onnx_peak_memory(tmp_path / "big.onnx", input_shape=(1024,), threads=1)
    assert big.model_mb - tiny.model_mb > 12  # the 16 MiB of weights show up


def test_peak_memory_reports_a_failing_child_and_bad_arguments(tmp_path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(SourceError, match="failed with status 1"):
        onnx_peak_memory(broken, input_shape=(4,), threads=1)
    with pytest.raises(SourceError, match="does not exist"):
        onnx_peak_memory(tmp_path / "missing.onnx", input_shape=(4,))
    with pytest.raises(InvalidParameterError, match="'repeat' parameter"):
        onnx_peak_memory(broken, input_shape=(4,), repeat=0)


def test_peak_memory_worker_past_its_timeout_is_killed_and_reported(tiny_onnx) -> None:
    with pytest.raises(SourceError, match="timed out after 1.0 s"):
        onnx_peak_memory(tiny_onnx[0], input_shape=(6,), runs=10**9, threads=1, timeout_s=1.0)
