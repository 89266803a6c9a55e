"""Everything prunekit imports is declared in pyproject.toml (a plain ``pip install .`` must work).

click was imported by the CLI without being declared, and typer 0.29 stopped pulling it in: the
CLI then failed on a clean install. This test reads every import in ``src/prunekit`` and maps it to
its distribution; ``scripts/check_plain_install.sh`` does the real install in a fresh venv.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "prunekit"
_ALIASES = {"pynvml": "nvidia-ml-py", "yaml": "pyyaml", "sklearn": "scikit-learn"}  # module -> distribution


def _names(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_names(d) for d in project["dependencies"]}
    extras = {_names(d) for deps in project.get("optional-dependencies", {}).values() for d in deps}
    return core, extras


def _imports(tree: ast.Module) -> list[tuple[str, bool, bool]]:
    """(top-level module, imported at module level, guarded by try/except ImportError)."""
    found: list[tuple[str, bool, bool]] = []

    def visit(node: ast.AST, top: bool, guarded: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], top, guarded) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], top, guarded))
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only
            elif isinstance(child, ast.Try):
                catches = " ".join(ast.unparse(h.type) for h in child.handlers if h.type is not None)
                g = guarded or "ImportError" in catches or "Exception" in catches
                for part in child.body:
                    visit(ast.Module(body=[part], type_ignores=[]), top, g)
                for part in child.handlers + child.orelse + child.finalbody:
                    visit(part, top, guarded)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                visit(child, False if not isinstance(child, ast.ClassDef) else top, guarded)
            else:
                visit(child, top, guarded)

    visit(tree, True, False)
    return found


def test_every_import_is_declared():
    core, extras = _declared()
    dists = md.packages_distributions()
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        for module, top, guarded in _imports(ast.parse(path.read_text(), str(path))):
            if module in sys.stdlib_module_names or module in ("prunekit", "__future__") or guarded:
                continue
            owners = {_names(d) for d in dists.get(module, [_ALIASES.get(module, module)])}
            where = path.relative_to(ROOT)
            if top and not owners & core:
                problems.append(f"{where}: module-level import of '{module}' ({', '.join(sorted(owners))}) "
                                f"is not a core dependency")
            elif not owners & (core | extras):
                problems.append(f"{where}: import of '{module}' is declared nowhere in pyproject.toml")
    assert problems == []


def test_the_checker_catches_an_undeclared_import():
    tree = ast.parse("import click\n\ndef f():\n    import transformers\n    try:\n        import pynvml\n"
                     "    except ImportError:\n        pass\n")
    assert _imports(tree) == [("click", True, False), ("transformers", False, False), ("pynvml", False, True)]
    core, _ = _declared()
    owners = {_names(d) for d in md.packages_distributions().get("click", ["click"])}
    assert not owners & core  # click is not declared: a module-level import of it is reported
