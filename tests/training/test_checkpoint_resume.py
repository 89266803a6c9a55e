"""Kill a fine-tune mid-epoch with SIGKILL, resume it, and get the uninterrupted result exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

from prunekit.errors import SourceError
from prunekit.training import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint

from . import _resume_job

JOB = Path(__file__).with_name("_resume_job.py")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    # Hang at step 3 of epoch index 1: checkpoint epoch_0001 exists, epoch 2 is half done.
    proc = subprocess.Popen([sys.executable, str(JOB), str(ckpt), "1", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "HANGING", proc.stderr.read() if proc.poll() is not None else line
        assert [p.name for p in list_checkpoints(ckpt)] == ["epoch_0001"]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    resumed_model, resumed = _resume_job.run(str(ckpt), resume=True)
    assert resumed.resumed_from == 1
    assert latest_checkpoint(ckpt).name == "epoch_0003"

    fresh_model, fresh = _resume_job.run(None)
    assert resumed.resumed_from == 1 and fresh.resumed_from is None
    for name, value in fresh_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[name]), name
    drop = lambda h: (h.epoch, h.train_loss, h.val_loss, h.val_accuracy, h.lr)  # noqa: E731 - seconds differ
    assert [drop(h) for h in resumed.history] == [drop(h) for h in fresh.history]
    assert resumed.best_epoch == fresh.best_epoch


def test_resume_without_checkpoint_starts_fresh_and_matches(tmp_path: Path) -> None:
    model_a, result_a = _resume_job.run(str(tmp_path / "a"), resume=True)
    model_b, result_b = _resume_job.run(None)
    assert result_a.resumed_from is None
    assert all(torch.equal(v, model_b.state_dict()[k]) for k, v in model_a.state_dict().items())
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "a"))
    assert ckpt.meta["epoch"] == 3 and len(ckpt.meta["history"]) == 3
    assert len(list_checkpoints(tmp_path / "a")) == 2  # only the newest two are kept


def test_checkpoint_roundtrip_and_partial_write_is_ignored(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
    tied = {"a": state["w"], "b": state["w"]}  # shared memory must still save
    save_checkpoint(tmp_path, epoch=1, model_state=tied, train_state={"step": torch.tensor(5)}, meta={"x": 1})
    (tmp_path / "epoch_0002.tmp").mkdir()  # what a process killed while writing leaves behind
    (tmp_path / "epoch_0003").mkdir()  # a directory without meta.json is not complete either
    path = latest_checkpoint(tmp_path)
    assert path.name == "epoch_0001"
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt.model_state["a"], state["w"]) and torch.equal(ckpt.model_state["b"], state["w"])
    assert ckpt.train_state["step"].item() == 5 and ckpt.meta == {"x": 1, "epoch": 1}
    (path / "state.pt").write_bytes(b"garbage")
    with pytest.raises(SourceError, match="cannot be read"):
        load_checkpoint(path)


def test_checkpoint_keeps_torch_prune_state(tmp_path: Path) -> None:
    layer = nn.Linear(4, 3)
    prune.l1_unstructured(layer, "weight", amount=0.5)
    save_checkpoint(tmp_path, epoch=1, model_state=layer.state_dict(), train_state={}, meta={})
    other = nn.Linear(4, 3)
    prune.identity(other, "weight")
    other.load_state_dict(load_checkpoint(latest_checkpoint(tmp_path)).model_state)
    x = torch.randn(5, 4)
    assert torch.equal(other(x), layer(x))


def _tiny_finetune(ckpt: Path, *, epochs: int, lr: float, resume: bool, lr_key: str | None = None):
    from torch.utils.data import DataLoader, TensorDataset

    from prunekit.training import FinetuneConfig, finetune

    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.arange(32) % 2
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    config = FinetuneConfig(epochs=epochs, lr=lr, optimizer="sgd", checkpoint_dir=str(ckpt), lr_key=lr_key)
    return finetune(model, loader, None, config=config, resume=resume)


def test_resume_with_other_settings_is_refused_and_names_them(tmp_path: Path) -> None:
    from prunekit.errors import InvalidParameterError

    _tiny_finetune(tmp_path, epochs=3, lr=0.1, resume=False)
    with pytest.raises(InvalidParameterError, match=r"other settings \(epochs 3 -> 2\).*start fresh"):
        _tiny_finetune(tmp_path, epochs=2, lr=0.1, resume=True)
    assert _tiny_finetune(tmp_path, epochs=3, lr=0.1, resume=True, lr_key="recovery.lr").resumed_from == 3


def test_divergence_names_the_callers_key(tmp_path: Path) -> None:
    from prunekit.errors import PrunekitError

    with pytest.raises(PrunekitError, match=r"^recovery: the loss became (nan|inf) at step \d+; lower recovery\.lr "
                                            r"\(now 1e\+30\)$"):
        _tiny_finetune(tmp_path / "a", epochs=2, lr=1e30, resume=False, lr_key="recovery.lr")
    with pytest.raises(PrunekitError, match=r"lower FinetuneConfig\.lr \(now 1e\+30\) or set FinetuneConfig\.grad_clip"):
        _tiny_finetune(tmp_path / "b", epochs=2, lr=1e30, resume=False)
