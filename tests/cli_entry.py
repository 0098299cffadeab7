"""The ``qppsuite`` entry point run in-process, as a user's shell would see its exit code and stderr.

typer's CliRunner calls the app, not :func:`qppsuite.cli.main`, which is where errors become one line.
"""

import io
import sys

import pytest

from qppsuite.cli import main


def run_main(args: list[str]) -> tuple[int, str]:
    """Exit code and stderr of ``qppsuite ARGS``; stdout is dropped."""
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as ended:
        patch.setattr(sys, "argv", ["qppsuite", *args])
        errors = io.StringIO()
        patch.setattr(sys, "stderr", errors)
        patch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO()))  # with a .buffer, as `run` writes bytes
        main()
    return int(ended.value.code or 0), errors.getvalue()
