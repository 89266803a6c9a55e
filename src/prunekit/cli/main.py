"""The ``prunekit`` typer app: global options, error handling, and one command per module.

Command modules import only typer at load time; torch and the pipeline load when a command
runs, so ``prunekit --help`` stays fast.
"""

from __future__ import annotations

import typer

from prunekit import __version__
from prunekit.cli import analyze, demo, run, sensitivity, validate
from prunekit.cli._common import PrunekitGroup

app = typer.Typer(
    cls=PrunekitGroup,
    name="prunekit",
    help="Compress PyTorch models: structural pruning, int8 quantization, distillation, with measured proof.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"prunekit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Compress PyTorch models with measured proof. Start with `prunekit demo`."""


app.command("demo")(demo.demo)
app.command("run")(run.run)
app.command("analyze")(analyze.analyze)
app.command("sensitivity")(sensitivity.sensitivity)
app.command("validate")(validate.validate)

if __name__ == "__main__":  # python -m prunekit.cli.main
    app()
