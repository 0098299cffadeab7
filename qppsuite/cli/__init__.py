"""The ``qppsuite`` command: a thin typer app.

Each command group lives in its own module and registers itself on :data:`app`;
commands parse, call the library, and print.  User errors are
:class:`~qppsuite.errors.QppsuiteError` and become one red line.
"""

import os
import sys

import typer
from rich.console import Console

from qppsuite.errors import QppsuiteError

app = typer.Typer(
    name="qppsuite",
    help="Whole-system dynamic analysis of ARM Linux: boot an image, stack plugins, query the logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

# Command modules register on `app` when imported; keep one import per command group.
from qppsuite.cli import (  # noqa: E402
    image_cmd,  # noqa: F401
    logs_cmd,  # noqa: F401
    plugins_cmd,  # noqa: F401
    profile_cmd,  # noqa: F401
    record_cmd,  # noqa: F401
    run_cmd,  # noqa: F401
)


def main() -> None:
    """Entry point: run the app, turning user errors into one red line."""
    debug = "--debug" in sys.argv or os.environ.get("QPPSUITE_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        app()
    except QppsuiteError as err:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        if err.hint:
            err_console.print(f"[dim]hint: {err.hint}[/]", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)
