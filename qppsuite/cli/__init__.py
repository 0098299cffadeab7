"""The ``qppsuite`` command: a thin typer app.

Each command group lives in its own module and registers itself on :data:`app`;
commands parse, call the library, and print.  User errors are
:class:`~qppsuite.errors.QppsuiteError` and become one red line.
"""

import os
import sys

import typer

from qppsuite.cli.terminal import SafeConsole, styled
from qppsuite.errors import QppsuiteError

app = typer.Typer(
    name="qppsuite",
    help="Whole-system dynamic analysis of ARM Linux: boot an image, stack plugins, query the logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = SafeConsole(stderr=True)

# Command modules register on `app` when imported; keep one import per command group.
from qppsuite.cli import (  # noqa: E402
    batch_cmd,  # noqa: F401
    batch_merge_cmd,  # noqa: F401
    image_cmd,  # noqa: F401
    logs_cmd,  # noqa: F401
    plugin_cmd,  # noqa: F401
    plugins_cmd,  # noqa: F401
    profile_cmd,  # noqa: F401
    record_cmd,  # noqa: F401
    report_cmd,  # noqa: F401
    run_cmd,  # noqa: F401
    snapshot_cmd,  # noqa: F401
)


def main() -> None:
    """Entry point: run the app, turning user errors into one red line."""
    debug = "--debug" in sys.argv or os.environ.get("QPPSUITE_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        code = app(standalone_mode=False)
    except QppsuiteError as err:
        if debug:
            raise
        _error_line(str(err), err.hint)
        sys.exit(err.exit_code)
    except typer.TyperException as err:  # a bad option or argument, as the parser words it
        message = err.format_message()
        if message:  # empty when the parser has shown the help instead (a group given no command)
            _error_line(message, "see --help")
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print(styled(("interrupted", "bold red")))
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _error_line(message: str, hint: str | None) -> None:
    """One red line (and a dim hint); the message is data, shown literally."""
    err_console.print(styled(("error:", "bold red"), f" {message}"), soft_wrap=True)
    if hint:
        err_console.print(styled((f"hint: {hint}", "dim")), soft_wrap=True)
