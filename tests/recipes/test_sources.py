"""Model, weights and data sources: what loads, and a clear SourceError for everything that does not."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from prunekit.data import DataBundle
from prunekit.errors import SourceError
from prunekit.models import MLP
from prunekit.recipes.schema import DataSpec, ModelSpec
from prunekit.recipes.sources import load_data, load_model

SMALL = {"hidden": [8], "num_classes": 3}


class _NotAllowed:  # weights_only loading must refuse to rebuild this
    pass


def _spec(weights: Path) -> ModelSpec:
    return ModelSpec(builtin="mlp", kwargs=SMALL, weights=str(weights))


def _trained_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return MLP(hidden=(8,), num_classes=3).state_dict()


def test_builtin_model_with_kwargs() -> None:
    model = load_model(ModelSpec(builtin="mlp", kwargs=SMALL))
    assert isinstance(model, MLP)
    assert model(torch.zeros(2, 64)).shape == (2, 3)


def test_factory_model() -> None:
    model = load_model(ModelSpec(factory="prunekit.models.builtin:MLP", kwargs={"hidden": [4]}))
    assert sum(p.numel() for p in model.parameters()) == 64 * 4 + 4 + 4 * 10 + 10


@pytest.mark.parametrize(
    ("ref", "piece"),
    [
        ("prunekit.models.builtin:MLPP", "has no attribute 'MLPP'; did you mean 'MLP'?"),
        ("no_such_pkg_xyz.mod:f", "cannot import module 'no_such_pkg_xyz.mod'"),
        ("prunekit.models.builtin:BUILTIN_MODELS", "is a dict, not a callable"),
        ("prunekit.errors:PrunekitError", "returned PrunekitError, not a torch.nn.Module"),
    ],
)
def test_factory_errors(ref: str, piece: str) -> None:
    with pytest.raises(SourceError) as info:
        load_model(ModelSpec(factory=ref))
    assert piece in str(info.value)


def test_bad_kwargs_name_the_section() -> None:
    with pytest.raises(SourceError, match=r"model 'mlp' does not accept kwargs \['widht'\].*fix model\.kwargs"):
        load_model(ModelSpec(builtin="mlp", kwargs={"widht": 3}))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_round_trip(tmp_path: Path, suffix: str) -> None:
    state = _trained_state()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)  # the common checkpoint wrapper is unwrapped
    model = load_model(_spec(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def test_ddp_prefix_is_stripped(tmp_path: Path) -> None:
    state = _trained_state()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "w.pt")
    model = load_model(_spec(tmp_path / "w.pt"))
    assert torch.equal(model.state_dict()["net.1.weight"], state["net.1.weight"])


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"weights file '.*nope\.pt' not found; check model\.weights"):
        load_model(_spec(tmp_path / "nope.pt"))


@pytest.mark.parametrize(("suffix", "piece"), [(".safetensors", "is not a valid safetensors file"),
                                               (".pt", "is corrupt or not a PyTorch file")])
def test_garbage_bytes(tmp_path: Path, suffix: str, piece: str) -> None:
    path = tmp_path / f"w{suffix}"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(SourceError, match=piece):
        load_model(_spec(path))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    torch.save({"net.1.weight": _NotAllowed()}, tmp_path / "evil.pt")
    with pytest.raises(SourceError, match="holds Python objects that weights_only loading refuses"):
        load_model(_spec(tmp_path / "evil.pt"))


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(SourceError, match="has suffix '.ckpt'; use .safetensors, .pt, .pth or .bin"):
        load_model(_spec(tmp_path / "w.ckpt"))


def test_shape_mismatch_names_first_keys(tmp_path: Path) -> None:
    save_file(MLP(hidden=(9,), num_classes=3).state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(SourceError, match=r"shape mismatch net\.1\.weight file \(9, 64\) vs model \(8, 64\), "
                                          r"net\.1\.bias file \(9,\) vs model \(8,\), net\.3\.weight file \(3, 9\) vs model \(3, 8\);"):
        load_model(_spec(tmp_path / "w.safetensors"))


def test_key_mismatch_names_missing_and_unexpected(tmp_path: Path) -> None:
    torch.save(collections.OrderedDict(other=torch.zeros(2)), tmp_path / "w.pt")
    with pytest.raises(SourceError, match=r"missing keys net\.1\.weight, net\.1\.bias, net\.3\.weight \(\+1 more\); "
                                          r"unexpected keys other"):
        load_model(_spec(tmp_path / "w.pt"))


def test_non_tensor_state_is_refused(tmp_path: Path) -> None:
    torch.save({"net.1.weight": 3}, tmp_path / "w.pt")
    with pytest.raises(SourceError, match="does not hold a state dict of named tensors"):
        load_model(_spec(tmp_path / "w.pt"))


def test_builtin_data() -> None:
    bundle = load_data(DataSpec(builtin="digits", batch_size=32, calib_samples=20), seed=0)
    assert bundle.num_classes == 10 and bundle.task == "classification"
    assert len(bundle.calib.dataset) == 20 and bundle.train.batch_size == 32
    assert len(bundle.train.dataset) + len(bundle.val.dataset) + len(bundle.test.dataset) == 1797


def test_task_mismatch() -> None:
    with pytest.raises(SourceError, match="is a regression task but data.task is 'classification'"):
        load_data(DataSpec(builtin="synthetic_regression"), seed=0)


def test_npz_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((100, 4)), y=np.arange(100) % 3)
    bundle = load_data(DataSpec(npz=str(tmp_path / "d.npz"), batch_size=16), seed=1)
    assert isinstance(bundle, DataBundle)
    assert (len(bundle.test.dataset), len(bundle.val.dataset), len(bundle.train.dataset)) == (20, 15, 65)
    x, y = next(iter(bundle.test))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and bundle.num_classes == 3


def test_npz_with_explicit_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)), y=np.arange(40) % 2,
             x_test=rng.random((7, 4)), y_test=np.array([0, 1, 2, 0, 1, 2, 0]))
    bundle = load_data(DataSpec(npz=str(tmp_path / "d.npz")), seed=0)
    assert len(bundle.test.dataset) == 7
    assert bundle.num_classes == 3  # a class seen only in the test split still counts


def test_npz_regression(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((30, 2)), y=np.linspace(0, 1, 30)[:, None])
    bundle = load_data(DataSpec(npz=str(tmp_path / "d.npz"), task="regression"), seed=0)
    assert bundle.num_classes is None and next(iter(bundle.train))[1].dtype == torch.float32


@pytest.mark.parametrize(
    ("arrays", "piece"),
    [
        ({"x": np.zeros((0, 4)), "y": np.zeros(0)}, "array 'x' or 'y' is empty"),
        ({"x": np.zeros((5, 4))}, "has no array 'y' (found: x)"),
        ({"x": np.zeros((5, 4)), "y": np.zeros(4)}, "has 5 rows in 'x' but 4 in 'y'"),
        ({"x": np.zeros((5, 4)), "y": np.full(5, 0.5)}, "must hold class indices"),
        ({"x": np.zeros((5, 4)), "y": np.zeros(5), "x_test": np.zeros((2, 4))}, "only one of x_test, y_test"),
        ({"x": np.array([{"a": 1}] * 3, dtype=object), "y": np.zeros(3)}, "holds object arrays, which need pickle"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict, piece: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(SourceError) as info:
        load_data(DataSpec(npz=str(tmp_path / "d.npz")), seed=0)
    assert piece in str(info.value)


def test_npz_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"data file '.*nope\.npz' not found; check data\.npz"):
        load_data(DataSpec(npz=str(tmp_path / "nope.npz")), seed=0)
    (tmp_path / "bad.npz").write_bytes(b"garbage bytes")
    with pytest.raises(SourceError, match="is not a valid .npz"):
        load_data(DataSpec(npz=str(tmp_path / "bad.npz")), seed=0)


def loaders_factory(*, batch_size: int = 8) -> tuple:
    """A data factory returning (train, val) loaders (used by the test below)."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(30, 4, generator=g), torch.arange(30) % 3)
    val = TensorDataset(torch.randn(9, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0]))
    return DataLoader(train, batch_size=batch_size), DataLoader(val, batch_size=batch_size)


def empty_factory() -> tuple:
    from torch.utils.data import DataLoader, TensorDataset

    empty = DataLoader(TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))
    return empty, empty


def test_factory_loaders_become_a_bundle() -> None:
    with pytest.warns(UserWarning, match="validation loader is also used as the test set"):
        bundle = load_data(DataSpec(factory=f"{__name__}:loaders_factory", batch_size=4, calib_samples=10), seed=0)
    assert bundle.train.batch_size == 4  # batch_size is passed to a factory that accepts it
    assert len(bundle.calib.dataset) == 10 and bundle.example_input.shape == (1, 4)
    assert bundle.num_classes == 4 and bundle.test is bundle.val


def test_factory_empty_and_wrong_type() -> None:
    with pytest.raises(SourceError, match="returned an empty training loader"):
        load_data(DataSpec(factory=f"{__name__}:empty_factory"), seed=0)
    with pytest.raises(SourceError, match="returned MLP; return a prunekit.data.DataBundle, a \\(train, val, test\\) triple or a \\(train, val\\) pair"):
        load_data(DataSpec(factory="prunekit.models.builtin:MLP"), seed=0)


def test_factory_errors_name_the_factory_and_the_users_line(tmp_path, monkeypatch):
    from prunekit.recipes.loader import add_import_folder
    from prunekit.recipes.schema import ModelSpec

    (tmp_path / "pk_user_frames.py").write_text("def helper(n):\n    return [0][n]\n\ndef build(n=3):\n"
                                                "    return helper(n)\n")
    (tmp_path / "pk_user_import.py").write_text("import os\nraise RuntimeError('no config')\n")
    (tmp_path / "pk_user_needs.py").write_text("import pk_not_installed_anywhere\n")
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    add_import_folder(tmp_path)
    with pytest.raises(SourceError, match=r"model factory 'pk_user_frames:build' raised IndexError: list index out "
                                          r"of range \(at .*pk_user_frames\.py:2 in helper\)"):
        load_model(ModelSpec(factory="pk_user_frames:build"))
    with pytest.raises(SourceError, match=r"importing module 'pk_user_import' raised RuntimeError: no config "
                                          r"\(at .*pk_user_import\.py:2 in <module>\)"):
        load_model(ModelSpec(factory="pk_user_import:build"))
    with pytest.raises(SourceError, match=r"module 'pk_user_needs' needs 'pk_not_installed_anywhere', which is not "
                                          r"installed"):
        load_model(ModelSpec(factory="pk_user_needs:build"))
