"""``qppsuite record`` / ``qppsuite replay``: capture a run once, analyse it many times."""

from pathlib import Path
from typing import Annotated

import typer

from qppsuite.channel import parse_file_spec
from qppsuite.cli import app, err_console
from qppsuite.cli.keyboard import keyboard
from qppsuite.cli.run_cmd import (
    DEFAULT_TIMEOUT,
    MAX_INSNS_HELP,
    CmdFileOption,
    ColdOption,
    ConsoleOption,
    DiskOption,
    FilesOption,
    FromOption,
    InteractiveOption,
    KernelLogOption,
    QuietOption,
    RamOption,
    TimeoutOption,
    check_console,
    command_text,
    guest_console,
    image_ram_mib,
    say_database,
    shown_console,
)
from qppsuite.cli.terminal import channel_progress, styled
from qppsuite.core.qpp import parse_plugin_args, parse_plugin_list
from qppsuite.errors import GuestError, Interrupted, PluginError
from qppsuite.recording import Recording, RecordingError, check_writable, default_path, record, replay
from qppsuite.session import DEFAULT_IMAGE, PLUGIN_FAILURES_HINT, RunOptions


def same_file(a: Path, b: Path) -> bool:
    """Whether the paths name one file (both exist and are it, or they resolve alike)."""
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


@app.command("record")
def record_command(
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Recording file to write (JSON; default: recordings/IMAGE-TIME.json)"),
    ] = None,
    image: Annotated[str, typer.Argument(help="Image name or bundle path")] = DEFAULT_IMAGE,
    cmd: Annotated[str | None, typer.Option("--cmd", help="Shell command to run in the guest")] = None,
    max_insns: Annotated[int | None, typer.Option("--max-insns", min=1, help=MAX_INSNS_HELP)] = None,
    ram: RamOption = None,
    bootargs: Annotated[str, typer.Option("--bootargs", help="Extra kernel command-line arguments")] = "",
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Cache directory")] = None,
    files: FilesOption = None,
    cmd_file: CmdFileOption = None,
    cold: ColdOption = False,
    start_from: FromOption = None,
    interactive: InteractiveOption = False,
    disk: DiskOption = None,
    console: ConsoleOption = None,
    quiet: QuietOption = False,
    kernel_log: KernelLogOption = False,
) -> None:
    """Run IMAGE once without plugins and write a recording that `qppsuite replay` reproduces exactly.

    The input the guest receives (--file, the script, keys with -i) is stamped and stored in it.

    The console shows as `qppsuite run`'s does.
    """
    cmd = command_text(cmd, cmd_file)
    options = RunOptions(
        image=image,
        cmd=cmd,
        files=[item for spec in files or [] for item in parse_file_spec(spec)],
        warm=True,
        cold=cold,
        start_from=start_from,
        interactive=interactive,
        max_insns=max_insns,
        ram_mib=ram if ram is not None else image_ram_mib(image, cache_dir),
        extra_bootargs=bootargs,
        cache=cache_dir,
        timeout_seconds=timeout or None,
        disk=disk,
    )
    check_writable(output or default_path(image))  # before the boot, not after it
    if console is not None and output is not None and same_file(console, output):
        raise RecordingError(f"--console {console} is the recording's file (-o {output}): give another")
    with (
        guest_console(console, quiet, interactive) as stream,
        keyboard(interactive, quiet) as host,
        channel_progress(err_console, quiet) as progress,
        shown_console(stream, to_file=console is not None, cmd=cmd, kernel_log=kernel_log) as (shown, hooks),
    ):
        recording, result = record(options, shown, host, progress, **hooks)
    if result.signal is not None:
        raise Interrupted(f"{result.reason.message}: nothing recorded", result.signal)
    if output is not None:
        recording.save(output)
    else:
        output = recording.save_new(image)
    err_console.print(
        styled(
            ("qppsuite:", "green"),
            f" recorded {recording.insn_count:,} instructions ({recording.stop_kind}) "
            f"in {result.wall_seconds:.2f} s to {output}",
        )
    )
    check_console(stream, console)


@app.command("replay")
def replay_command(
    recording: Annotated[Path, typer.Argument(help="A recording written by `qppsuite record`")],
    plugins: Annotated[list[str] | None, typer.Option("--plugins", help="Plugins to load, comma-separated")] = None,
    plugin_args: Annotated[list[str] | None, typer.Option("-p", "--plugin-arg", help="plugin:key=value")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop when a plugin callback raises")] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Cache directory")] = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    disk: Annotated[
        Path | None,
        typer.Option("--disk", metavar="FILE", help="The recorded disk, where it is now (its sha256 must match)"),
    ] = None,
    console: Annotated[
        Path | None, typer.Option("--console", help="Write the replayed guest console to FILE (as it was recorded)")
    ] = None,
) -> None:
    """Re-execute a recording with plugins attached, and verify it is the recorded execution.

    It stops at the recorded instruction count whatever happens, and at --timeout.
    """
    loaded = Recording.load(recording)
    if console is not None and same_file(console, recording):
        raise RecordingError(f"--console {console} is the recording being replayed: give another file")
    with guest_console(console, quiet=True) as stream:
        result = replay(
            loaded,
            parse_plugin_list(plugins or []),
            parse_plugin_args(plugin_args or []),
            strict=strict,
            cache=cache_dir,
            console=stream,
            timeout_seconds=timeout or None,
            disk=disk,
        )
    say_database(result)
    if result.signal is not None:
        raise Interrupted(result.reason.message, result.signal)
    if result.reason.kind == "timeout":
        raise GuestError(f"timeout: {result.reason.message}, before the replay's end")
    if result.reason.kind == "plugin":
        raise GuestError(f"plugin: {result.reason.message}")
    if result.shutdown_failures:
        raise PluginError(result.shutdown_failures[0], hint="its output may be incomplete; earlier writes are kept")
    if result.plugin_failures and result.ok:
        raise PluginError(result.plugin_failures_line(), hint=PLUGIN_FAILURES_HINT)
    err_console.print(
        styled(
            ("qppsuite:", "green"),
            f" replayed {result.insn_count:,} instructions identically in {result.wall_seconds:.2f} s",
        )
    )
    check_console(stream, console)
