"""The fault catalogue: bad inputs, output-folder faults, kills and resumes, each as one case.

Every case builds its own files in a fresh folder, runs the real CLI (in process through typer's
CliRunner, or as real processes where the fault needs them: a lock holder, Ctrl-C) and is judged
the same way by ``tests/cli/test_fault_catalogue.py`` and ``benchmarks/fault_catalogue.py``:

- **data lost**: a file that existed before (the user's, or a complete previous run) changed or vanished;
- **traceback**: a Python traceback reached the user, or an exception escaped the CLI;
- **wrong success**: exit 0 where the run must fail, or a success whose report hides what happened;
- **clean error**: the expected exit code and exactly one ``error:`` line matching the expected text;
- **unclear error**: any other failure (wrong code, several lines, a message that does not say it);
- **ok**: a case that must succeed did, and its checks held.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

BASE: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "model": {"builtin": "mlp", "kwargs": {"hidden": [16]}, "train_baseline": {"epochs": 1}},
    "data": {"builtin": "digits", "batch_size": 256},
    "pruning": {"target": {"ratio": 0.5}, "round_to": 1},
    "recovery": {"epochs": 0},
    "evaluation": {"batch_sizes": [1], "latency_runs": 2, "warmup_runs": 0, "energy": False, "memory": False,
                   "pytorch_latency": False, "max_accuracy_drop": None},
}


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    escaped: BaseException | None = None  # an exception that left the CLI (not SystemExit)


@dataclass
class Setup:
    args: list[str] = field(default_factory=list)
    protected: list[Path] = field(default_factory=list)  # files that must be byte-identical afterwards
    patches: list[tuple[Any, str, Any]] = field(default_factory=list)  # (object, attribute, replacement)
    check: Callable[[Outcome], str | None] | None = None  # extra check; returns what went wrong
    run: Callable[[], Outcome] | None = None  # a custom procedure (real processes) instead of `args`


@dataclass
class Case:
    name: str
    item: int  # the issue item it reproduces
    expect_exit: int
    expect: str  # regex the single error line (or, for a success, stdout) must match
    build: Callable[[Path], Setup]
    slow: bool = False


# ------------------------------------------------------------------------------------------- helpers
def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        if isinstance(value, dict) and value and isinstance(out.get(key), dict):  # {} replaces
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def write_recipe(folder: Path, extra: dict[str, Any] | None = None, name: str = "recipe.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(deep_merge(BASE, extra or {}), sort_keys=False))
    return path


def write_npz(folder: Path, *, n: int = 120, features: int = 64, label_max: int = 9, **bad: Any) -> str:
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(n, features)).astype(np.float32), "y": rng.integers(0, label_max + 1, size=n),
              "x_test": rng.normal(size=(30, features)).astype(np.float32), "y_test": rng.integers(0, 10, size=30)}
    arrays.update(bad)
    path = folder / "data.npz"
    np.savez(path, **arrays)
    return "data.npz"


def write_module(folder: Path, name: str, body: str) -> str:
    (folder / f"{name}.py").write_text(body)
    return name


def fake_previous_run(out: Path) -> list[Path]:
    """A complete earlier run: marker + report, as prunekit publishes them."""
    from prunekit.recipes.rundir import write_marker

    out.mkdir(parents=True)
    write_marker(out, "0" * 64, {"name": "earlier"})
    (out / "report.json").write_text('{"recipe_name": "earlier"}')
    return [out / "report.json", out / ".prunekit-run.json"]


def user_files(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_text(f"precious {n}")
    return [folder / n for n in names]


def run_args(recipe: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(recipe), "--out", str(out), *extra]


def report_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def _cli_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", COLUMNS="200")
    return env


def cli_process(args: list[str], **kw: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "prunekit.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_cli_env(), **kw)


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------- cases
def _partial_not_ours(tmp: Path) -> Setup:  # item 1
    out = tmp / "x" / "results"
    return Setup(run_args(write_recipe(tmp), out), user_files(tmp / "x" / "results.partial", "thesis.tex"))


def _user_folder_with_report(tmp: Path) -> Setup:  # item 2
    out = tmp / "x" / "results"
    return Setup(run_args(write_recipe(tmp), out), user_files(out, "report.json", "thesis.tex"))


def _previous_not_ours(tmp: Path) -> Setup:  # item 2: the .previous slot holds the user's folder
    out = tmp / "results"
    protected = fake_previous_run(out) + user_files(tmp / "results.previous", "report.json", "thesis.tex")
    return Setup(run_args(write_recipe(tmp), out), protected)


def _rerun_moves_previous_and_says_so(tmp: Path) -> Setup:  # item 2: the expected success
    out = tmp / "results"
    old = fake_previous_run(out)
    before = {p.name: p.read_bytes() for p in old}

    def check(o: Outcome) -> str | None:
        moved = tmp / "results.previous"
        if any((moved / name).read_bytes() != data for name, data in before.items() if (moved / name).exists()) \
                or not (moved / "report.json").exists():
            return "data lost: the previous run was not kept in results.previous"
        if not any("moved to" in n for n in report_of(out)["notes"]):
            return "wrong success: report.json does not say the previous run was moved"
        return None

    return Setup(run_args(write_recipe(tmp), out), check=check)


def _concurrent_runs(tmp: Path) -> Setup:  # item 3: two real processes into one --out
    out = tmp / "o"
    slow = write_recipe(tmp, {"model": {"kwargs": {"hidden": [256, 256]}, "train_baseline": {"epochs": 80}}},
                        name="slow.yaml")
    fast = write_recipe(tmp, {"name": "other"}, name="fast.yaml")
    lock = tmp / "o.lock"

    def run() -> Outcome:
        first = cli_process(run_args(slow, out))
        try:
            if not wait_for(lambda: lock.exists() or first.poll() is not None, 120):
                return Outcome(99, "", "first run never took the lock")
            second = invoke(run_args(fast, out))  # this process is the second run
            b_out, b_err = second.stdout, second.stderr
            still_running = first.poll() is None
            a_out, a_err = first.communicate(timeout=600)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        if not still_running:
            return Outcome(98, b_out, b_err + "\n(inconclusive: the first run ended before the second finished)")
        if first.returncode != 0 or report_of(out)["recipe_name"] != "tiny":
            return Outcome(97, b_out, b_err + f"\nfirst run broken (exit {first.returncode}): {a_err[-300:]}")
        pid = str(first.pid)
        if pid not in b_err:
            return Outcome(second.exit_code, b_out, b_err + "\n(the error does not name the holder's pid)")
        return Outcome(second.exit_code, b_out, b_err, second.escaped)

    return Setup(run=run)


def _stale_lock_is_taken_over(tmp: Path) -> Setup:  # item 3: a killed run's lock does not block forever
    out = tmp / "o"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp / "o.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}))

    def check(o: Outcome) -> str | None:
        return "the lock file was left behind" if (tmp / "o.lock").exists() else None

    return Setup(run_args(write_recipe(tmp), out), check=check)


def _resume_changed_recipe(tmp: Path) -> Setup:  # item 4
    from prunekit.recipes.loader import load_recipe
    from prunekit.recipes.rundir import RunDir, recipe_fingerprint

    recipe_path = write_recipe(tmp, {"recovery": {"epochs": 4}})
    out = tmp / "o"
    digest, flat = recipe_fingerprint(load_recipe(recipe_path).model_dump(mode="json"))
    rd = RunDir(out, digest, flat)
    rd.open()
    rd.lock.release()
    ckpt = rd.work / "checkpoints" / "recovery" / "epoch_0003"
    ckpt.mkdir(parents=True)
    (ckpt / "meta.json").write_text('{"epoch": 3}')
    return Setup(run_args(recipe_path, out, "--resume", "--set", "recovery.epochs=2"),
                 [ckpt / "meta.json", rd.work / ".prunekit-run.json"])


def _factory_models(tmp: Path, module: str) -> str:
    return write_module(tmp, module, (
        "import torch\nfrom torch import nn\n\n"
        "def flat_linear():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n\n"
        "def broken(width=8):\n    raise ValueError(f'width {width} is not supported')\n\n"
        "class Bessel(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.a = nn.Linear(64, 32)\n        self.b = nn.Linear(32, 10)\n"
        "    def forward(self, x):\n        h = torch.relu(self.a(x.flatten(1)))\n"
        "        return self.b(h + torch.special.bessel_j0(h))\n\n"
        "def bessel():\n    return Bessel()\n\n"
        "def data_broken(batch_size=64):\n    return [1, 2, 3][batch_size]\n"))


def _nothing_prunable(tmp: Path) -> Setup:  # item 5
    mod = _factory_models(tmp, "pk_nothing")
    recipe = write_recipe(tmp, {"model": {"builtin": None, "kwargs": {}, "factory": f"{mod}:flat_linear"}})
    return Setup(run_args(recipe, tmp / "o"), check=lambda o: "output folder created" if (tmp / "o").exists() else None)


def _nothing_prunable_allowed(tmp: Path) -> Setup:  # item 5: asked to continue, the report says so
    mod = _factory_models(tmp, "pk_nothing_ok")
    recipe = write_recipe(tmp, {"model": {"builtin": None, "kwargs": {}, "factory": f"{mod}:flat_linear"},
                                "pruning": {"allow_no_op": True}})

    def check(o: Outcome) -> str | None:
        if not any("removed nothing" in w for w in report_of(tmp / "o")["warnings"]):
            return "wrong success: report.json warnings do not say pruning removed nothing"
        if "warning:" not in o.stdout or "removed nothing" not in o.stdout:
            return "wrong success: the CLI summary does not show the warning"
        return None

    return Setup(run_args(recipe, tmp / "o"), check=check)


def _ratio_too_high(tmp: Path) -> Setup:  # item 6
    return Setup(run_args(write_recipe(tmp, {"pruning": {"target": {"ratio": 0.999}}}), tmp / "o"))


def _round_to_too_large(tmp: Path) -> Setup:  # item 7
    recipe = write_recipe(tmp, {"pruning": {"round_to": 1000000}})

    def check(o: Outcome) -> str | None:
        ok = any("round_to 1000000" in w for w in report_of(tmp / "o")["warnings"])
        return None if ok else "wrong success: round_to larger than every width is not in the report"

    return Setup(run_args(recipe, tmp / "o"), check=check)


def _python_warning_reaches_report(tmp: Path) -> Setup:  # item 5: a library warning lands in report.json
    mod = write_module(tmp, "pk_warn", (
        "import warnings\nfrom torch import nn\n\n"
        "class Loud(nn.Sequential):\n    def forward(self, x):\n"
        "        warnings.warn('input statistics look odd', UserWarning)\n        return super().forward(x)\n\n"
        "def build():\n    return Loud(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))\n"))
    recipe = write_recipe(tmp, {"model": {"builtin": None, "kwargs": {}, "factory": f"{mod}:build"}})

    def check(o: Outcome) -> str | None:
        ok = any("input statistics look odd" in w for w in report_of(tmp / "o")["warnings"])
        return None if ok else "wrong success: a warning raised during the run is missing from report.json"

    return Setup(run_args(recipe, tmp / "o"), check=check)


def _npz_case(extra_arrays: dict[str, Any], **npz_kw: Any) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        npz = write_npz(tmp, **npz_kw, **extra_arrays)
        recipe = write_recipe(tmp, {"data": {"builtin": None, "npz": npz}})
        return Setup(run_args(recipe, tmp / "o"), [tmp / npz],
                     check=lambda o: "left a .partial folder" if (tmp / "o.partial").exists() else None)
    return build


def _bad_lr(tmp: Path) -> Setup:  # item 8: divergence names the recipe key
    return Setup(run_args(write_recipe(tmp, {"model": {"train_baseline": {"lr": 1e30}}}), tmp / "o"))


def _example_shape_wrong(tmp: Path) -> Setup:  # items 8, 11
    return Setup(run_args(write_recipe(tmp, {"model": {"example_input_shape": [1, 3, 8, 8]}}), tmp / "o"))


def _model_factory_raises(tmp: Path) -> Setup:  # item 9
    mod = _factory_models(tmp, "pk_broken")
    recipe = write_recipe(tmp, {"model": {"builtin": None, "kwargs": {}, "factory": f"{mod}:broken"}})
    return Setup(run_args(recipe, tmp / "o"))


def _data_factory_raises(tmp: Path) -> Setup:  # item 9
    mod = _factory_models(tmp, "pk_data_broken")
    recipe = write_recipe(tmp, {"data": {"builtin": None, "factory": f"{mod}:data_broken"}})
    return Setup(run_args(recipe, tmp / "o"))


def _factory_module_syntax_error(tmp: Path) -> Setup:  # item 9
    write_module(tmp, "pk_syntax", "def build(:\n    pass\n")
    recipe = write_recipe(tmp, {"model": {"builtin": None, "kwargs": {}, "factory": "pk_syntax:build"}})
    return Setup(run_args(recipe, tmp / "o"))


def _out_under_file(tmp: Path) -> Setup:  # item 10
    protected = user_files(tmp, "afile")
    return Setup(run_args(write_recipe(tmp), tmp / "afile" / "out"), protected)


def _raise(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc
    return fail


def _unwritable(code: int, text: str) -> Callable[[Path], Setup]:
    """A read-only mount / a folder the user may not write: real chmod when not root, else injected."""
    def build(tmp: Path) -> Setup:
        import prunekit.recipes.rundir as rundir

        parent = tmp / "ro"
        parent.mkdir()
        protected = user_files(parent, "kept.txt")
        setup = Setup(run_args(write_recipe(tmp), parent / "out"), protected)
        if os.geteuid() != 0:
            parent.chmod(0o555)
            setup.check = lambda o: (parent.chmod(0o755), None)[1]
        else:  # root writes anywhere: inject the errno the kernel would return
            setup.patches.append((rundir.tempfile, "mkstemp", _raise(OSError(code, text, str(parent)))))
        return setup
    return build


def _disk_full(exc: BaseException, target: str) -> Callable[[Path], Setup]:
    """The disk fills while a checkpoint is written; the previous complete run must stay intact."""
    def build(tmp: Path) -> Setup:
        import prunekit.training.checkpoint as checkpoint

        out = tmp / "o"
        protected = fake_previous_run(out)
        obj = checkpoint.torch if target == "torch.save" else checkpoint
        attr = "save" if target == "torch.save" else "save_file"
        return Setup(run_args(write_recipe(tmp), out), protected, [(obj, attr, _raise(exc))])
    return build


def _unexportable_op(tmp: Path) -> Setup:  # item 11: found before training
    mod = _factory_models(tmp, "pk_bessel")
    recipe = write_recipe(tmp, {"model": {"builtin": None, "kwargs": {}, "factory": f"{mod}:bessel"}})
    return Setup(run_args(recipe, tmp / "o"),
                 check=lambda o: "trained before failing" if "training the dense baseline" in o.stdout else None)


def _dynamic_int8_on_mlp(tmp: Path) -> Setup:  # item 11
    recipe = write_recipe(tmp, {"quantization": {"mode": "dynamic"}})
    return Setup(run_args(recipe, tmp / "o"),
                 check=lambda o: "trained before failing" if "training the dense baseline" in o.stdout else None)


def _static_int8_nothing_quantizable(tmp: Path) -> Setup:  # item 11: a model of ops int8 cannot touch
    mod = write_module(tmp, "pk_trig", "import torch\nfrom torch import nn\n\nclass Trig(nn.Module):\n"
                       "    def forward(self, x):\n        s = torch.sin(x).sum(dim=(1, 2))\n"
                       "        return torch.cat([s, torch.cos(s)], 1)\n\ndef build():\n    return Trig()\n")
    recipe = write_recipe(tmp, {"model": {"builtin": None, "kwargs": {}, "factory": f"{mod}:build",
                                          "train_baseline": {"epochs": 0}},
                                "pruning": {"enabled": False}, "quantization": {"mode": "static"}})
    return Setup(run_args(recipe, tmp / "o"))


def _factory_next_to_recipe(tmp: Path) -> Setup:  # item 13: imports like weights resolve
    write_module(tmp, "pk_beside", "from torch import nn\n\ndef build():\n"
                 "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))\n")
    recipe = write_recipe(tmp, {"model": {"builtin": None, "kwargs": {}, "factory": "pk_beside:build"}})
    return Setup(run_args(recipe, tmp / "o"))


def _factory_missing_module(tmp: Path) -> Setup:  # item 13: the error says where modules are looked for
    recipe = write_recipe(tmp, {"model": {"builtin": None, "kwargs": {}, "factory": "pk_nowhere:build"}})
    return Setup(run_args(recipe, tmp / "o"))


def _debug_after_subcommand(tmp: Path) -> Setup:  # item 14
    bad = tmp / "bad.yaml"
    bad.write_text("name: t\nmodel: {builtin: mlp}\ndata: {builtin: digits}\npruning: {target: {ratio: 1.5}}\n")

    def check(o: Outcome) -> str | None:
        return None if type(o.escaped).__name__ == "RecipeFieldError" else "--debug after the command did not re-raise"

    return Setup(["validate", str(bad), "--debug"], check=check)


def _sensitivity_out(tmp: Path) -> Setup:  # item 14: --out and progress
    recipe = write_recipe(tmp)
    out = tmp / "sens"

    def check(o: Outcome) -> str | None:
        if not (out / "sensitivity.json").is_file():
            return "sensitivity --out ignored"
        return None if "[1/" in o.stdout else "no progress lines"

    return Setup(["sensitivity", str(recipe), "--out", str(out), "--ratios", "0.5", "--batches", "1"], check=check)


def _resume_says_where(tmp: Path) -> Setup:  # item 14: --resume with nothing to resume says so
    return Setup(run_args(write_recipe(tmp), tmp / "o", "--resume"))


def _consistent_permissions(tmp: Path) -> Setup:  # item 14
    out = tmp / "o"

    def check(o: Outcome) -> str | None:
        modes = {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()}
        return None if len(modes) == 1 else f"files have mixed modes {sorted(modes)}"

    return Setup(run_args(write_recipe(tmp, {"quantization": {"mode": "static", "calibration_samples": 64}}), out),
                 check=check)


def _unexpected_bug(tmp: Path) -> Setup:  # any unforeseen exception is one line, with --debug for details
    import prunekit.recipes.runner as runner

    return Setup(run_args(write_recipe(tmp), tmp / "o"),
                 patches=[(runner._Run, "train_baseline", _raise(ZeroDivisionError("division by zero")))],
                 check=lambda o: "left a .partial folder" if (tmp / "o.partial").exists() else None)


def _sigint_then_resume(tmp: Path) -> Setup:  # item 14: Ctrl-C says how to continue; --resume says from where
    out = tmp / "o"
    recipe = write_recipe(tmp, {"model": {"kwargs": {"hidden": [256, 256]}, "train_baseline": {"epochs": 40}}})
    first_ckpt = tmp / "o.partial" / "checkpoints" / "baseline" / "epoch_0001"

    def run() -> Outcome:
        proc = cli_process(run_args(recipe, out))
        try:
            if not wait_for(lambda: first_ckpt.exists() or proc.poll() is not None, 180):
                return Outcome(99, "", "no checkpoint appeared")
            if proc.poll() is not None:
                return Outcome(98, "", "the run ended before it could be interrupted")
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not (tmp / "o.partial").is_dir() or (tmp / "o.lock").exists():
            return Outcome(97, stdout, stderr + "\n(the checkpoints were not kept, or the lock was left)")
        resumed = subprocess.run([sys.executable, "-m", "prunekit.cli.main", *run_args(recipe, out, "--resume")],
                                 capture_output=True, text=True, env=_cli_env(), timeout=600)
        if resumed.returncode != 0 or "resuming from" not in resumed.stdout or "baseline epoch" not in resumed.stdout:
            return Outcome(96, resumed.stdout, stderr + f"\n(resume failed or was silent: {resumed.stderr[-300:]})")
        return Outcome(proc.returncode, stdout, stderr)

    return Setup(run=run)


def _out_is_a_file(tmp: Path) -> Setup:  # item 10
    return Setup(run_args(write_recipe(tmp), tmp / "results"), user_files(tmp, "results"))


def _partial_is_a_file(tmp: Path) -> Setup:  # item 1: a file named like the work folder
    return Setup(run_args(write_recipe(tmp), tmp / "results"), user_files(tmp, "results.partial"))


def _resume_into_foreign_partial(tmp: Path) -> Setup:  # items 1, 4: --resume never adopts a user's folder
    return Setup(run_args(write_recipe(tmp), tmp / "results", "--resume"),
                 user_files(tmp / "results.partial", "notes.md"))


def _resume_changed_width(tmp: Path) -> Setup:  # item 4: was a size-mismatch traceback
    setup = _resume_changed_recipe(tmp)
    setup.args = run_args(tmp / "recipe.yaml", tmp / "o", "--resume", "--set", "recovery.epochs=4",
                          "--set", "model.kwargs.hidden=[32]")
    return setup


def _lock_of_another_host(tmp: Path) -> Setup:  # item 3: never stolen, holder named
    lock = tmp / "o.lock"
    lock.write_text(json.dumps({"pid": 4242, "host": "gpu-node-7", "started": "2026-01-01 10:00:00"}))
    return Setup(run_args(write_recipe(tmp), tmp / "o"), [lock])


def _demo_into_user_folder(tmp: Path) -> Setup:  # item 2 through `prunekit demo`
    out = tmp / "mine"
    return Setup(["demo", "--fast", "--out", str(out)], user_files(out, "report.json", "thesis.tex"))


def _regression_nan_targets(tmp: Path) -> Setup:  # item 8
    rng = np.random.default_rng(0)
    y = rng.normal(size=(120, 1)).astype(np.float32)
    y[5, 0] = np.nan
    np.savez(tmp / "data.npz", x=rng.normal(size=(120, 64)).astype(np.float32), y=y)
    recipe = write_recipe(tmp, {"data": {"builtin": None, "npz": "data.npz", "task": "regression"},
                                "model": {"kwargs": {"hidden": [16], "num_classes": 1}}})
    return Setup(run_args(recipe, tmp / "o"), [tmp / "data.npz"])


def _factory_labels_out_of_range(tmp: Path) -> Setup:  # item 8 through a data factory (not .npz)
    mod = write_module(tmp, "pk_loaders", (
        "import torch\nfrom torch.utils.data import DataLoader, TensorDataset\n\n"
        "def loaders(batch_size=64):\n    g = torch.Generator().manual_seed(0)\n"
        "    x, y = torch.randn(64, 64, generator=g), torch.arange(64) % 12\n"
        "    ds = TensorDataset(x, y)\n"
        "    return DataLoader(ds, batch_size=batch_size), DataLoader(ds, batch_size=batch_size)\n"))
    recipe = write_recipe(tmp, {"data": {"builtin": None, "factory": f"{mod}:loaders"}})
    return Setup(run_args(recipe, tmp / "o"))


def _disk_full_writing_report(tmp: Path) -> Setup:  # item 10: the last write of the run
    import prunekit.reporting.report as report

    out = tmp / "o"
    protected = fake_previous_run(out)
    return Setup(run_args(write_recipe(tmp), out), protected,
                 [(report, "write_text_atomic", _raise(OSError(errno.ENOSPC, "No space left on device")))])


def _sensitivity_out_under_file(tmp: Path) -> Setup:  # items 10, 14: checked before scanning
    protected = user_files(tmp, "afile")
    return Setup(["sensitivity", str(write_recipe(tmp)), "--out", str(tmp / "afile" / "s")], protected)


def _analyze_broken_factory(tmp: Path) -> Setup:  # item 9 through `prunekit analyze`
    mod = _factory_models(tmp, "pk_analyze_broken")
    sys.path.append(str(tmp))
    return Setup(["analyze", f"{mod}:broken", "--input-shape", "1,64"])


def _missing_weights(tmp: Path) -> Setup:  # already clean before the issue: kept as a regression case
    return Setup(run_args(write_recipe(tmp, {"model": {"weights": "nowhere.safetensors"}}), tmp / "o"))


def _pickle_refused(tmp: Path) -> Setup:  # already clean: a pickled object is never executed
    import torch

    torch.save({"w": torch.nn.Linear(2, 2)}, tmp / "evil.pt")
    return Setup(run_args(write_recipe(tmp, {"model": {"weights": "evil.pt"}}), tmp / "o"), [tmp / "evil.pt"])


def _malformed_yaml(tmp: Path) -> Setup:  # already clean
    bad = tmp / "bad.yaml"
    bad.write_text("name: t\nmodel: {builtin: mlp\n")
    return Setup(["run", str(bad), "--out", str(tmp / "o")], [bad])


CASES: list[Case] = [
    Case("partial_folder_not_prunekits", 1, 1, r"results\.partial' exists and is not a prunekit work folder", _partial_not_ours),
    Case("user_folder_with_report_json", 2, 1, r"exists and is not a prunekit run", _user_folder_with_report),
    Case("previous_slot_is_a_user_folder", 2, 1, r"results\.previous' exists and is not a prunekit run", _previous_not_ours),
    Case("rerun_moves_previous_and_says_so", 2, 0, r"moved the previous run", _rerun_moves_previous_and_says_so),
    Case("concurrent_runs_same_out", 3, 1, r"is in use by another prunekit run \(pid \d+ on", _concurrent_runs, slow=True),
    Case("stale_lock_of_a_dead_run", 3, 0, r"wrote .*report\.html", _stale_lock_is_taken_over),
    Case("resume_with_changed_recipe", 4, 1, r"--resume: the recipe changed .*recovery\.epochs 4 -> 2.*without --resume",
         _resume_changed_recipe),
    Case("nothing_prunable", 5, 1, r"pruning removed nothing from model 'pk_nothing:flat_linear'.*allow_no_op", _nothing_prunable),
    Case("nothing_prunable_allowed", 5, 0, r"removed nothing", _nothing_prunable_allowed),
    Case("python_warning_in_report", 5, 0, r"input statistics look odd", _python_warning_reaches_report),
    Case("ratio_0_999", 6, 1, r"pruning\.target\.ratio: must be at most 0\.95", _ratio_too_high),
    Case("round_to_larger_than_any_width", 7, 0, r"round_to 1000000 is larger than every layer width", _round_to_too_large),
    Case("labels_out_of_range_train", 8, 1, r"train split: label 14 is outside \[0, 10\)",
         _npz_case({}, label_max=14)),
    Case("labels_out_of_range_test_only", 8, 1, r"test split: label 12 is outside \[0, 10\)",
         _npz_case({"y_test": np.full(30, 12)})),
    Case("feature_shape_mismatch", 8, 1, r"data 'data' \(a training batch of shape \[2, 32\]\) does not fit model 'mlp'",
         _npz_case({}, features=32)),
    Case("nan_in_inputs", 8, 1, r"inputs hold \d+ NaN/Inf",
         _npz_case({"x": np.where(np.eye(120, 64) > 0, np.nan, 0.5).astype(np.float32)})),
    Case("diverging_lr_names_recipe_key", 8, 1, r"loss became (nan|inf).*lower model\.train_baseline\.lr", _bad_lr),
    Case("example_input_shape_wrong", 11, 1, r"model\.example_input_shape \[1, 3, 8, 8\] does not fit model 'mlp'",
         _example_shape_wrong),
    Case("model_factory_raises", 9, 1, r"model factory 'pk_broken:broken' raised ValueError: width 8 is not supported "
         r"\(at .*pk_broken\.py:\d+ in broken\)", _model_factory_raises),
    Case("data_factory_raises", 9, 1, r"data factory 'pk_data_broken:data_broken' raised IndexError.*pk_data_broken\.py:\d+",
         _data_factory_raises),
    Case("factory_module_syntax_error", 9, 1, r"importing module 'pk_syntax' raised SyntaxError.*pk_syntax\.py:1",
         _factory_module_syntax_error),
    Case("out_under_a_file", 10, 1, r"is under '.*afile', which is a file", _out_under_file),
    Case("out_on_read_only_mount", 10, 1, r"cannot write under .*read-only file system",
         _unwritable(errno.EROFS, "Read-only file system")),
    Case("out_in_unwritable_folder", 10, 1, r"cannot write under .*permission denied",
         _unwritable(errno.EACCES, "Permission denied")),
    Case("disk_full_enospc", 10, 1, r"disk full while writing the run",
         _disk_full(OSError(errno.ENOSPC, "No space left on device"), "save_file")),
    Case("disk_full_torch_unexpected_pos", 10, 1, r"disk full while writing the run",
         _disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 490"), "torch.save")),
    Case("op_onnx_cannot_export", 11, 1, r"checked before training: ONNX export of Bessel failed.*bessel_j0", _unexportable_op),
    Case("dynamic_int8_on_mlp", 11, 1, r"dynamic int8 found no .* Linear layers export as Gemm.*mode: static",
         _dynamic_int8_on_mlp),
    Case("static_int8_nothing_quantizable", 11, 1, r"has no operator ONNX Runtime can quantize",
         _static_int8_nothing_quantizable),
    Case("factory_next_to_recipe", 13, 0, r"wrote .*report\.html", _factory_next_to_recipe),
    Case("factory_module_missing", 13, 1, r"cannot import module 'pk_nowhere'.*next to the recipe or on PYTHONPATH",
         _factory_missing_module),
    Case("debug_after_subcommand", 14, 1, r"", _debug_after_subcommand),
    Case("sensitivity_out_and_progress", 14, 0, r"sensitivity curves: .*sens", _sensitivity_out),
    Case("resume_with_nothing_to_resume", 14, 0, r"nothing to resume in .*starting a fresh run", _resume_says_where),
    Case("consistent_file_permissions", 14, 0, r"wrote", _consistent_permissions),
    Case("unexpected_bug_is_one_line", 14, 1, r"unexpected ZeroDivisionError: division by zero \(rerun with --debug",
         _unexpected_bug),
    Case("out_is_a_file", 10, 1, r"output folder '.*results' is a file", _out_is_a_file),
    Case("partial_is_a_file", 1, 1, r"results\.partial' exists and is not a prunekit work folder", _partial_is_a_file),
    Case("resume_into_foreign_partial", 4, 1, r"results\.partial' exists and is not a prunekit work folder",
         _resume_into_foreign_partial),
    Case("resume_with_changed_width", 4, 1, r"recipe changed .*model\.kwargs\.hidden", _resume_changed_width),
    Case("lock_held_on_another_host", 3, 1, r"in use by another prunekit run \(pid 4242 on gpu-node-7", _lock_of_another_host),
    Case("demo_into_user_folder", 2, 1, r"exists and is not a prunekit run", _demo_into_user_folder),
    Case("regression_nan_targets", 8, 1, r"train split: targets hold NaN/Inf", _regression_nan_targets),
    Case("data_factory_labels_out_of_range", 8, 1, r"train split: label 11 is outside \[0, 10\)",
         _factory_labels_out_of_range),
    Case("disk_full_writing_report", 10, 1, r"disk full while writing the run", _disk_full_writing_report),
    Case("sensitivity_out_under_a_file", 10, 1, r"is under '.*afile', which is a file", _sensitivity_out_under_file),
    Case("analyze_factory_raises", 9, 1, r"model factory 'pk_analyze_broken:broken' raised ValueError.*pk_analyze_broken\.py",
         _analyze_broken_factory),
    Case("missing_weights_file", 0, 1, r"weights file '.*nowhere\.safetensors' not found", _missing_weights),
    Case("pickled_object_refused", 0, 1, r"holds Python objects that weights_only loading refuses", _pickle_refused),
    Case("malformed_yaml", 0, 1, r"invalid YAML at line \d+", _malformed_yaml),
    Case("sigint_then_resume", 14, 130, r"interrupted; .*rerun the same command with --resume", _sigint_then_resume,
         slow=True),
]


# ------------------------------------------------------------------------------------------- judging
def _digest(paths: list[Path]) -> dict[Path, str | None]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None for p in paths}


@contextlib.contextmanager
def _patched(patches: list[tuple[Any, str, Any]]) -> Iterator[None]:
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, value in patches:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


def invoke(args: list[str]) -> Outcome:
    from typer.testing import CliRunner

    from prunekit.cli.main import app

    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    escaped = result.exception if result.exception is not None and not isinstance(result.exception, SystemExit) else None
    return Outcome(result.exit_code, result.stdout, result.stderr, escaped)


def judge(case: Case, tmp: Path) -> tuple[str, str]:
    """Run ``case`` in ``tmp``; return (verdict, detail). Verdicts: see the module docstring."""
    setup = case.build(tmp)
    before = _digest(setup.protected)
    with _patched(setup.patches):
        outcome = setup.run() if setup.run is not None else invoke(setup.args)
    lost = [str(p) for p, h in _digest(setup.protected).items() if h != before[p]]
    extra = setup.check(outcome) if setup.check is not None else None
    text = outcome.stdout + outcome.stderr
    if lost:
        return "data lost", f"changed or removed: {', '.join(lost)}"
    if "Traceback (most recent call last)" in text or (outcome.escaped is not None
                                                       and case.name != "debug_after_subcommand"):
        return "traceback", repr(outcome.escaped) if outcome.escaped else text[-500:]
    if case.expect_exit == 0:
        if outcome.exit_code != 0:
            return "unclear error", f"exit {outcome.exit_code}: {outcome.stderr.strip()[-400:]}"
        if extra and extra.startswith("data lost"):
            return "data lost", extra
        if extra:
            return "wrong success", extra
        if not re.search(case.expect, outcome.stdout):
            return "wrong success", f"stdout does not match {case.expect!r}"
        return "ok", ""
    if outcome.exit_code == 0:
        return "wrong success", "exit 0 where the run must fail"
    if extra:
        return "unclear error", extra
    if case.name == "debug_after_subcommand":
        return "clean error", ""
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    if outcome.exit_code != case.expect_exit or len(errors) != 1 or not re.search(case.expect, errors[0]):
        return "unclear error", f"exit {outcome.exit_code}: {outcome.stderr.strip()[-400:]}"
    return "clean error", errors[0]
