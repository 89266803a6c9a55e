"""What the commands share: one-line error reporting, the run-and-summarize step, option parsing.

Imports here stay light (typer, rich); torch and the pipeline load inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from prunekit.errors import PrunekitError, RecipeError

if TYPE_CHECKING:
    from prunekit.recipes.schema import Recipe

EXIT_ERROR = 1
EXIT_ACCURACY = 3  # --strict: the run finished but broke the recipe's max_accuracy_drop
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it


class PrunekitGroup(TyperGroup):
    """Turns any PrunekitError (or missing file) raised by a command into one red line and exit 1.

    ``prunekit --debug ...`` re-raises instead, so the full traceback shows.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        """``--debug`` works anywhere on the line (``prunekit run r.yaml --debug``), not only first."""
        if "--debug" in args and "--" not in args:
            args = ["--debug", *[a for a in args if a != "--debug"]]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PrunekitError, FileNotFoundError) as exc:
            if ctx.params.get("debug"):
                raise
            print_error(exc)
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            if ctx.params.get("debug"):
                raise
            resumable = ctx.invoked_subcommand in ("run", "demo")
            print_error(KeyboardInterrupt("interrupted; finished epochs are kept in the run's .partial folder: "
                                          "rerun the same command with --resume to continue from them"
                                          if resumable else "interrupted"))
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen fault: one line, the trace on --debug
            if ctx.params.get("debug") or _is_usage_error(exc):
                raise
            print_error(RuntimeError(f"unexpected {type(exc).__name__}: {_first_line(exc)} (rerun with --debug "
                                     f"for the traceback and report it)"))
            raise typer.Exit(EXIT_ERROR) from None


def _is_usage_error(exc: BaseException) -> bool:
    """Click's own exceptions (usage errors, exit) carry their exit code: let click handle them."""
    return type(exc).__module__.split(".")[0] in ("click", "typer")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""


def print_error(exc: BaseException) -> None:
    """Write ``error: <first line of the message>`` in red on stderr, never wrapped."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"[bold red]error:[/] {escape(text)}")


def parse_overrides(pairs: Sequence[str] | None) -> dict[str, str]:
    """``["recovery.epochs=2", ...]`` -> ``{"recovery.epochs": "2"}`` (values parsed later as YAML)."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set recovery.epochs=2")
        out[key.strip()] = value.strip()
    return out


def run_and_summarize(recipe: Recipe, *, resume: bool, strict: bool = False) -> None:
    """Run the pipeline, then print the summary table and where the report is."""
    from prunekit.recipes.runner import run_recipe
    from prunekit.reporting.tables import summary_table

    console = Console()
    report = run_recipe(recipe, console=console, resume=resume)
    if report is None:  # a non-zero rank under torchrun: rank 0 reports
        return
    console.print(summary_table(report))
    for line in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(str(line))}")
    console.print(f"report: {escape(str(recipe.output_dir))}/report.html")
    if report.accuracy_ok is False:
        drop = -(report.ratios()["accuracy_delta"] or 0.0)
        console.print(f"[bold yellow]accuracy dropped {100 * drop:.2f} pts, more than the recipe's "
                      f"max_accuracy_drop of {100 * (report.max_accuracy_drop or 0):.2f} pts[/]")
        if strict:
            raise typer.Exit(EXIT_ACCURACY)
