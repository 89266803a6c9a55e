"""Recipe validation: every rule fails with the key path, the rule and the offending value."""

from __future__ import annotations

import copy

import pytest

from prunekit.errors import RecipeError
from prunekit.recipes.loader import RecipeFieldError, recipe_from_dict
from prunekit.recipes.schema import Recipe

BASE = {"name": "t", "model": {"builtin": "digits_cnn"}, "data": {"builtin": "digits"}}


def _with(**sections: object) -> dict:
    data = copy.deepcopy(BASE)
    data.update(sections)
    return data


def test_minimal_recipe_fills_defaults() -> None:
    recipe = recipe_from_dict(BASE)
    assert isinstance(recipe, Recipe)
    assert recipe.output_dir == "runs/t"
    assert recipe.pruning.enabled is False  # a section left out is off
    assert recipe.quantization.enabled is False
    assert recipe.evaluation.batch_sizes == [1, 32]


def test_written_section_is_on_by_default() -> None:
    recipe = recipe_from_dict(_with(pruning={"target": {"ratio": 0.3}}))
    assert recipe.pruning.enabled is True
    assert recipe.pruning.target.ratio == 0.3
    assert recipe.pruning.target.metric == "macs"


@pytest.mark.parametrize(
    ("sections", "key", "piece"),
    [
        ({"pruning": {"target": {"ratio": 1.5}}}, "pruning.target.ratio", "must be in (0, 1), got 1.5"),
        ({"pruning": {"target": {"ratio": 0}}}, "pruning.target.ratio", "must be in (0, 1), got 0"),
        ({"pruning": {"per_layer": {"stem.0": 1.0}}}, "pruning.per_layer.stem.0", "must be in [0, 1), got 1.0"),
        ({"quantization": {"percentile": 0}}, "quantization.percentile", "must be in (0, 100], got 0"),
        ({"quantization": {"percentile": 100.5}}, "quantization.percentile", "got 100.5"),
        ({"recovery": {"epochs": -1}}, "recovery.epochs", "must be >= 0, got -1"),
        ({"recovery": {"lr": 0}}, "recovery.lr", "must be > 0, got 0"),
        ({"recovery": {"epochs": "many"}}, "recovery.epochs", "must be an integer, got 'many'"),
        ({"recovery": {"warmup": 1.0}}, "recovery.warmup", "must be in [0, 1), got 1.0"),
        ({"recovery": {"warmup": 0.1, "scheduler": "onecycle"}}, "recovery", "would warm up twice"),
        ({"recovery": {"distillation": {"alpha": 1.2}}}, "recovery.distillation.alpha", "must be in [0, 1], got 1.2"),
        ({"evaluation": {"batch_sizes": [1, 0]}}, "evaluation.batch_sizes[1]", "must be >= 1, got 0"),
        ({"evaluation": {"batch_sizes": [8, 8]}}, "evaluation.batch_sizes", "must not repeat"),
        ({"evaluation": {"kfold": 1}}, "evaluation.kfold", "must be 0 (off) or >= 2, got 1"),
        ({"data": {"builtin": "digits", "batch_size": 0}}, "data.batch_size", "must be >= 1, got 0"),
        ({"export": {"opset": 9}}, "export.opset", "must be in [13, 23], got 9"),
    ],
)
def test_range_errors_name_key_rule_and_value(sections: dict, key: str, piece: str) -> None:
    with pytest.raises(RecipeFieldError) as info:
        recipe_from_dict(_with(**sections), source="r.yaml")
    message = str(info.value)
    assert message.startswith(f"r.yaml: {key}: ")
    assert piece in message
    assert info.value.key_path == key
    assert "\n" not in message


def test_unknown_field_suggests_the_close_name() -> None:
    with pytest.raises(RecipeError, match=r"^r\.yaml: pruning\.critrion: unknown field; did you mean 'criterion'\?$"):
        recipe_from_dict(_with(pruning={"critrion": "l2"}), source="r.yaml")


def test_unknown_top_level_field_lists_known_fields_when_nothing_is_close() -> None:
    with pytest.raises(RecipeError, match=r"zzz: unknown field; known fields: name, seed, output_dir"):
        recipe_from_dict(_with(zzz=1))


def test_literal_error_lists_choices_and_suggests() -> None:
    with pytest.raises(RecipeError, match=r"recovery\.optimizer: must be one of sgd, adam, adamw, got 'adm'; did you mean 'adam'\?"):
        recipe_from_dict(_with(recovery={"optimizer": "adm"}))


def test_unknown_builtin_model_suggests() -> None:
    with pytest.raises(RecipeError, match=r"model\.builtin: unknown built-in model 'digits_cn'; did you mean 'digits_cnn'\?"):
        recipe_from_dict(_with(model={"builtin": "digits_cn"}))


@pytest.mark.parametrize(
    ("model", "piece"),
    [
        ({"builtin": "mlp", "factory": "a.b:c"}, "model: give exactly one of 'builtin' or 'factory' or 'hf', got 'builtin' and 'factory'"),
        ({"kwargs": {}}, "model: give exactly one of 'builtin' or 'factory' or 'hf', got none"),
        ({"factory": "no_colon"}, "model.factory: must look like 'package.module:function', got 'no_colon'"),
    ],
)
def test_model_source_is_exactly_one(model: dict, piece: str) -> None:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(_with(model=model))
    assert piece in str(info.value)


def test_data_source_is_exactly_one_of_three() -> None:
    with pytest.raises(RecipeError, match="data: give exactly one of 'builtin' or 'npz' or 'factory' or 'text', got 'builtin' and 'npz'"):
        recipe_from_dict(_with(data={"builtin": "digits", "npz": "x.npz"}))


def test_nm_needs_granularity_nm_and_n_below_m() -> None:
    with pytest.raises(RecipeError, match=r"pruning: granularity: nm needs nm: \[n, m\]"):
        recipe_from_dict(_with(pruning={"granularity": "nm"}))
    with pytest.raises(RecipeError, match=r"nm: \[n, m\] needs n < m, got \[4, 2\]"):
        recipe_from_dict(_with(pruning={"granularity": "nm", "nm": [4, 2]}))
    with pytest.raises(RecipeError, match="nm is only used with granularity: nm"):
        recipe_from_dict(_with(pruning={"nm": [2, 4]}))
    assert recipe_from_dict(_with(pruning={"granularity": "nm", "nm": [2, 4]})).pruning.nm == (2, 4)



def test_oneshot_methods_need_a_masked_granularity() -> None:
    with pytest.raises(RecipeError, match="method: wanda needs granularity: unstructured or nm"):
        recipe_from_dict(_with(pruning={"method": "wanda"}))
    spec = recipe_from_dict(_with(pruning={"granularity": "nm", "nm": [2, 4], "method": "sparsegpt"})).pruning
    assert spec.method == "sparsegpt"


def test_schedule_knobs_must_fit_kind() -> None:
    with pytest.raises(RecipeError, match="pruning.schedule: a oneshot schedule has steps: 1, got 3"):
        recipe_from_dict(_with(pruning={"schedule": {"kind": "oneshot", "steps": 3}}))
    with pytest.raises(RecipeError, match="tolerance and initial_step apply to kind: adaptive only"):
        recipe_from_dict(_with(pruning={"schedule": {"kind": "iterative", "steps": 3, "tolerance": 0.01}}))
    sched = recipe_from_dict(_with(pruning={"schedule": {"kind": "adaptive", "steps": 5, "initial_step": 0.1}})).pruning.schedule
    assert (sched.kind, sched.steps, sched.initial_step) == ("adaptive", 5, 0.1)


def test_onnx_export_cannot_be_switched_off() -> None:
    # every figure of the report is measured on the ONNX export: false was silently ignored, now refused
    with pytest.raises(RecipeError, match=r"export.onnx.*false is not supported.*remove export.onnx"):
        recipe_from_dict(_with(export={"onnx": False}))
    assert recipe_from_dict(_with(export={"onnx": True})).export.onnx is True



def test_missing_required_and_count_of_more_problems() -> None:
    with pytest.raises(RecipeError, match=r"^<dict>: model: required field is missing; add it \(\+1 more: data\)$"):
        recipe_from_dict({"name": "x"})


def test_section_of_wrong_type() -> None:
    with pytest.raises(RecipeError, match=r"pruning: must be a mapping \(a YAML section\), got 5"):
        recipe_from_dict(_with(pruning=5))


def test_name_must_be_filename_safe() -> None:
    with pytest.raises(RecipeError, match="name: must use only letters, digits"):
        recipe_from_dict(_with(name="a/b"))


def test_assignment_is_validated() -> None:
    recipe = recipe_from_dict(BASE)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
        recipe.pruning.target.ratio = 2.0


def test_recovery_warmup_reaches_the_finetune_config(tmp_path) -> None:
    from types import SimpleNamespace

    from prunekit.recipes.runner import _Run

    recipe = recipe_from_dict(_with(recovery={"epochs": 1, "warmup": 0.25}))
    assert recipe.recovery.warmup == 0.25 and recipe_from_dict(_with()).recovery.warmup == 0.0
    config = _Run.finetune_config(SimpleNamespace(recipe=recipe, work=tmp_path), epochs=1, lr=0.01, optimizer="adam",
                                  weight_decay=0.0, name="recovery", warmup=recipe.recovery.warmup)
    assert config.warmup == 0.25
