"""``qppsuite plugins [NAME]``: the listing, one plugin's details, and the one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from cli_entry import run_main
from typer.testing import CliRunner

from qppsuite.cli import app, main, plugins_cmd
from qppsuite.core.qpp import discover_all

PAIR = Path(__file__).parent / "qpp_plugins"
WIDE = {"COLUMNS": "240"}


@pytest.fixture
def cli() -> typer.Typer:
    """The plugins command alone, so these tests do not depend on the other command groups."""
    alone = typer.Typer()
    alone.command("plugins")(plugins_cmd.plugins)
    alone.command("unused")(lambda: None)  # two commands keep typer from collapsing into one
    return alone


def install(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """An installed distribution as pip lays it out: a .dist-info with entry_points.txt, and its modules."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    listed = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[qppsuite.plugins]\n{listed}")
    for module, text in modules.items():
        (site / f"{module}.py").write_text(text)


def plugin_module(class_name: str, name: str, doc: str) -> str:
    return f"from qppsuite.core.qpp import Plugin\nclass {class_name}(Plugin):\n    {doc!r}\n    name = {name!r}\n"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for fake installed distributions; their modules are forgotten afterwards."""
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(directory)):
            del sys.modules[name]


@pytest.fixture
def installed(site: Path) -> None:
    install(
        site,
        "clitiny",
        {"cli_tiny": "cli_tiny_plugin:CliTiny"},
        {"cli_tiny_plugin": plugin_module("CliTiny", "cli_tiny", "Installed from a distribution.")},
    )


def test_plugins_is_registered_on_the_main_app() -> None:
    assert "plugins" in [command.name for command in app.registered_commands]


LONG = "A plugin whose description goes on well past the edge of an eighty-column terminal window, and on"
BOX = set("─│┃━┏┓┗┛┡┩└┘┌┐├┤┼╇")


@pytest.fixture
def long_described(site: Path) -> None:
    module = plugin_module("L", "cli_long_named_plugin", LONG)
    install(site, "clilong", {"cli_long_named_plugin": "cli_long:L"}, {"cli_long": module})


def listing(cli: typer.Typer, env: dict[str, str] | None = None) -> list[str]:
    result = CliRunner().invoke(cli, ["plugins"], env=env)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_listing_is_one_line_per_plugin_cut_at_80_columns_never_in_a_name(
    cli: typer.Typer, installed: None, long_described: None
) -> None:
    lines = listing(cli, {"COLUMNS": "80"})
    names = [line.split()[0] for line in lines]
    assert names[0] == "core" and names[1:] == sorted(names[1:]) and len(names) == len(discover_all()) + 1
    assert {"cli_long_named_plugin", "cli_tiny", "osi_linux", "syscalls", "syscalls_logger"} <= set(names)
    assert all(len(line) <= 80 for line in lines) and not BOX & set("".join(lines))
    long = next(line for line in lines if line.startswith("cli_long_named_plugin "))
    assert "entry point  " in long and "clilong" not in long and long.endswith("…") and len(long) == 80
    assert LONG[:20] in long
    tiny = next(line for line in lines if line.startswith("cli_tiny "))
    assert tiny.split("  ")[-1] == "Installed from a distribution."
    core = next(line for line in lines if line.startswith("core "))
    assert " host " in core
    column = long.index("entry point")
    assert all(line.index("built-in") == column for line in lines if " built-in " in line)


def test_listing_in_a_pipe_keeps_every_line_whole(
    cli: typer.Typer, installed: None, long_described: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    lines = listing(cli)
    assert len(lines) == len(discover_all()) + 1 and not BOX & set("".join(lines)) and "…" not in "".join(lines)
    assert any(line.endswith(LONG) for line in lines)


def test_listing_through_a_real_pipe() -> None:
    root = Path(__file__).resolve().parents[1]
    terminal = ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")  # what would make rich see a terminal or a width
    env = {k: v for k, v in os.environ.items() if k not in terminal} | {"PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "qppsuite", "plugins"]
    whole = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    cut = subprocess.run(command, env=env | {"COLUMNS": "80"}, capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in whole]
    assert names[0] == "core" and "osi_linux" in names  # the host's core first, then the rest by name
    assert max(len(line) for line in whole) > 80  # core's description is longer than 80 columns less the rest
    assert [line.split()[0] for line in cut.stdout.splitlines()] == [line.split()[0] for line in whole]
    assert max(len(line) for line in cut.stdout.splitlines()) <= 80


def test_listing_shows_third_party_descriptions_as_data(cli: typer.Typer, site: Path) -> None:
    hostile = "[bold red]not markup[/] :x: \x1b]0;pwned\x07 \u202egnp.exe"
    module = plugin_module("H", "cli_hostile", hostile)
    install(site, "clihostile", {"cli_hostile": "cli_hostile_mod:H"}, {"cli_hostile_mod": module})
    line = next(line for line in listing(cli, WIDE) if line.startswith("cli_hostile "))
    assert line.endswith("[bold red]not markup[/] :x: \\x1b]0;pwned\\x07 \\u202egnp.exe")


def test_one_plugin_by_path_shows_exports_with_signatures_and_callbacks(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["plugins", str(PAIR / "qpp_srv.py")], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "qpp_srv — Exports add/sub and runs my_on_exit when it unloads",
        f"source: file {(PAIR / 'qpp_srv.py').resolve()}",
        "requires: none",
        "plugin API: v2",
        "arguments: none",
        "exports (qpp.import_function('qpp_srv', name)):",
        "  add(x: int) -> int",
        "      The C test's qpp_srv_do_add: one more than x.",
        "  sub(x: int) -> int",
        "      The C test's qpp_srv_do_sub: one less than x.",
        "callbacks (qpp.register('qpp_srv', name, fn, owner=...); fn takes arguments by name):",
        "  my_on_exit(passed: dict[str, bool])",
        "      qpp_srv unloads; a client sets passed['qpp_client']",
    ]


ARGFUL = (
    "from pathlib import Path\n"
    "from typing import Any, ClassVar\n"
    "from qppsuite.core.qpp import Arg, Plugin\n"
    "class Argful(Plugin):\n"
    "    name = 'argful'\n"
    "    requires = ('qpp_srv',)\n"
    "    args: ClassVar[Any] = {\n"
    "        'dump': Arg(str, 'ps', help='what to dump', choices=('ps', 'maps')),\n"
    "        'out': Arg(Path, Path('out.txt'), help='where the dump goes; ' + 'a long help text wraps ' * 4),\n"
    "    }\n"
)


def test_one_plugin_shows_its_arguments_and_requirements(cli: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "argful.py"
    path.write_text(ARGFUL)
    result = CliRunner().invoke(cli, ["plugins", str(path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "argful — (no description)"
    assert "requires: qpp_srv" in lines and "exports: none" in lines and "callbacks: none" in lines
    at = lines.index("arguments (-p argful:key=value):")
    assert lines[at + 1 : at + 4] == [
        "  dump: str = 'ps'  choices: 'ps', 'maps'",
        "      what to dump",
        "  out: path = 'out.txt'",
    ]
    help_lines = lines[at + 4 : lines.index("exports: none")]
    assert len(help_lines) > 1 and all(line.startswith("      ") and len(line) <= 80 for line in help_lines)


def test_core_can_be_described(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["plugins", "core"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "source: host qppsuite.core.events.CorePlugin" in result.output
    callbacks = [line for line in result.output.splitlines() if line.startswith("  on_")]
    assert callbacks == [
        "  on_start()",
        "  on_stop(reason: StopReason)",
        "  on_svc(event: SvcEvent)",
        "  on_exception(event: ExceptionEvent)",
        "  on_asid_change(switch: AddressSpaceSwitch)",
        "  on_console(data: bytes)",
    ]


LISTED_KEYS = ["name", "kind", "location", "distribution", "description", "duplicate", "error"]


def test_json_listing_shape(cli: typer.Typer, installed: None) -> None:
    result = CliRunner().invoke(cli, ["plugins", "--format", "json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert all(list(record) == LISTED_KEYS for record in records)
    by_name = {record["name"]: record for record in records}
    assert by_name["cli_tiny"] == {
        "name": "cli_tiny",
        "kind": "entry point",
        "location": "cli_tiny_plugin:CliTiny",
        "distribution": "clitiny 1.0",
        "description": "Installed from a distribution.",
        "duplicate": False,
        "error": None,
    }
    assert by_name["core"]["kind"] == "host" and by_name["osi_linux"]["kind"] == "built-in"
    assert by_name["osi_linux"]["distribution"] is None


def test_json_details_shape(cli: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "argful.py"
    path.write_text(ARGFUL)
    result = CliRunner().invoke(cli, ["plugins", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert list(record) == [*LISTED_KEYS, "requires", "api_version", "arguments", "exports", "callbacks"]
    assert record["name"] == "argful" and record["kind"] == "file" and record["location"] == str(path.resolve())
    assert record["requires"] == ["qpp_srv"] and record["api_version"] == 2
    assert record["arguments"][0] == {
        "name": "dump",
        "type": "str",
        "default": "ps",
        "choices": ["ps", "maps"],
        "help": "what to dump",
    }
    assert record["arguments"][1]["default"] == "out.txt"  # a Path default is its text
    srv = json.loads(CliRunner().invoke(cli, ["plugins", str(PAIR / "qpp_srv.py"), "--format", "json"]).output)
    assert srv["exports"][0] == {
        "name": "add",
        "signature": "(x: int) -> int",
        "description": "The C test's qpp_srv_do_add: one more than x.",
    }
    assert srv["callbacks"] == [
        {
            "name": "my_on_exit",
            "params": [{"name": "passed", "type": "dict[str, bool]"}],
            "description": "qpp_srv unloads; a client sets passed['qpp_client']",
        }
    ]


def test_signatures_name_types_without_their_modules(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["plugins", "osi_linux", "--format", "json"])
    exports = {e["name"]: e["signature"] for e in json.loads(result.output)["exports"]}
    assert exports["fd_to_filename"] == "(process: OsiProcess, fd: int) -> OsiFile | None"


def test_unknown_plugin_is_one_line_listing_the_available_names() -> None:
    code, err = run_main(["plugins", "sycalls"])
    assert code == 1
    line, hint = err.splitlines()
    assert line.startswith("error: unknown plugin 'sycalls' (did you mean 'syscalls'?); available: ")
    assert hint.startswith("hint: installed plugins are looked up in the Python environment at ")
    assert {"osi_linux", "syscalls", "syscalls_logger"} <= set(line.split("available: ")[1].split(", "))


def test_two_distributions_with_one_name_are_both_listed_and_that_name_is_refused(
    cli: typer.Typer, site: Path, installed: None
) -> None:
    for dist in ("clia", "clib"):
        module = f"cli_dup_{dist}"
        install(site, dist, {"cli_dup": f"{module}:Dup"}, {module: plugin_module("Dup", "cli_dup", f"From {dist}.")})
    lines = listing(cli, WIDE)
    dups = sorted(line for line in lines if line.startswith("cli_dup "))  # the order is the file system's
    assert len(dups) == 2
    assert "entry point clia 1.0" in dups[0] and dups[0].endswith("(duplicate) From clia.")
    assert "entry point clib 1.0" in dups[1] and dups[1].endswith("(duplicate) From clib.")
    assert any(line.startswith("cli_tiny ") for line in lines) and any(line.startswith("syscalls ") for line in lines)
    assert lines[-1].startswith("(duplicate) one name, several plugins")
    records = json.loads(CliRunner().invoke(cli, ["plugins", "--format", "json"]).output)
    assert sorted((r["distribution"], r["duplicate"]) for r in records if r["name"] == "cli_dup") == [
        ("clia 1.0", True),
        ("clib 1.0", True),
    ]
    assert not any(r["duplicate"] for r in records if r["name"] != "cli_dup")
    code, err = run_main(["plugins", "cli_dup"])
    assert code == 1
    first, hint = err.splitlines()
    assert first.startswith("error: two plugins are named 'cli_dup': entry point cli_dup = cli_dup_cli")
    assert "cli_dup = cli_dup_clia:Dup (clia 1.0)" in first and "cli_dup = cli_dup_clib:Dup (clib 1.0)" in first
    assert hint.startswith("hint: uninstall all but one")
    code, err = run_main(["plugins", "cli_tiny"])
    assert code == 0, err


def test_a_plugin_that_cannot_be_imported_keeps_its_line(cli: typer.Typer, site: Path) -> None:
    install(site, "clibroken", {"cli_broken": "cli_no_such_module:X"}, {})
    line = next(line for line in listing(cli, WIDE) if line.startswith("cli_broken "))
    assert "not loadable: cannot import entry point cli_broken" in line and "ModuleNotFoundError" in line


def test_main_prints_one_red_line_for_a_plugin_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["qppsuite", "plugins", "./no/such/plugin.py"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: plugin file ") and err[0].endswith("does not exist")
