"""The run folder's rules, piece by piece (the CLI-level cases are in tests/cli/fault_cases.py)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import pytest

from prunekit.errors import RecipeError
from prunekit.recipes.rundir import (MARKER, RunDir, RunDirError, RunLock, changed_keys, check_writable,
                                     is_disk_full, normalize_permissions, read_marker, recipe_fingerprint,
                                     translate_write_error)


def test_fingerprint_ignores_output_dir_and_sees_any_other_change():
    a = {"name": "x", "output_dir": "runs/a", "recovery": {"epochs": 4, "lr": 0.01}}
    b = {**a, "output_dir": "elsewhere"}
    c = {**a, "recovery": {"epochs": 2, "lr": 0.01}}
    assert recipe_fingerprint(a)[0] == recipe_fingerprint(b)[0]
    assert recipe_fingerprint(a)[0] != recipe_fingerprint(c)[0]
    assert changed_keys(recipe_fingerprint(a)[1], recipe_fingerprint(c)[1]) == "recovery.epochs 4 -> 2"


def test_marker_is_the_only_sign_of_a_run(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    assert read_marker(tmp_path) is None
    (tmp_path / MARKER).write_text(json.dumps({"prunekit": "0.1.0", "recipe_hash": "ab"}))
    assert read_marker(tmp_path)["recipe_hash"] == "ab"
    (tmp_path / MARKER).write_text("not json")
    assert read_marker(tmp_path) is None


def test_open_abandon_publish_cycle(tmp_path):
    out = tmp_path / "o"
    first = RunDir(out, "h1", {"a": 1})
    first.open()
    assert read_marker(first.work)["recipe_hash"] == "h1" and (tmp_path / "o.lock").exists()
    first.abandon()  # failed before any checkpoint: nothing left behind
    assert not first.work.exists() and not (tmp_path / "o.lock").exists()
    first.open()
    (first.work / "report.json").write_text("first")
    first.publish()
    assert (out / "report.json").read_text() == "first" and not (tmp_path / "o.lock").exists()
    second = RunDir(out, "h2", {"a": 2})
    second.open()
    assert any("moved to" in n for n in second.notes)
    (second.work / "report.json").write_text("second")
    second.publish()
    assert (out / "report.json").read_text() == "second"
    assert (tmp_path / "o.previous" / "report.json").read_text() == "first"


def test_resume_refuses_a_changed_recipe_and_names_the_key(tmp_path):
    out = tmp_path / "o"
    rd = RunDir(out, "h1", {"recovery.epochs": 4})
    rd.open()
    rd.lock.release()
    again = RunDir(out, "h2", {"recovery.epochs": 2}, resume=True)
    with pytest.raises(RecipeError, match=r"recipe changed .*recovery\.epochs 4 -> 2.*without --resume"):
        again.open()
    assert read_marker(rd.work)["recipe_hash"] == "h1"
    assert not (tmp_path / "o.lock").exists()  # a refused open releases the lock


def test_lock_names_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    path = tmp_path / "o.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "t0"}))
        with pytest.raises(RunDirError, match=rf"in use by another prunekit run \(pid {holder.pid} on "):
            RunLock(path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(path)
    lock.acquire()  # the holder is dead now: stale
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not path.exists()


def test_lock_of_another_host_is_never_stolen(tmp_path):
    path = tmp_path / "o.lock"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "t0"}))
    with pytest.raises(RunDirError, match="pid 1 on elsewhere.example"):
        RunLock(path).acquire()


def test_check_writable(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match=r"is under '.*f', which is a file"):
        check_writable(tmp_path / "f" / "sub" / "out")
    with pytest.raises(RunDirError, match="is a file"):
        check_writable(tmp_path / "f")
    check_writable(tmp_path / "new" / "deeper")  # creates nothing
    assert not (tmp_path / "new").exists()

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("prunekit.recipes.rundir.tempfile.mkstemp", refuse)
    with pytest.raises(RunDirError, match="read-only file system"):
        check_writable(tmp_path / "out")


def test_disk_full_is_recognised(tmp_path):
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 490"))
    assert not is_disk_full(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    err = translate_write_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert isinstance(err, RunDirError) and "disk full" in str(err) and "--resume" in str(err)
    assert translate_write_error(ValueError("x"), tmp_path) is None


def test_permissions_are_made_consistent(tmp_path):
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    os.chmod(tmp_path / "a", 0o600)
    normalize_permissions(tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    assert {oct((tmp_path / n).stat().st_mode & 0o777) for n in "ab"} == {oct(0o666 & ~mask)}


def test_out_under_folders_that_do_not_exist_yet(tmp_path):
    rd = RunDir(tmp_path / "a" / "b" / "run", "h", {})
    rd.open()
    (rd.work / "report.json").write_text("{}")
    rd.publish()
    assert read_marker(tmp_path / "a" / "b" / "run") is not None
    assert not (tmp_path / "a" / "b" / "run.lock").exists()


def test_only_one_of_many_racers_takes_over_a_stale_lock(tmp_path):
    import threading

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "o.lock"
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "t0"}))
    start, won, lost = threading.Barrier(8), [], []

    def race():
        lock = RunLock(path)
        start.wait()
        try:
            lock.acquire()
            won.append(lock)
        except RunDirError:
            lost.append(1)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7


def test_warnings_of_a_failed_run_are_printed_since_no_report_carries_them(tmp_path, monkeypatch):
    import io
    import warnings

    from rich.console import Console

    from prunekit.errors import PrunekitWarning
    from prunekit.recipes import runner
    from prunekit.recipes.loader import recipe_from_dict

    def warn_then_fail(self):
        warnings.warn("calibration used 3 batches, fewer than asked", PrunekitWarning)
        raise RuntimeError("boom")

    monkeypatch.setattr(runner._Run, "execute", warn_then_fail)
    buffer = io.StringIO()
    recipe = recipe_from_dict({"name": "t", "output_dir": str(tmp_path / "out"), "model": {"builtin": "mlp"},
                               "data": {"builtin": "digits"}})
    with pytest.raises(RuntimeError, match="boom"):
        runner.run_recipe(recipe, console=Console(file=buffer, width=200))
    assert "warning before the failure: calibration used 3 batches, fewer than asked" in buffer.getvalue()
    assert not (tmp_path / "out").exists()  # nothing that looks complete
