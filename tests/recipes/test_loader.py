"""Loading YAML recipes: file errors, YAML errors, path resolution, round-trip and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prunekit.errors import RecipeError
from prunekit.recipes.loader import (
    apply_overrides,
    builtin_recipe_path,
    dump_recipe,
    load_recipe,
    recipe_from_dict,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINIMAL = "name: t\nmodel: {builtin: mlp}\ndata: {builtin: digits}\n"


def _write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "none.yaml"
    with pytest.raises(RecipeError, match=f"^{path}: recipe file not found; check the path$"):
        load_recipe(path)


def test_bad_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nmodel: {builtin: mlp\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: invalid YAML at line \d+, column \d+: .*; fix the syntax$"):
        load_recipe(path)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "seed: 1\nseed: 2\n")
    with pytest.raises(RecipeError, match=r"invalid YAML at line 5, column 1: key 'seed' is written twice"):
        load_recipe(path)


@pytest.mark.parametrize(("text", "piece"), [("", "recipe file is empty"), ("- a\n- b\n", "got list")])
def test_empty_or_non_mapping(tmp_path: Path, text: str, piece: str) -> None:
    with pytest.raises(RecipeError, match=piece):
        load_recipe(_write(tmp_path, text))


def test_field_error_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "pruning: {target: {ratio: 1.5}}\n")
    with pytest.raises(RecipeError, match=rf"^{path}: pruning\.target\.ratio: must be in \(0, 1\), got 1\.5$"):
        load_recipe(path)


def test_input_paths_resolve_against_recipe_folder(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    path = _write(sub, "name: t\nmodel: {builtin: mlp, weights: w.safetensors}\ndata: {npz: d/x.npz}\noutput_dir: out\n")
    recipe = load_recipe(path)
    assert recipe.model.weights == str(sub / "w.safetensors")
    assert recipe.data.npz == str(sub / "d" / "x.npz")
    assert recipe.output_dir == "out"  # relative to where the command runs, untouched


@pytest.mark.parametrize("name", ["digits_demo.yaml", "mlp_2to4.yaml", "quantize_only.yaml"])
def test_examples_load_and_round_trip(tmp_path: Path, name: str) -> None:
    recipe = load_recipe(EXAMPLES / name)
    out = tmp_path / "again.yaml"
    text = dump_recipe(recipe, out)
    assert out.read_text(encoding="utf-8") == text
    assert load_recipe(out) == recipe
    assert recipe_from_dict(yaml.safe_load(text)) == recipe


def test_demo_example_values() -> None:
    recipe = load_recipe(EXAMPLES / "digits_demo.yaml")
    assert recipe.pruning.target.ratio == 0.5 and recipe.pruning.round_to == 8
    assert recipe.quantization.enabled and recipe.recovery.distillation.enabled
    assert recipe.model.train_baseline is not None and recipe.model.train_baseline.epochs == 8


def test_shipped_builtin_recipe_matches_example() -> None:
    path = builtin_recipe_path("digits_demo")
    assert path.read_text(encoding="utf-8") == (EXAMPLES / "digits_demo.yaml").read_text(encoding="utf-8")
    with pytest.raises(RecipeError, match="no built-in recipe named 'digits_dem'; did you mean 'digits_demo'"):
        builtin_recipe_path("digits_dem")


def test_overrides_parse_values_and_revalidate() -> None:
    recipe = recipe_from_dict({"name": "t", "model": {"builtin": "mlp"}, "data": {"builtin": "digits"}})
    new = apply_overrides(recipe, {"model.train_baseline.epochs": "2", "evaluation.batch_sizes": "[4]",
                                   "pruning.target.ratio": 0.25})
    assert new.model.train_baseline is not None and new.model.train_baseline.epochs == 2
    assert new.evaluation.batch_sizes == [4]
    assert new.pruning.target.ratio == 0.25
    assert recipe.evaluation.batch_sizes == [1, 32]  # the original is untouched
    with pytest.raises(RecipeError, match=r"^cli: recovery\.epochs: must be >= 0, got -3$"):
        apply_overrides(recipe, {"recovery.epochs": "-3"}, source="cli")
    with pytest.raises(RecipeError, match="cli: seed: is not a section, cannot set seed.x"):
        apply_overrides(recipe, {"seed.x": "1"}, source="cli")
    with pytest.raises(RecipeError, match="recovery.epoch: unknown field; did you mean 'epochs'"):
        apply_overrides(recipe, {"recovery.epoch": "1"})
