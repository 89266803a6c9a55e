"""Energy of inference: real hardware counters where the machine exposes them, else a labelled estimate.

Real counters: Intel/AMD RAPL package energy under ``/sys/class/powercap/intel-rapl:*/energy_uj``
(often readable by root only) and NVIDIA GPUs' total-energy counter through ``pynvml``. Both
measure the whole device, so other processes' work is included; the ``method`` text says so.

Without counters, the reading is an ESTIMATE and says so (``estimated=True``): this process's
CPU time (user + system, all threads) times an assumed power per busy core, by default
``DEFAULT_WATTS_PER_CORE`` = 10 W, a round figure for desktop and server cores at full load
(typically 5-15 W). It scales with work done, so it ranks models fairly, but its absolute
value is only as good as that assumption.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from prunekit.errors import InvalidParameterError

DEFAULT_WATTS_PER_CORE = 10.0
POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")  # top-level zones; subzones (":0:0") would double count


@dataclass(frozen=True)
class EnergyReading:
    """Energy used over a measured interval.

    Attributes
    ----------
    joules : float
    seconds : float
        Wall-clock duration of the interval.
    source : str
        ``"rapl"``, ``"nvml"``, ``"rapl+nvml"`` or ``"cpu-time-estimate"``.
    estimated : bool
        True when no hardware counter was read.
    method : str
        How the number was obtained, in words, with any assumption spelled out.
    """

    joules: float
    seconds: float
    source: str
    estimated: bool
    method: str


class EnergyMeter:
    """Context manager measuring the energy of the code inside it; the result is ``reading_``.

    Parameters
    ----------
    watts_per_core : float
        Assumed draw of one fully busy core, used only for the estimate.
    sysfs_root : path, optional
        Powercap folder holding the RAPL zones; default ``POWERCAP_ROOT``.
    use_nvml : bool
        Add NVIDIA GPU energy when ``pynvml`` imports and a GPU answers.

    Examples
    --------
    >>> with EnergyMeter() as meter:
    ...     _ = sum(range(1000))
    >>> meter.reading_.joules >= 0
    True
    """

    def __init__(self, *, watts_per_core: float = DEFAULT_WATTS_PER_CORE, sysfs_root: str | Path | None = None,
                 use_nvml: bool = True) -> None:
        self.watts_per_core = watts_per_core
        self.sysfs_root = sysfs_root
        self.use_nvml = use_nvml

    def __enter__(self) -> EnergyMeter:
        if not isinstance(self.watts_per_core, (int, float)) or not self.watts_per_core > 0:
            raise InvalidParameterError(
                f"The 'watts_per_core' parameter of EnergyMeter must be a positive number. Got {self.watts_per_core!r} instead."
            )
        root = Path(self.sysfs_root) if self.sysfs_root is not None else POWERCAP_ROOT
        self._rapl = _rapl_zones(root)
        self._rapl_start = {zone: _read_int(zone / "energy_uj") for zone in self._rapl}
        self._gpus = _nvml_handles() if self.use_nvml else []
        self._gpu_start = [_nvml_energy_mj(handle) for handle in self._gpus]
        self._cpu_start = time.process_time()
        self._wall_start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self._wall_start
        cpu_seconds = time.process_time() - self._cpu_start
        joules, sources, notes = 0.0, [], []
        if self._rapl:
            rapl_uj = sum(_delta_uj(zone, start) for zone, start in self._rapl_start.items())
            joules += rapl_uj / 1e6
            sources.append("rapl")
            names = ", ".join(zone.name for zone in self._rapl)
            notes.append(f"RAPL package energy counters ({names}) of the whole CPU, including other processes")
        if self._gpus:
            ends = [_nvml_energy_mj(handle) for handle in self._gpus]
            joules += sum(end - start for end, start in zip(ends, self._gpu_start) if end is not None) / 1e3
            sources.append("nvml")
            notes.append(f"NVML total-energy counter of {len(self._gpus)} GPU(s), including other processes")
        if sources:
            self.reading_ = EnergyReading(joules=joules, seconds=seconds, source="+".join(sources),
                                          estimated=False, method="measured: " + "; ".join(notes))
            return
        self.reading_ = EnergyReading(
            joules=cpu_seconds * self.watts_per_core, seconds=seconds, source="cpu-time-estimate", estimated=True,
            method=(f"ESTIMATE, not measured: no readable RAPL or NVML energy counter; process CPU time "
                    f"{cpu_seconds:.4f} s x {self.watts_per_core:g} W per busy core (assumed)"),
        )


def measure_energy(fn: Callable[[], Any], *, repeat: int = 1, watts_per_core: float = DEFAULT_WATTS_PER_CORE,
                   sysfs_root: str | Path | None = None, use_nvml: bool = True) -> EnergyReading:
    """Call ``fn`` ``repeat`` times inside one :class:`EnergyMeter` and return its reading."""
    if not isinstance(repeat, int) or repeat < 1:
        raise InvalidParameterError(f"The 'repeat' parameter of measure_energy must be an int >= 1. Got {repeat!r} instead.")
    with EnergyMeter(watts_per_core=watts_per_core, sysfs_root=sysfs_root, use_nvml=use_nvml) as meter:
        for _ in range(repeat):
            fn()
    return meter.reading_


def joules_per_1000_inferences(predict: Callable[[torch.Tensor], Any], example_batch: torch.Tensor, *, n: int = 100,
                               watts_per_core: float = DEFAULT_WATTS_PER_CORE, sysfs_root: str | Path | None = None,
                               use_nvml: bool = True) -> dict:
    """Energy per 1000 single-sample inferences, from ``n`` calls of ``predict(example_batch)``.

    One call on a batch of B samples counts as B inferences. Returns ``joules_per_1000``,
    ``inferences``, and the reading's ``joules``, ``seconds``, ``source``, ``estimated``, ``method``.
    """
    if not isinstance(n, int) or n < 1:
        raise InvalidParameterError(f"The 'n' parameter of joules_per_1000_inferences must be an int >= 1. Got {n!r} instead.")
    predict(example_batch)  # warm-up outside the meter: first-call allocations are not steady state
    reading = measure_energy(lambda: predict(example_batch), repeat=n, watts_per_core=watts_per_core,
                             sysfs_root=sysfs_root, use_nvml=use_nvml)
    inferences = n * int(example_batch.shape[0])
    return {"joules_per_1000": reading.joules / inferences * 1000, "inferences": inferences,
            "joules": reading.joules, "seconds": reading.seconds, "source": reading.source,
            "estimated": reading.estimated, "method": reading.method}


def alternating_energy(predictors: Mapping[str, Callable[[torch.Tensor], Any]], batches: Mapping[int, torch.Tensor], *,
                       rounds: int = 10, calls: int = 10, watts_per_core: float = DEFAULT_WATTS_PER_CORE,
                       sysfs_root: str | Path | None = None, use_nvml: bool = True,
                       meter: Callable[[], EnergyMeter] | None = None) -> dict[str, dict[int, dict]]:
    """Energy per sample of several models, metered in alternating turns at each batch size.

    Like latency, energy drifts with the machine (clock, temperature, other tenants): one model
    after the other would charge the drift to whichever ran second. Each round meters ``calls``
    calls of every model in turn, the order flipping every round, and the turns are summed.

    Returns ``result[name][batch]`` with ``mj_per_sample``, ``joules``, ``samples``,
    ``estimated`` and ``method`` (of the first turn: the same for every turn on one machine).
    ``meter`` builds the meter for one turn (a seam for tests).
    """
    for label, value in (("rounds", rounds), ("calls", calls)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidParameterError(f"The '{label}' parameter of alternating_energy must be an int >= 1. "
                                        f"Got {value!r} instead.")
    if not predictors or not batches:
        raise InvalidParameterError("alternating_energy needs at least one predictor and one batch size.")
    make = meter or (lambda: EnergyMeter(watts_per_core=watts_per_core, sysfs_root=sysfs_root, use_nvml=use_nvml))
    names = list(predictors)
    result: dict[str, dict[int, dict]] = {name: {} for name in names}
    for batch, x in batches.items():
        for name in names:
            predictors[name](x)  # warm-up outside the meter: first-call allocations are not steady state
        joules = {name: 0.0 for name in names}
        first: dict[str, EnergyReading] = {}
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                with make() as m:
                    for _ in range(calls):
                        predictors[name](x)
                joules[name] += m.reading_.joules
                first.setdefault(name, m.reading_)
        samples = rounds * calls * int(x.shape[0])
        for name in names:
            result[name][batch] = {"mj_per_sample": joules[name] / samples * 1e3, "joules": joules[name],
                                   "samples": samples, "estimated": first[name].estimated,
                                   "method": first[name].method}
    return result


def estimate_note(watts_per_core: float = DEFAULT_WATTS_PER_CORE) -> str:
    """The one note a report carries when its energy figures are estimates."""
    return (f"energy figures marked (estimate) are not measured: no readable RAPL or NVML counter on this machine; "
            f"they are this process's CPU time x {watts_per_core:g} W per busy core (assumed), which ranks models "
            f"by work done but is only as right as that wattage")


def _rapl_zones(root: Path) -> list[Path]:
    """Top-level RAPL zones whose counters can actually be read (psys dropped when packages exist)."""
    try:
        candidates = sorted(p for p in root.iterdir() if _PACKAGE_ZONE.match(p.name))
    except OSError:
        return []
    zones = [p for p in candidates if _read_int(p / "energy_uj") is not None]
    packages = [p for p in zones if _read_text(p / "name") != "psys"]
    return packages or zones


def _delta_uj(zone: Path, start: int) -> int:
    end = _read_int(zone / "energy_uj")
    if end is None:
        return 0
    if end < start:  # the counter wrapped past max_energy_range_uj
        end += _read_int(zone / "max_energy_range_uj") or 0
    return max(0, end - start)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # missing, a permission error (root-only since 2020 kernels), a directory
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _nvml_handles() -> list[Any]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        return [h for h in handles if _nvml_energy_mj(h) is not None]
    except Exception:  # noqa: BLE001 - no driver, no GPU, or energy counter unsupported (pre-Volta)
        return []


def _nvml_energy_mj(handle: Any) -> int | None:
    import pynvml

    try:
        return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    except Exception:  # noqa: BLE001 - pynvml raises NVMLError subclasses per cause
        return None
