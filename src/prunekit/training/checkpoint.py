"""Per-epoch checkpoints that let a killed fine-tune resume bit-for-bit.

A checkpoint is a directory ``epoch_NNNN`` holding ``model.safetensors`` (and ``best.safetensors``
when early stopping tracks a best state), ``state.pt`` (optimizer, scheduler, grad scaler, RNG
states and the shuffling generators' states; loadable with ``torch.load(weights_only=True)``) and
``meta.json`` (epoch, history, config). It is written under ``epoch_NNNN.tmp`` and renamed into
place, so a directory without the suffix is always complete.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from prunekit.errors import SourceError

_NAME = re.compile(r"^epoch_(\d{4,})$")


@dataclass(frozen=True)
class Checkpoint:
    """What ``load_checkpoint`` read: tensors by name, the training state and the JSON metadata."""

    path: Path
    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor] | None
    train_state: dict[str, Any]  # optimizer, scheduler, scaler, rng, generators
    meta: dict[str, Any]  # epoch, history, best_epoch, ...


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states in a ``weights_only``-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def _tensors_for_file(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous, unshared CPU copies (safetensors refuses tensors that share memory)."""
    out = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise SourceError(f"state entry '{name}' is a {type(value).__name__}, not a tensor: cannot save it as safetensors")
        out[name] = value.detach().to("cpu", copy=True).contiguous()
    return out


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(
    directory: str | Path,
    *,
    epoch: int,
    model_state: dict[str, torch.Tensor],
    train_state: dict[str, Any],
    meta: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``epoch`` (number of finished epochs) atomically; keep the newest ``keep``.

    Returns the final directory.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch_{epoch:04d}"
    tmp = root / f"epoch_{epoch:04d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a process killed while writing
    tmp.mkdir()
    files = [tmp / "model.safetensors", tmp / "state.pt", tmp / "meta.json"]
    save_file(_tensors_for_file(model_state), str(files[0]))
    if best_state is not None:
        files.append(tmp / "best.safetensors")
        save_file(_tensors_for_file(best_state), str(files[-1]))
    torch.save(train_state, files[1])
    files[2].write_text(json.dumps({**meta, "epoch": epoch}, indent=1))
    for path in files:
        _fsync(path)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoint directories under ``directory``, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found) if (p / "meta.json").is_file()]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint directory (safetensors + ``torch.load(weights_only=True)`` + JSON)."""
    path = Path(path)
    try:
        model_state = load_file(str(path / "model.safetensors"))
        best_file = path / "best.safetensors"
        best_state = load_file(str(best_file)) if best_file.is_file() else None
        train_state = torch.load(path / "state.pt", weights_only=True, map_location="cpu")
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, SafetensorError) as err:
        raise SourceError(f"checkpoint '{path}' cannot be read ({err}); delete it to resume from the one before") from None
    return Checkpoint(path=path, model_state=model_state, best_state=best_state, train_state=train_state, meta=meta)
