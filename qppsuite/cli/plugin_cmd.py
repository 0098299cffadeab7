"""``qppsuite plugin new NAME``: write a plugin package to start from (:mod:`qppsuite.scaffold`)."""

from pathlib import Path
from typing import Annotated

import typer

from qppsuite.cli import app
from qppsuite.cli.terminal import SafeConsole, styled
from qppsuite.scaffold import write_package

plugin_app = typer.Typer(help="Make your own analysis plugin.", no_args_is_help=True)
app.add_typer(plugin_app, name="plugin")
console = SafeConsole()


@plugin_app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="The plugin's name: its module, entry point and --plugins name")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to put the package's directory NAME", file_okay=False)
    ] = Path("."),
) -> None:
    """Write a ready plugin package DIR/NAME: the plugin, its entry point in pyproject.toml, and a test that
    boots the guest with it. `pip install -e DIR/NAME` makes it available to `--plugins NAME`."""
    root = write_package(name, directory)
    console.print(styled(("wrote ", "green"), str(root)))
    # One interpreter for the three: a `qppsuite` on PATH may belong to another environment than this pip's.
    steps = (
        f"python -m pip install -e {root}",
        f'python -m qppsuite run --plugins {name} --cmd "ls /"',
        f"python -m pytest {root}",
    )
    for step in steps:
        console.print(styled("  ", (step, "bold")))
