"""The run folder: what prunekit may create, move or delete, and nothing else.

A folder is a prunekit run only if it holds the marker file ``.prunekit-run.json`` that prunekit
writes when it creates the folder (prunekit version, recipe hash, the recipe itself). Never by a
file name a user may also have (``report.json``). So:

- ``<out>.partial`` (the work folder) is deleted or reused only if it carries the marker, or is empty;
- ``<out>`` and ``<out>.previous`` are moved or deleted only if they carry the marker;
- ``<out>.lock`` holds the pid, host and start time of the run writing ``<out>``; a second run
  into the same folder stops with an error naming the holder; a lock whose process is dead is stale.

Every check runs before any training, so a refused run costs nothing and touches nothing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from prunekit.errors import PrunekitError, RecipeError

MARKER = ".prunekit-run.json"
_IGNORED_KEYS = ("output_dir",)  # where a run is written does not change what it computes


class RunDirError(PrunekitError):
    """The output folder cannot be used as asked (not prunekit's, locked, not writable, disk full)."""


def recipe_fingerprint(recipe_dump: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(sha256 of the recipe without ``output_dir``, the flattened recipe it was computed from)."""
    flat = {k: v for k, v in _flatten(recipe_dump).items() if k.split(".")[0] not in _IGNORED_KEYS}
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
    return digest, flat


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker's content if ``folder`` is a prunekit run folder, else None."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "prunekit" in data and "recipe_hash" in data else None


def write_marker(folder: Path, recipe_hash: str, recipe: dict[str, Any]) -> None:
    from prunekit import __version__
    from prunekit.fileio import write_text_atomic

    write_text_atomic(folder / MARKER, json.dumps(
        {"prunekit": __version__, "recipe_hash": recipe_hash, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
         "recipe": recipe}, indent=1, default=str))


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def changed_keys(old: dict[str, Any], new: dict[str, Any], *, limit: int = 4) -> str:
    """'recovery.epochs 4 -> 2, pruning.target.ratio 0.5 -> 0.6' for the keys that differ."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    parts = [f"{k} {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in keys[:limit]]
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(parts) + more


# ---------------------------------------------------------------------------------------- writability
def check_writable(out: Path) -> None:
    """Fail now, with the reason, if ``out`` cannot be created or written (creates nothing)."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == out else f"is under '{probe}', which is a file"
        raise RunDirError(f"output folder '{out}' {where}; choose another folder with --out")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".prunekit-write-test-")
    except OSError as exc:
        raise RunDirError(f"cannot write under '{probe}' for output folder '{out}' ({describe_os_error(exc)}); "
                          f"choose a writable folder with --out") from None
    os.close(fd)
    os.unlink(tmp)
    if probe == out and not os.access(out.parent, os.W_OK):
        raise RunDirError(f"cannot replace output folder '{out}': its parent '{out.parent}' is not writable; "
                          f"choose another folder with --out")


def describe_os_error(exc: BaseException) -> str:
    """'disk full (No space left on device)', 'read-only file system', 'permission denied'..."""
    code = getattr(exc, "errno", None)
    names = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
             errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
    text = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{names[code]}: {text}" if code in names else str(text)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT, or torch's zip writer failing mid-file ('unexpected pos', 'file write failed')."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("unexpected pos" in text or "file write failed" in text
                                              or "No space left" in text)


def translate_write_error(exc: BaseException, work: Path) -> RunDirError | None:
    """A one-line error for a disk or permission fault raised while writing the run, else None."""
    if is_disk_full(exc):
        return RunDirError(f"disk full while writing the run under '{work}'; free some space and rerun with "
                           f"--resume (the previous complete run, if any, is untouched)")
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and exc.filename \
            and str(work) in str(exc.filename):
        return RunDirError(f"cannot write '{exc.filename}' ({describe_os_error(exc)}); choose a writable --out")
    return None


# ---------------------------------------------------------------------------------------------- lock
@dataclass
class RunLock:
    """An exclusive ``<out>.lock`` file (O_EXCL) holding pid, host and start time."""

    path: Path
    held: bool = False

    def acquire(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        with _folder_guard(self.path.parent):  # two runs taking over one stale lock cannot both win
            for _ in range(2):
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    holder = self._holder()
                    if holder is not None and _is_stale(holder):
                        self.path.unlink(missing_ok=True)  # its process is gone: a killed run
                        continue
                    raise RunDirError(self._busy_message(holder)) from None
                except OSError as exc:
                    raise RunDirError(f"cannot create lock file '{self.path}' ({describe_os_error(exc)}); "
                                      f"choose a writable folder with --out") from None
                with os.fdopen(fd, "w") as handle:
                    json.dump(info, handle)
                self.held = True
                return
            raise RunDirError(self._busy_message(self._holder()))

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _busy_message(self, holder: dict[str, Any] | None) -> str:
        out = self.path.with_suffix("") if self.path.suffix == ".lock" else self.path
        if holder is None:
            return (f"output folder '{out}' is locked by '{self.path}', which prunekit cannot read; if no run is "
                    f"writing there, delete that file, or choose another --out")
        return (f"output folder '{out}' is in use by another prunekit run (pid {holder.get('pid')} on "
                f"{holder.get('host')}, started {holder.get('started')}); wait for it to finish or choose another --out")


@contextlib.contextmanager
def _folder_guard(folder: Path) -> Iterator[None]:
    """An exclusive flock on the folder itself while a lock is taken (POSIX; elsewhere nothing)."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _is_stale(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False  # another machine's run: cannot tell, so never steal it
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# ------------------------------------------------------------------------------------------ the plan
@dataclass
class RunDir:
    """The folders of one run: ``out`` (published), ``work`` (``.partial``), ``previous``, ``lock``."""

    out: Path
    recipe_hash: str
    recipe_flat: dict[str, Any]
    resume: bool = False
    notes: list[str] = field(default_factory=list)
    resumed_from: str | None = None
    created_work: bool = False

    @property
    def work(self) -> Path:
        return self.out.with_name(self.out.name + ".partial")

    @property
    def previous(self) -> Path:
        return self.out.with_name(self.out.name + ".previous")

    @property
    def lock(self) -> RunLock:
        if not hasattr(self, "_lock"):
            self._lock = RunLock(self.out.with_name(self.out.name + ".lock"))
        return self._lock

    def check(self) -> None:
        """Refuse, before anything is written, every folder prunekit must not touch."""
        out, work, previous = self.out, self.work, self.previous
        check_writable(out)
        if out.exists():
            if not out.is_dir():
                raise RunDirError(f"output folder '{out}' is a file; choose another folder with --out")
            if read_marker(out) is None and not _is_empty_dir(out):
                raise RecipeError(f"output_dir '{out}' exists and is not a prunekit run (no {MARKER} in it); "
                                  f"prunekit never replaces it: choose another folder with --out (or delete it "
                                  f"yourself if it is a run from a prunekit older than the marker)")
            if previous.exists() and read_marker(previous) is None and not _is_empty_dir(previous):
                raise RunDirError(f"'{previous}' exists and is not a prunekit run, so the current run in '{out}' "
                                  f"cannot be moved aside there; move it away or choose another --out")
        if work.exists():
            if not work.is_dir() or (read_marker(work) is None and not _is_empty_dir(work)):
                raise RunDirError(f"'{work}' exists and is not a prunekit work folder (no {MARKER} in it); "
                                  f"prunekit never deletes it: move it away or choose another --out")
            marker = read_marker(work)
            if self.resume and marker is not None and marker["recipe_hash"] != self.recipe_hash:
                old = marker.get("recipe") or {}
                diff = changed_keys(old, self.recipe_flat) if old else "recipe hash differs"
                raise RecipeError(f"--resume: the recipe changed since the interrupted run in '{work}' ({diff}); "
                                  f"undo the change, or run without --resume to start fresh")

    def open(self, console: Any = None) -> None:
        """Take the lock, check, and create (or reuse, with ``resume``) the marked work folder."""
        check_writable(self.out)  # before the lock file, which needs the same folder
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create '{self.out.parent}' ({describe_os_error(exc)}); "
                              f"choose a writable --out") from None
        self.lock.acquire()
        try:
            self.check()
            work = self.work
            if self.out.exists() and read_marker(self.out) is not None:
                self.notes.append(f"the previous run in '{self.out}' is moved to '{self.previous}' when this run "
                                  f"succeeds" + (" (replacing the older run kept there)" if self.previous.exists() else ""))
            if work.exists() and self.resume and read_marker(work) is not None:
                self.resumed_from = describe_checkpoints(work)
                _say(console, f"resuming from '{work}': {self.resumed_from}")
                return
            if self.resume:
                _say(console, f"--resume: nothing to resume in '{work}'; starting a fresh run")
            elif work.exists() and has_checkpoints(work):
                _say(console, f"starting fresh: discarding the interrupted run's checkpoints in '{work}' "
                              f"(--resume would have continued it)")
            try:
                if work.exists():
                    shutil.rmtree(work)  # ours (marked) or empty, checked above
                work.mkdir(parents=True)
                self.created_work = True
                write_marker(work, self.recipe_hash, self.recipe_flat)
            except OSError as exc:
                shutil.rmtree(work, ignore_errors=True)
                raise translate_write_error(exc, work) or RunDirError(
                    f"cannot create '{work}' ({describe_os_error(exc)}); choose a writable --out") from None
        except BaseException:
            self.lock.release()
            raise

    def abandon(self) -> None:
        """After a failure: delete the work folder if it holds nothing worth resuming; release the lock."""
        try:
            work = self.work
            if work.is_dir() and read_marker(work) is not None and not has_checkpoints(work):
                shutil.rmtree(work, ignore_errors=True)
        finally:
            self.lock.release()

    def publish(self, console: Any = None) -> None:
        """Move a previous run to ``.previous`` and the work folder to ``out``; release the lock."""
        try:
            out, work, previous = self.out, self.work, self.previous
            shutil.rmtree(work / "checkpoints", ignore_errors=True)  # only an interrupted run needs them
            normalize_permissions(work)
            if out.exists():
                if _is_empty_dir(out):
                    out.rmdir()
                elif read_marker(out) is not None:
                    if previous.exists():
                        if read_marker(previous) is None and not _is_empty_dir(previous):
                            raise RunDirError(f"'{previous}' is not a prunekit run; the new run stays in '{work}'")
                        shutil.rmtree(previous)
                    out.rename(previous)
                    _say(console, f"moved the previous run from '{out}' to '{previous}'")
                else:
                    raise RunDirError(f"'{out}' is not a prunekit run; the new run stays in '{work}'")
            work.rename(out)
        finally:
            self.lock.release()


def has_checkpoints(work: Path) -> bool:
    from prunekit.training.checkpoint import latest_checkpoint

    root = work / "checkpoints"
    return root.is_dir() and any(latest_checkpoint(stage) is not None for stage in root.iterdir() if stage.is_dir())


def describe_checkpoints(work: Path) -> str:
    """'baseline epoch 3, recovery epoch 1' from the newest checkpoint of each fine-tune."""
    from prunekit.training.checkpoint import latest_checkpoint

    root = work / "checkpoints"
    found = []
    for stage in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        last = latest_checkpoint(stage)
        if last is not None:
            found.append(f"{stage.name} epoch {int(last.name.split('_')[1])}")
    return ", ".join(found) if found else "no finished epoch yet, so every stage starts over"


def normalize_permissions(root: Path) -> None:
    """Every file and folder of a run gets the same mode: 0666/0777 less the umask (temp files were 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    for path in [root, *root.rglob("*")]:
        try:
            if path.is_symlink():
                continue
            os.chmod(path, dir_mode if path.is_dir() else file_mode)
        except OSError:
            pass


def _say(console: Any, text: str) -> None:
    if console is not None:
        from rich.markup import escape

        console.print(f"[bold cyan]>[/bold cyan] {escape(text)}")
