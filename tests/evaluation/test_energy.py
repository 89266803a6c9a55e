from __future__ import annotations

import sys
import types

import pytest
import torch

from prunekit.errors import InvalidParameterError
from prunekit.evaluation import energy
from prunekit.evaluation.energy import EnergyMeter, joules_per_1000_inferences, measure_energy


def _zone(root, name, *, energy_uj, max_uj=1_000_000_000, label="package-0"):
    zone = root / name
    zone.mkdir()
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (zone / "name").write_text(f"{label}\n")
    return zone


def _fake_process_time(monkeypatch, values):
    ticks = iter(values)
    monkeypatch.setattr(energy.time, "process_time", lambda: next(ticks))


def test_estimate_when_no_rapl_says_so_and_how(tmp_path, monkeypatch) -> None:
    _fake_process_time(monkeypatch, [1.0, 3.5])
    with EnergyMeter(sysfs_root=tmp_path, use_nvml=False) as meter:
        pass
    reading = meter.reading_
    assert reading.estimated and reading.source == "cpu-time-estimate"
    assert reading.joules == pytest.approx(2.5 * 10.0)  # CPU seconds x the default 10 W per busy core
    assert "ESTIMATE" in reading.method and "2.5000 s x 10 W per busy core (assumed)" in reading.method


def test_estimate_uses_the_given_watts(tmp_path, monkeypatch) -> None:
    _fake_process_time(monkeypatch, [0.0, 2.0])
    reading = measure_energy(lambda: None, sysfs_root=tmp_path / "absent", watts_per_core=4.5, use_nvml=False)
    assert reading.joules == pytest.approx(9.0) and "4.5 W" in reading.method


def test_rapl_counters_sum_packages_handle_wraparound_and_skip_subzones(tmp_path) -> None:
    p0 = _zone(tmp_path, "intel-rapl:0", energy_uj=1_000_000)
    p1 = _zone(tmp_path, "intel-rapl:1", energy_uj=999_500_000, label="package-1")
    core = _zone(tmp_path, "intel-rapl:0:0", energy_uj=0, label="core")  # part of package 0
    with EnergyMeter(sysfs_root=tmp_path, use_nvml=False) as meter:
        (p0 / "energy_uj").write_text("3500000\n")  # +2.5 J
        (p1 / "energy_uj").write_text("1500000\n")  # wrapped: 0.5 J to the top + 1.5 J = 2.0 J
        (core / "energy_uj").write_text("900000000\n")
    reading = meter.reading_
    assert not reading.estimated and reading.source == "rapl"
    assert reading.joules == pytest.approx(4.5)
    assert "intel-rapl:0, intel-rapl:1" in reading.method and "other processes" in reading.method


def test_psys_zone_is_dropped_when_packages_exist(tmp_path) -> None:
    p0 = _zone(tmp_path, "intel-rapl:0", energy_uj=0)
    psys = _zone(tmp_path, "intel-rapl:1", energy_uj=0, label="psys")
    with EnergyMeter(sysfs_root=tmp_path, use_nvml=False) as meter:
        (p0 / "energy_uj").write_text("1000000\n")
        (psys / "energy_uj").write_text("5000000\n")
    assert meter.reading_.joules == pytest.approx(1.0)


def test_unreadable_rapl_counter_falls_back_to_estimate(tmp_path) -> None:
    zone = tmp_path / "intel-rapl:0"
    (zone / "energy_uj").mkdir(parents=True)  # reading it raises IsADirectoryError, like EACCES would
    reading = measure_energy(lambda: None, sysfs_root=tmp_path, use_nvml=False)
    assert reading.estimated and "no readable RAPL" in reading.method


def test_nvml_energy_counter(tmp_path, monkeypatch) -> None:
    readings = iter([1000, 1000, 3500])  # mJ: probe, start, end
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 1, nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetTotalEnergyConsumption=lambda handle: next(readings),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    reading = measure_energy(lambda: None, sysfs_root=tmp_path)
    assert reading.source == "nvml" and not reading.estimated
    assert reading.joules == pytest.approx(2.5) and "1 GPU(s)" in reading.method


def test_joules_per_1000_inferences_counts_samples(tmp_path, monkeypatch) -> None:
    calls = []
    _fake_process_time(monkeypatch, [0.0, 2.0])
    result = joules_per_1000_inferences(lambda x: calls.append(x.shape), torch.zeros(5, 3), n=4,
                                        sysfs_root=tmp_path, use_nvml=False)
    assert len(calls) == 1 + 4  # one warm-up outside the meter, then n measured calls
    assert result["inferences"] == 20
    assert result["joules"] == pytest.approx(20.0)
    assert result["joules_per_1000"] == pytest.approx(20.0 / 20 * 1000)
    assert result["estimated"] and "ESTIMATE" in result["method"]


def test_parameter_validation(tmp_path) -> None:
    with pytest.raises(InvalidParameterError, match="'repeat' parameter"):
        measure_energy(lambda: None, repeat=0)
    with pytest.raises(InvalidParameterError, match="'watts_per_core' parameter"):
        with EnergyMeter(watts_per_core=0):
            pass
    with pytest.raises(InvalidParameterError, match="'n' parameter"):
        joules_per_1000_inferences(lambda x: x, torch.zeros(1), n=0)


class _WorkMeter:
    """A meter whose joules are the 'work' done inside it (set by the fake predictors)."""

    work = 0.0

    def __enter__(self):
        self.start = _WorkMeter.work
        return self

    def __exit__(self, *exc):
        self.reading_ = energy.EnergyReading(joules=_WorkMeter.work - self.start, seconds=0.0,
                                             source="cpu-time-estimate", estimated=True, method="fake")


def test_alternating_energy_meters_turns_in_flipping_order_per_batch() -> None:
    order = []

    def predictor(name, joules_per_sample):
        def run(x):
            order.append(name)
            _WorkMeter.work += joules_per_sample * x.shape[0]
        return run

    preds = {"dense": predictor("dense", 0.004), "compressed": predictor("compressed", 0.001)}
    batches = {1: torch.zeros(1, 3), 8: torch.zeros(8, 3)}
    out = energy.alternating_energy(preds, batches, rounds=3, calls=2, meter=_WorkMeter)
    assert out["dense"][1]["mj_per_sample"] == pytest.approx(4.0)  # 0.004 J per sample = 4 mJ
    assert out["compressed"][8]["mj_per_sample"] == pytest.approx(1.0)
    assert out["dense"][8]["samples"] == 3 * 2 * 8 and out["dense"][8]["estimated"]
    # per batch: one warm-up call each, then rounds of 2 calls, the order flipping every round
    assert order[:2 + 6 * 2] == ["dense", "compressed"] + ["dense"] * 2 + ["compressed"] * 2 + \
        ["compressed"] * 2 + ["dense"] * 2 + ["dense"] * 2 + ["compressed"] * 2
    with pytest.raises(InvalidParameterError, match="'rounds' parameter of alternating_energy"):
        energy.alternating_energy(preds, batches, rounds=0)


def test_estimate_note_is_one_fixed_sentence() -> None:
    assert energy.estimate_note() == energy.estimate_note()
    assert "10 W per busy core (assumed)" in energy.estimate_note()
