"""Turn a recipe's ``model`` and ``data`` sections into a module and a DataBundle.

Weights are read only through safetensors or ``torch.load(weights_only=True)``: a checkpoint is
data, never code. Every failure is a one-line :class:`~prunekit.errors.SourceError` naming the
file or reference, what is wrong with it and what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit.data import BUILTIN_DATASETS, DataBundle, split_tensors
from prunekit.errors import PrunekitError, PrunekitWarning, SourceError
from prunekit.models import BUILTIN_MODELS
from prunekit.recipes.schema import DataSpec, ModelSpec

_TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_WRAPPER_KEYS = ("state_dict", "model_state_dict")  # common checkpoint layouts around a state dict


def load_model(spec: ModelSpec) -> nn.Module:
    """Build the model named by ``spec`` and load its weights, if any, strictly.

    Raises
    ------
    SourceError
        Unknown built-in, a factory that cannot be imported or called or does not return an
        ``nn.Module``, or weights that are missing, corrupt, refused or do not fit the model.
    """
    if spec.builtin is not None:
        if spec.builtin not in BUILTIN_MODELS:
            raise SourceError(f"unknown built-in model {spec.builtin!r}; known: {', '.join(sorted(BUILTIN_MODELS))}")
        build, label = BUILTIN_MODELS[spec.builtin], spec.builtin
    else:
        build, label = import_object(spec.factory, what="model.factory"), spec.factory
    model = _call(build, dict(spec.kwargs), label=label, what="model")
    if not isinstance(model, nn.Module):
        raise SourceError(f"model {label!r} returned {type(model).__name__}, not a torch.nn.Module")
    if spec.weights is not None:
        load_weights(model, spec.weights, label=label)
    return model


def load_weights(model: nn.Module, path: str | Path, *, label: str = "model") -> nn.Module:
    """Load a state dict from ``.safetensors`` or ``.pt/.pth/.bin`` into ``model`` (strict), in place."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"weights file '{path}' not found; check model.weights")
    state = _read_state_dict(path)
    state = _strip_prefix(state, model.state_dict().keys(), prefix="module.")  # saved from DDP
    _check_fits(state, model.state_dict(), path=path, label=label)
    model.load_state_dict(state, strict=True)
    return model


def load_data(spec: DataSpec, *, seed: int, pretrained: bool = False) -> DataBundle:
    """Build the DataBundle named by ``spec``; the split is fixed by ``seed``.

    ``pretrained``: the model comes with weights trained elsewhere, so validation carved from an
    ``.npz``'s ``x`` may be data those weights saw (a warning says so; ``x_val``/``y_val`` avoid it).

    Raises
    ------
    SourceError
        Unknown built-in, unreadable or empty ``.npz``, missing arrays, a factory that fails, or
        a data set whose task differs from ``data.task``.
    """
    if spec.builtin is not None:
        bundle = _builtin_data(spec, seed=seed)
    elif spec.npz is not None:
        bundle = _npz_data(spec, seed=seed, pretrained=pretrained)
    else:
        bundle = _factory_data(spec, seed=seed)
    if bundle.task != spec.task:
        raise SourceError(f"data set '{bundle.name}' is a {bundle.task} task but data.task is "
                          f"{spec.task!r}; set data.task: {bundle.task}")
    return bundle


def import_object(ref: str, *, what: str) -> Any:
    """Import ``package.module:attr`` (attr may be dotted); errors name the reference and the fix."""
    module_name, _, attr_path = ref.partition(":")
    if not module_name or not attr_path:
        raise SourceError(f"{what} {ref!r} must look like 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name != exc.name and not module_name.startswith(exc.name + "."):
            raise SourceError(f"{what} {ref!r}: module '{module_name}' needs '{exc.name}', which is not installed "
                              f"({user_frame(exc)}); install it") from None
        raise SourceError(f"{what} {ref!r}: cannot import module '{module_name}' ({exc}); check the spelling and "
                          f"that its file is next to the recipe or on PYTHONPATH") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing: say where
        raise SourceError(f"{what} {ref!r}: importing module '{module_name}' raised {type(exc).__name__}: "
                          f"{_first_line(exc)} ({user_frame(exc)}); fix that module") from None
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SourceError(f"{what} {ref!r}: '{getattr(obj, '__name__', module_name)}' has no attribute '{part}'{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SourceError(f"{what} {ref!r} is a {type(obj).__name__}, not a callable")
    return obj


def _call(fn: Callable[..., Any], kwargs: dict[str, Any], *, label: str, what: str) -> Any:
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as exc:
        raise SourceError(f"{what} {label!r} does not accept kwargs {sorted(kwargs)}: {exc}; fix {what}.kwargs") from None
    except ValueError:
        pass  # no introspectable signature (a C function): let the call speak
    try:
        return fn(**kwargs)
    except PrunekitError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's factory failed: name it and the user's own line
        raise SourceError(f"{what} factory {label!r} raised {type(exc).__name__}: {_first_line(exc)} "
                          f"({user_frame(exc)}); fix the factory or {what}.kwargs") from None


def user_frame(exc: BaseException) -> str:
    """'at path/file.py:12 in build': the innermost frame of the user's code (not prunekit, torch or stdlib)."""
    import sysconfig
    import traceback

    if isinstance(exc, SyntaxError) and exc.filename:
        return f"at {exc.filename}:{exc.lineno}"
    library = [str(Path(__file__).resolve().parents[1])]
    library += [p for p in {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")} if p]
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not any(str(Path(f.filename).resolve()).startswith(p) for p in library)
            and not f.filename.startswith("<")]
    frame = (mine or frames or [None])[-1]
    return f"at {frame.filename}:{frame.lineno} in {frame.name}" if frame is not None else "no traceback"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise SourceError(f"weights file '{path}' is not a valid safetensors file ({_first_line(exc)}); "
                              f"re-save it with safetensors.torch.save_file") from None
    elif suffix in _TORCH_SUFFIXES:
        state = _torch_load(path)
    else:
        raise SourceError(f"weights file '{path}' has suffix '{suffix}'; use .safetensors, .pt, .pth or .bin")
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise SourceError(f"weights file '{path}' does not hold a state dict of named tensors; "
                          f"save model.state_dict() (or {{'state_dict': ...}})")
    return state


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():  # a class or function the allow-list refuses
            raise SourceError(
                f"weights file '{path}' holds Python objects that weights_only loading refuses to run; "
                f"save only model.state_dict() or convert it to .safetensors"
            ) from None
        raise SourceError(f"weights file '{path}' is corrupt or not a PyTorch file (unpickling failed)") from None
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes fail anywhere in the unpickler (IndexError...)
        raise SourceError(f"weights file '{path}' is corrupt or not a PyTorch file ({_first_line(exc)})") from None


def _strip_prefix(state: dict[str, torch.Tensor], model_keys: Any, *, prefix: str) -> dict[str, torch.Tensor]:
    keys = set(model_keys)
    if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in keys):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _check_fits(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, path: Path, label: str) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_first(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_first(shapes)}")
    if problems:
        raise SourceError(f"weights '{path}' do not fit model {label!r}: {'; '.join(problems)}; "
                          f"check model.kwargs match the architecture the weights were saved from")


def _first(items: list[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def _builtin_data(spec: DataSpec, *, seed: int) -> DataBundle:
    if spec.builtin not in BUILTIN_DATASETS:
        raise SourceError(f"unknown built-in data set {spec.builtin!r}; known: {', '.join(sorted(BUILTIN_DATASETS))}")
    build = BUILTIN_DATASETS[spec.builtin]
    offered = {"batch_size": spec.batch_size, "seed": seed, "calib_samples": spec.calib_samples}
    accepted = inspect.signature(build).parameters
    kwargs = {k: v for k, v in offered.items() if k in accepted} | dict(spec.kwargs)
    return _call(build, kwargs, label=spec.builtin, what="data")


def _npz_data(spec: DataSpec, *, seed: int, pretrained: bool = False) -> DataBundle:
    path = Path(spec.npz)
    if not path.is_file():
        raise SourceError(f"data file '{path}' not found; check data.npz")
    if not zipfile.is_zipfile(path):  # else np.load would try to read it as a pickle
        raise SourceError(f"data file '{path}' is not a valid .npz (not a zip archive); save it with np.savez")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise SourceError(f"data file '{path}' holds object arrays, which need pickle; "
                              f"save plain numeric arrays with np.savez") from None
        raise SourceError(f"data file '{path}' is not a valid .npz ({_first_line(exc)})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(f"data file '{path}' is not a valid .npz ({_first_line(exc)})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise SourceError(f"data file '{path}' has no array '{key}' (found: {', '.join(sorted(arrays)) or 'none'}); "
                              f"save with np.savez(path, x=inputs, y=targets)")
    for split in ("test", "val"):
        if (f"x_{split}" in arrays) != (f"y_{split}" in arrays):
            raise SourceError(f"data file '{path}' has only one of x_{split}, y_{split}; give both or neither")
    x, y = _tensors(arrays["x"], arrays["y"], spec=spec, path=path, suffix="")
    name = path.stem
    val = _tensors(arrays["x_val"], arrays["y_val"], spec=spec, path=path, suffix="_val") if "x_val" in arrays else None
    if val is None and spec.val_fraction == 0:
        raise SourceError(f"data file '{path}' has no x_val/y_val and data.val_fraction is 0: add validation arrays "
                          f"(np.savez(path, x=..., y=..., x_val=..., y_val=...)) or set data.val_fraction > 0")
    if val is None and pretrained:
        warnings.warn(f"data file '{path}' has no x_val/y_val, so validation is carved from x, which the given "
                      f"model.weights may have been trained on: the accuracy guard and the int8 check would then read "
                      f"training data; add held-out x_val/y_val to the .npz", PrunekitWarning, stacklevel=3)
    if "x_test" not in arrays:
        return split_tensors(x, y, name=name, task=spec.task, val_fraction=spec.val_fraction,
                             test_fraction=spec.test_fraction, calib_samples=spec.calib_samples,
                             batch_size=spec.batch_size, seed=seed, val=val)
    x_test, y_test = _tensors(arrays["x_test"], arrays["y_test"], spec=spec, path=path, suffix="_test")
    bundle = split_tensors(x, y, name=name, task=spec.task, val_fraction=spec.val_fraction,
                           test_fraction=0.0, calib_samples=spec.calib_samples,
                           batch_size=spec.batch_size, seed=seed, val=val, test=(x_test, y_test))
    test = bundle.test
    num_classes = bundle.num_classes
    if spec.task == "classification":
        num_classes = max(int(num_classes or 0), int(y_test.max().item()) + 1,
                          int(val[1].max().item()) + 1 if val is not None else 0)
    return dataclasses.replace(bundle, test=test, num_classes=num_classes)


def _tensors(x: np.ndarray, y: np.ndarray, *, spec: DataSpec, path: Path, suffix: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise SourceError(f"data file '{path}' array 'x{suffix}' or 'y{suffix}' is empty; give at least 3 samples")
    if x.shape[0] != y.shape[0]:
        raise SourceError(f"data file '{path}' has {x.shape[0]} rows in 'x{suffix}' but {y.shape[0]} in 'y{suffix}'; they must match")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise SourceError(f"data file '{path}' array 'x{suffix}' has dtype {x.dtype}; it must be numeric")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if spec.task == "regression":
        return xt, torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.number) or not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0:
        raise SourceError(f"data file '{path}' array 'y{suffix}' must hold class indices (1-D, integers >= 0) "
                          f"for task: classification; got dtype {y.dtype}, shape {y.shape}")
    return xt, torch.from_numpy(y.astype(np.int64))


def _factory_data(spec: DataSpec, *, seed: int) -> DataBundle:
    build = import_object(spec.factory, what="data.factory")
    offered = {"batch_size": spec.batch_size, "seed": seed, "calib_samples": spec.calib_samples}
    try:
        accepted = inspect.signature(build).parameters
    except ValueError:
        accepted = {}
    kwargs = {k: v for k, v in offered.items() if k in accepted} | dict(spec.kwargs)
    result = _call(build, kwargs, label=spec.factory, what="data")
    if isinstance(result, DataBundle):
        return result
    if isinstance(result, (tuple, list)) and len(result) in (2, 3) and all(isinstance(r, DataLoader) for r in result):
        return _bundle_from_loaders(*result, spec=spec)
    raise SourceError(f"data.factory {spec.factory!r} returned {type(result).__name__}; return a "
                      f"prunekit.data.DataBundle, a (train, val, test) triple or a (train, val) pair of DataLoaders")


def _bundle_from_loaders(train: DataLoader, val: DataLoader, test: DataLoader | None = None, *,
                         spec: DataSpec) -> DataBundle:
    """Wrap (train, val[, test]) loaders: without test, val doubles as it; calib is the first train samples."""
    xs, ys, seen = [], [], 0
    for inputs, targets in train:
        xs.append(inputs)
        ys.append(targets)
        seen += len(inputs)
        if seen >= spec.calib_samples:
            break
    if seen == 0:
        raise SourceError(f"data.factory {spec.factory!r} returned an empty training loader; it must yield (inputs, targets)")
    x, y = torch.cat(xs)[: spec.calib_samples], torch.cat(ys)[: spec.calib_samples]
    num_classes = None
    if spec.task == "classification":
        top = max([int(t.max().item()) for loader in (val, test) if loader is not None for _, t in loader] or [-1])
        num_classes = max(int(y.max().item()), top) + 1
    if test is None:
        warnings.warn(f"data.factory {spec.factory!r} gave no test split: the validation loader is also used "
                      f"as the test set, so test numbers are not held out from model selection; return "
                      f"(train, val, test) loaders", PrunekitWarning, stacklevel=3)
    calib = DataLoader(TensorDataset(x, y), batch_size=spec.batch_size, shuffle=False)
    return DataBundle(train=train, val=val, test=test if test is not None else val, calib=calib,
                      num_classes=num_classes, task=spec.task, example_input=x[:1].clone(), name=spec.factory,
                      val_source="the factory's validation loader" + ("" if test is not None else " (also the test set)"))
