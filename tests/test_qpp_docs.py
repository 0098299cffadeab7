"""docs/plugins.md stays true: its example plugins are saved as files and run as written."""

from __future__ import annotations

import re
import runpy
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qppsuite.cli import app
from qppsuite.core.qpp import parse_plugin_args, parse_plugin_list

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(DOC.read_text()) if lang == language]


def python_files() -> dict[str, str]:
    """Every python block, keyed by the file name on its first line (``# name.py``)."""
    files = {}
    for body in blocks("python"):
        first = body.splitlines()[0]
        match = re.fullmatch(r"# (\w+\.py)", first)
        assert match, f"python block without a '# file.py' first line: {first!r}"
        files[match.group(1)] = body
    return files


def test_every_python_block_is_a_named_file_and_the_example_is_complete() -> None:
    assert set(python_files()) == {"asid_watch.py", "asid_log.py", "drive.py"}


def test_the_example_runs_and_prints_what_the_doc_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, body in python_files().items():
        (tmp_path / name).write_text(body)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "drive.py"), run_name="__main__")
    printed = capsys.readouterr().out
    expected = next(body for body in blocks("text") if not body.startswith("qppsuite"))
    assert printed == expected
    assert (tmp_path / "spaces.txt").read_text() == expected


def test_the_example_command_line_parses() -> None:
    command = next(body for body in blocks("text") if body.startswith("qppsuite run"))
    argv = shlex.split(command)
    plugins = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--plugins"]
    items = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-p"]
    assert parse_plugin_list(plugins) == ["./asid_watch.py", "./asid_log.py"]
    assert parse_plugin_args(items) == {"asid_log": {"out": "spaces.txt"}}


def test_the_plugins_output_shown_is_what_the_command_prints() -> None:
    """Each ``$ COLUMNS=80 qppsuite plugins ...`` session prints its lines in order (``...`` skips some)."""
    sessions = [body.splitlines() for body in blocks("console") if body.startswith("$ COLUMNS=80 qppsuite plugins")]
    assert len(sessions) == 2
    for command, *shown in sessions:
        argv = shlex.split(command[2:])
        result = CliRunner().invoke(app, argv[2:], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        printed = iter(result.output.splitlines())
        for line in shown:
            assert line == "..." or line in printed, f"{command}: {line!r} is not printed (in this order)"


def test_the_worked_example_quotes_file_activity_as_it_is() -> None:
    """Each ``py`` excerpt of "A worked example: file_activity" is a passage of the plugin's source, verbatim."""
    text = DOC.read_text()
    section = text[text.index("## A worked example: `file_activity`") : text.index("## Moving from API v1")]
    source = (DOC.parents[1] / "qppsuite" / "plugins" / "file_activity" / "__init__.py").read_text()
    excerpts = [body for lang, body in BLOCK.findall(section) if lang == "py"]
    assert len(excerpts) == 5
    for excerpt in excerpts:
        assert excerpt in source, excerpt

