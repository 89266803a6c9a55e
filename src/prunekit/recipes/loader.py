"""Read, validate, override and write recipes; every failure is one line naming file, key and fix.

Examples
--------
>>> recipe = recipe_from_dict({"name": "x", "model": {"builtin": "mlp"}, "data": {"builtin": "digits"}})
>>> recipe.output_dir
'runs/x'
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from prunekit.fileio import write_text_atomic
from prunekit.errors import RecipeError
from prunekit.recipes.schema import Recipe

SectionT = TypeVar("SectionT", bound=BaseModel)
_INPUT_PATHS = (("model", "weights"), ("data", "npz"))  # resolved against the recipe's folder


class RecipeFieldError(RecipeError):
    """A recipe value breaks its rule; ``key_path`` is the dotted path, e.g. ``pruning.target.ratio``."""

    def __init__(self, message: str, *, source: str, key_path: str) -> None:
        super().__init__(message)
        self.source = source
        self.key_path = key_path


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loading that refuses a key written twice in one mapping (YAML keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is written twice; keep one", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Load and validate a YAML recipe.

    Relative ``model.weights`` and ``data.npz`` paths are resolved against the recipe's folder,
    so a recipe and its files can move together; a ``factory`` module may sit in that folder too
    (it is appended to ``sys.path``).

    Raises
    ------
    RecipeError
        The file is missing or unreadable, is not valid YAML, or breaks a rule of the schema
        (a :class:`RecipeFieldError` carrying ``key_path``).
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{source}: recipe file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{source}: cannot read recipe file ({exc}); give a UTF-8 YAML file") from None
    data = _parse_yaml(text, source)
    for section, key in _INPUT_PATHS:
        block = data.get(section)
        if isinstance(block, dict) and isinstance(block.get(key), str) and not Path(block[key]).is_absolute():
            block[key] = str((path.parent / block[key]).resolve())
    _resolve_text_paths(data, path.parent)
    recipe = recipe_from_dict(data, source=source)
    if recipe.model.factory or recipe.data.factory:
        add_import_folder(path.parent)
    return recipe


def add_import_folder(folder: str | os.PathLike[str]) -> None:
    """Make modules next to a recipe importable by its factories, as weights and ``.npz`` paths resolve.

    The folder goes at the END of ``sys.path``: an installed package of the same name still wins.
    """
    import sys

    resolved = str(Path(folder).resolve())
    if resolved not in sys.path:
        sys.path.append(resolved)


def _resolve_text_paths(data: dict[str, Any], folder: Path) -> None:
    """``data.text.files`` against the recipe's folder; ``model.hf`` too when that folder holds it
    (otherwise it may name an installed package)."""
    text = data.get("data", {}).get("text") if isinstance(data.get("data"), dict) else None
    if isinstance(text, dict) and isinstance(text.get("files"), str) and not Path(text["files"]).is_absolute():
        text["files"] = str((folder / text["files"]).resolve())
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("hf"), str) and (folder / model["hf"]).is_dir():
        model["hf"] = str((folder / model["hf"]).resolve())


def recipe_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Recipe:
    """Validate a mapping (already parsed YAML, or built in Python) into a :class:`Recipe`.

    Raises
    ------
    RecipeError
        ``data`` is not a mapping, or a :class:`RecipeFieldError` for the first broken rule
        (with a count of further problems).
    """
    if not isinstance(data, Mapping):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return validate_section(Recipe, data, source=source)


def validate_section(model: type[SectionT], data: Mapping[str, Any], *, source: str, key: str = "") -> SectionT:
    """Validate ``data`` as one schema section (``key`` is its place in a recipe, e.g. ``"model"``).

    Lets commands that build a section from flags (``prunekit analyze``) report errors exactly
    as a recipe file would.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        prefix = tuple(key.split(".")) if key else ()
        errors = [{**e, "loc": prefix + tuple(e["loc"])} for e in exc.errors()]
        key_path, rule = _describe(errors[0])
        more = f" (+{len(errors) - 1} more: {', '.join(_path(e['loc']) or '<top>' for e in errors[1:4])})" if len(errors) > 1 else ""
        where = f"{key_path}: " if key_path else ""
        raise RecipeFieldError(f"{source}: {where}{rule}{more}", source=source, key_path=key_path) from None


def dump_recipe(recipe: Recipe, path: str | os.PathLike[str] | None = None) -> str:
    """Return the recipe as YAML (every field, defaults filled in) and write it to ``path`` if given.

    The file is written to a temporary name and renamed, so a reader never sees half a recipe.
    """
    text = yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
    if path is not None:
        write_text_atomic(path, text)
    return text


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any], *, source: str = "overrides") -> Recipe:
    """Return a new recipe with dotted keys replaced, e.g. ``{"recovery.epochs": 1}``; re-validated.

    Values given as strings are parsed as YAML scalars (``"1"`` -> 1, ``"[1, 32]"`` -> list), so
    ``--set key=value`` on the command line behaves like writing the value in the file.
    """
    data = recipe.model_dump(mode="python")
    for dotted, value in overrides.items():
        if isinstance(value, str):
            value = _parse_yaml_value(value, f"{source}: {dotted}")
        node = data
        keys = dotted.split(".")
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key) if isinstance(node, dict) else None
            if child is None and isinstance(node, dict) and key in node:
                child = node[key] = {}  # an optional section left out, e.g. model.train_baseline
            if not isinstance(child, dict):
                raise RecipeFieldError(
                    f"{source}: {'.'.join(keys[: depth + 1])}: is not a section, cannot set {dotted}",
                    source=source, key_path=dotted,
                )
            node = child
        node[keys[-1]] = value
    return recipe_from_dict(data, source=source)


def _parse_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{source}: invalid YAML{where}: {problem}; fix the syntax") from None
    if data is None:
        raise RecipeError(f"{source}: recipe file is empty; start from examples/digits_demo.yaml")
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data


def _parse_yaml_value(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise RecipeError(f"{where}: cannot parse value {text!r} as YAML; quote it or fix it") from None


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_TYPE_RULES = {
    "int_parsing": "must be an integer", "int_type": "must be an integer", "int_from_float": "must be an integer",
    "float_parsing": "must be a number", "float_type": "must be a number",
    "bool_parsing": "must be true or false", "bool_type": "must be true or false",
    "string_type": "must be a string", "string_too_short": "must not be empty",
    "string_pattern_mismatch": "must use only letters, digits, '_', '.' or '-'",
    "model_type": "must be a mapping (a YAML section)", "model_attributes_type": "must be a mapping (a YAML section)",
    "dict_type": "must be a mapping", "list_type": "must be a list", "tuple_type": "must be a list",
    "too_short": "has too few items", "too_long": "has too many items",
}


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    """Turn one pydantic error into (key path, 'rule, got value; fix')."""
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    key_path = _path(loc)
    if kind.startswith("prunekit_"):
        return key_path, error["msg"]
    if kind == "extra_forbidden":
        known = _field_names(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(known)}"
        return key_path, f"unknown field; {hint}"
    if kind == "missing":
        return key_path, "required field is missing; add it"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return key_path, f"must be one of {', '.join(options)}, got {value!r}{hint}"
    rule = _TYPE_RULES.get(kind) or error["msg"][:1].lower() + error["msg"][1:]
    return key_path, f"{rule}, got {_short(value)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_names(loc: tuple) -> list[str]:
    """Field names of the schema section at ``loc`` (for 'did you mean'); empty if not a section."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        model = _model_in(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def builtin_recipe_path(name: str) -> Path:
    """Path of a recipe shipped inside the package (``prunekit/recipes/builtin/<name>.yaml``)."""
    from importlib.resources import files

    folder = files("prunekit") / "recipes" / "builtin"
    path = Path(str(folder / f"{name}.yaml"))
    if not path.is_file():
        known = sorted(p.stem for p in Path(str(folder)).glob("*.yaml"))
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
        raise RecipeError(f"no built-in recipe named {name!r}; {hint}")
    return path
