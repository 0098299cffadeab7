"""``qppsuite snapshot save|list|delete``: the user's own starting points for runs (``run --from NAME``)."""

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qppsuite.channel import DEFAULT_GUEST_DIR, parse_file_spec
from qppsuite.cli import app, err_console
from qppsuite.cli.image_cmd import CacheOption, human_size
from qppsuite.cli.run_cmd import (
    DiskOption,
    RamOption,
    TimeoutOption,
    command_text,
    ensure_default_image,
    guest_console,
    image_ram_mib,
)
from qppsuite.cli.terminal import SafeConsole, styled
from qppsuite.core import snapshot
from qppsuite.core.snapshot import SnapshotError
from qppsuite.images.bundle import cache_dir, open_image
from qppsuite.session import DEFAULT_IMAGE, RunOptions, save_snapshot, snapshot_path

snapshot_app = typer.Typer(
    help="Save the guest after a command of yours, and start runs there (`qppsuite run --from NAME`).",
    no_args_is_help=True,
)
app.add_typer(snapshot_app, name="snapshot")

console = SafeConsole()
ImageArgument = Annotated[str, typer.Argument(help="Image name (see `qppsuite image list`) or bundle path")]


@snapshot_app.command("save")
def save(
    name: Annotated[str, typer.Argument(help="The snapshot's name: letters, digits, '.', '_', '-'")],
    image: ImageArgument = DEFAULT_IMAGE,
    cmd: Annotated[str | None, typer.Option("--cmd", help="Shell command to run in the guest first")] = None,
    cmd_file: Annotated[Path | None, typer.Option("--cmd-file", help="Shell script to run (instead of --cmd)")] = None,
    files: Annotated[
        list[str] | None,
        typer.Option(
            "--file",
            help=(
                f"HOST[:GUEST] file or directory to put in the guest first "
                f"(default: {DEFAULT_GUEST_DIR}, /root for a directory)"
            ),
        ),
    ] = None,
    start_from: Annotated[
        str | None, typer.Option("--from", metavar="BASE", help="Start from your snapshot BASE, not the booted guest")
    ] = None,
    console_file: Annotated[Path | None, typer.Option("--console", help="Write the guest console to FILE")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not show the console or the summary")] = False,
    ram: RamOption = None,
    bootargs: Annotated[str, typer.Option("--bootargs", help="Extra kernel command-line arguments")] = "",
    guest_decompress: Annotated[
        bool, typer.Option("--guest-decompress", help="Boot a zImage as-is, decompressing in the guest")
    ] = False,
    timeout: TimeoutOption = 3600.0,
    cache: CacheOption = None,
    disk: DiskOption = None,
) -> None:
    """Run the command (and put the files) in the booted guest, then save it as NAME once the command has
    ended with status 0: `qppsuite run --from NAME` starts there, with the same --ram, --bootargs,
    --guest-decompress and --disk (the same file by sha256; what the guest wrote to it is in the snapshot).
    An existing NAME is never overwritten."""
    if image == DEFAULT_IMAGE:
        ensure_default_image(cache)
    options = RunOptions(
        image=image,
        cmd=command_text(cmd, cmd_file),
        files=[item for spec in files or [] for item in parse_file_spec(spec)],
        start_from=start_from,
        ram_mib=ram if ram is not None else image_ram_mib(image, cache),
        cache=cache,
        host_decompress=not guest_decompress,
        extra_bootargs=bootargs,
        timeout_seconds=timeout or None,
        disk=disk,
    )
    with guest_console(console_file, quiet) as stream:
        saved = save_snapshot(name, options, stream)
    if not quiet:
        err_console.print(
            styled(
                ("qppsuite:", "green"),
                f" saved snapshot {name} at instruction {saved.insn_count:,} in {saved.wall_seconds:.2f} s "
                f"({human_size(saved.path.stat().st_size)}): {saved.path}",
            ),
            soft_wrap=True,
        )


@snapshot_app.command("list")
def list_(cache: CacheOption = None) -> None:
    """The snapshots in the cache, of every image: yours and the booted guest's (``ready-...``)."""
    root = cache_dir(cache) / "snapshots"
    paths = sorted(root.glob("*/*.snapshot"))
    if not paths:
        err_console.print(f"no snapshots in {root}; save one with `qppsuite snapshot save NAME --cmd ...`")
        return
    table = Table(title=f"Snapshots in {root}", title_justify="left")
    for column in ("Name", "Image", "RAM", "Instructions", "Size", "Saved"):
        table.add_column(column, justify="right" if column in ("RAM", "Instructions", "Size") else "left")
    for path in paths:
        saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
        try:
            key, count = snapshot.describe(path)
            ram, insns = f"{key.get('ram_mib')} MiB", f"{count:,}"
        except SnapshotError:
            ram, insns = "?", "damaged"
        table.add_row(path.stem, path.parent.name, ram, insns, human_size(path.stat().st_size), saved)
    console.print(table)


@snapshot_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="The snapshot to delete (see `qppsuite snapshot list`)")],
    image: ImageArgument = DEFAULT_IMAGE,
    cache: CacheOption = None,
) -> None:
    """Delete the snapshot NAME of IMAGE."""
    path = snapshot_path(cache, open_image(image, cache=cache), name)
    try:
        path.unlink()
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot '{name}' of image '{image}'", hint="`qppsuite snapshot list`") from None
    except OSError as exc:
        raise SnapshotError(f"cannot delete snapshot {path}: {exc.strerror}") from None
    err_console.print(styled(("qppsuite:", "green"), f" deleted snapshot {name}"))
