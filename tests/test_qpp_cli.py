"""``qppsuite plugins [NAME]``: the listing, one plugin's details, and the one-line error."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from qppsuite.cli import app, main, plugins_cmd
from qppsuite.errors import PluginError

PAIR = Path(__file__).parent / "qpp_plugins"
WIDE = {"COLUMNS": "240"}


@pytest.fixture
def cli() -> typer.Typer:
    """The plugins command alone, so these tests do not depend on the other command groups."""
    alone = typer.Typer()
    alone.command("plugins")(plugins_cmd.plugins)
    alone.command("unused")(lambda: None)  # two commands keep typer from collapsing into one
    return alone


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    site = tmp_path / "site"
    (site / "clitiny-1.0.dist-info").mkdir(parents=True)
    (site / "clitiny-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: clitiny\nVersion: 1.0\n")
    (site / "clitiny-1.0.dist-info" / "entry_points.txt").write_text(
        "[qppsuite.plugins]\ncli_tiny = cli_tiny_plugin:CliTiny\n"
    )
    (site / "cli_tiny_plugin.py").write_text(
        "from qppsuite.core.qpp import Plugin\n"
        "class CliTiny(Plugin):\n"
        "    '''Installed from a distribution.'''\n"
        "    name = 'cli_tiny'\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("cli_tiny_plugin", None)


def test_plugins_is_registered_on_the_main_app() -> None:
    assert "plugins" in [command.name for command in app.registered_commands]


def test_listing_shows_core_builtins_and_installed_plugins(cli: typer.Typer, installed: None) -> None:
    result = CliRunner().invoke(cli, ["plugins"], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    core = next(line for line in lines if line.startswith("│ core "))
    assert "host" in core and "on_start" in core  # callbacks continue on the following lines
    assert "on_svc" in result.output
    tiny = next(line for line in lines if line.startswith("│ cli_tiny "))
    assert "entry point" in tiny and "Installed from a distribution." in tiny
    for builtin in ("osi_linux", "syscalls", "syscalls_logger"):
        assert any(line.startswith(f"│ {builtin} ") and "built-in" in line for line in lines)


def test_one_plugin_by_path_shows_exports_with_signatures_and_callbacks(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["plugins", str(PAIR / "qpp_srv.py")], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("qpp_srv — Exports add/sub and runs my_on_exit when it unloads")
    assert f"source: file {(PAIR / 'qpp_srv.py').resolve()}" in out
    assert "│ add      │ (x: int) -> int │ The C test's qpp_srv_do_add: one more than x." in out
    assert "callbacks: my_on_exit" in out and "arguments: none" in out


def test_one_plugin_shows_its_arguments_and_requirements(cli: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "argful.py"
    path.write_text(
        "from typing import Any, ClassVar\n"
        "from qppsuite.core.qpp import Arg, Plugin\n"
        "class Argful(Plugin):\n"
        "    name = 'argful'\n"
        "    requires = ('qpp_srv',)\n"
        "    args: ClassVar[Any] = {'dump': Arg(str, 'ps', help='what to dump', choices=('ps', 'maps'))}\n"
    )
    result = CliRunner().invoke(cli, ["plugins", str(path)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "requires: qpp_srv" in result.output and "exports: none" in result.output
    assert "│ dump     │ str  │ 'ps'    │ ps, maps │ what to dump │" in result.output


def test_core_can_be_described(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["plugins", "core"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "source: host qppsuite.core.events.CorePlugin" in result.output
    assert "on_asid_change" in result.output


def test_unknown_plugin_is_a_plugin_error(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["plugins", "sycalls"])
    assert isinstance(result.exception, PluginError)
    assert "did you mean 'syscalls'" in str(result.exception)


def test_main_prints_one_red_line_for_a_plugin_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["qppsuite", "plugins", "./no/such/plugin.py"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: plugin file ") and err[0].endswith("does not exist")
